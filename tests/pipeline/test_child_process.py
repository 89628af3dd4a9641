"""Supervised child processes (trainers, torchrun) with real processes: a SIGKILLed child whose descendant holds
its output open, a stalled child, a SIGKILLed or SIGTERMed stage process. Afterwards no process of the run may
survive; they are found by a marker in their environment."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.child_process import ChildFailed, run_supervised
from tests.helpers import REPO, marked_processes, wait_until_gone

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc: Linux")

# A "trainer": starts a long-lived helper (like a DataLoader fork server) that inherits its output, then runs.
TRAINER = textwrap.dedent("""
    import subprocess, sys, time
    from pipeline.child_process import end_session_on_sigterm
    end_session_on_sigterm()
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("helper", helper.pid, flush=True)
    mode = sys.argv[1]
    if mode == "crash":
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "stall":
        print("step 1", flush=True)
        time.sleep(600)
    for step in range(600):
        print("step", step, flush=True)
        time.sleep(0.2)
""")


def trainer(mode: str) -> list[str]:
    return [sys.executable, "-c", TRAINER, mode]


def test_a_killed_child_fails_at_once_and_leaves_nothing_behind(tmp_path, mark):
    started = time.monotonic()
    with pytest.raises(ChildFailed, match="exited with code -9"):
        run_supervised(trainer("crash"), tmp_path / "train.log")
    assert time.monotonic() - started < 60  # the helper holds the output open: waiting on EOF would hang
    assert wait_until_gone(mark) == []
    assert "helper" in (tmp_path / "train.log").read_text()


def test_a_stalled_child_is_killed_by_the_watchdog(tmp_path, mark):
    with pytest.raises(ChildFailed, match="no output for 3 s") as failure:
        run_supervised(trainer("stall"), tmp_path / "train.log", stall_s=3)
    assert "step 1" in failure.value.tail
    assert wait_until_gone(mark) == []


def test_a_child_past_its_time_limit_is_killed(tmp_path, mark):
    with pytest.raises(ChildFailed, match="2 s limit"):
        run_supervised(trainer("run"), tmp_path / "train.log", timeout_s=2)
    assert wait_until_gone(mark) == []


STAGE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pipeline.child_process import run_supervised
    run_supervised([sys.executable, "-c", sys.argv[1], "run"], Path(sys.argv[2]))
""")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_stopping_or_killing_the_stage_process_ends_the_child_and_its_helpers(tmp_path, mark, signum):
    log = tmp_path / "train.log"
    stage = subprocess.Popen([sys.executable, "-c", STAGE, TRAINER, str(log)])
    deadline = time.monotonic() + 60
    while "step 2" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(marked_processes(mark)) == 3  # stage, trainer, helper
    stage.send_signal(signum)
    stage.wait(60)
    assert wait_until_gone(mark) == []


def test_training_goes_on_when_the_stage_process_is_orphaned(tmp_path, mark):
    """`nohup fils run ... &` and the shell exits: the stage process is reparented, and its training must go on
    (only a worker whose starter died stops). The "shell" here starts the stage process and exits at once."""
    stage = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from pipeline.child_process import run_supervised
        run_supervised([sys.executable, "-c", "import time\\nfor i in range(10): print(i, flush=True); time.sleep(0.3)"],
                       Path({str(tmp_path / "train.log")!r}))
        Path({str(tmp_path / "finished")!r}).write_text("ok")
    """)
    log = tmp_path / "train.log"
    shell = (f"import subprocess, sys, time, pathlib\nsubprocess.Popen([sys.executable, '-c', {stage!r}])\n"
             f"while '1' not in pathlib.Path({str(log)!r}).read_text().split() if pathlib.Path({str(log)!r}).exists() "
             "else True:\n    time.sleep(0.05)")  # exits once training is under way
    subprocess.run([sys.executable, "-c", shell], cwd=REPO, check=True)
    assert wait_until_gone(mark, seconds=60) == []
    assert (tmp_path / "finished").is_file(), log.read_text()
    assert "9" in log.read_text().split()
