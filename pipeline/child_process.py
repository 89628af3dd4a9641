"""Run a long child process (a trainer, ``torchrun``) so that it can never outlive or hang its stage.

The child starts a new session, so it and everything it starts (torchrun ranks, DataLoader workers, their fork
server) form one process group that is killed as a whole:

* when the child exits, whatever it left behind in its group is killed (a SIGKILLed trainer leaves a fork server);
* when the stage is stopped (SIGTERM, SIGINT, a unit time-out) or the process running the stage dies (the child
  gets SIGTERM from the kernel, ``PR_SET_PDEATHSIG``), or, where that process is a worker (a pool or task runner
  process), when the process that started the worker dies (the waiting loop sees its parent change);
* when the child makes no progress (its log does not grow) for ``stall_s`` seconds.

The child's output goes straight to its log file, not through a pipe: waiting is on the child's exit, never on
an end-of-file that an inherited descriptor can hold off forever.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

POLL_S = 0.5
TERMINATE_GRACE_S = 20.0
_PR_SET_PDEATHSIG = 1
SESSION_ENV = "FILS_SUPERVISED_SESSION"  # set for the child: it leads a session of its own


class ChildFailed(RuntimeError):
    """The child exited with an error, stalled, ran out of time or was stopped; ``tail`` is its last output."""

    def __init__(self, message: str, tail: str):
        super().__init__(f"{message}; last lines:\n{tail}" if tail else message)
        self.tail = tail


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel for ``signum`` when the parent dies (Linux; elsewhere a no-op). Called in a child, e.g.
    before exec or as a worker pool's initializer."""
    if sys.platform != "linux":
        return
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)


def kill_group(proc: subprocess.Popen, grace_s: float = TERMINATE_GRACE_S) -> None:
    """SIGTERM the process group that ``proc`` leads, then SIGKILL whatever is left after ``grace_s``."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader: a zombie still counts as a member of the group
            os.killpg(proc.pid, 0)  # raises ProcessLookupError once the group is empty
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def _terminate_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception (main thread only) so the child's group is killed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def end_session_on_sigterm() -> None:
    """For the child's entry point: on SIGTERM (the process running the stage died), kill the whole session the
    supervisor started, so no DataLoader worker or fork server is left behind. Only in the session's leader, the
    process ``run_supervised`` started: under ``torchrun`` the ranks keep torchrun's own handling of SIGTERM
    (elastic restarts stop ranks with it)."""
    if os.environ.get(SESSION_ENV) != "1" or os.getpid() != os.getsid(0):
        return

    def end(signum: int, frame: object) -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, end)


_PARENT_WATCH: list[threading.Thread] = []


def stop_when_parent_dies(poll_s: float = 1.0) -> None:
    """For a process that lives for its parent (a flow run started by a Prefect worker): once the parent dies,
    SIGKILL included, SIGKILL ourselves. That is a case every stage survives (a kill -9 of `fils run`): supervised
    children and pool workers die with us, finished units stay, a rerun resumes. Not SIGTERM: the flow engine
    turns it into a graceful shutdown that waits for a running unit, which can be a whole training run. Polls,
    because the kernel's parent-death signal follows the parent *thread* that started us. Idempotent."""
    if _PARENT_WATCH:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)  # no log first: its handlers write to the dead parent's pipe

    _PARENT_WATCH.append(threading.Thread(target=watch, name="parent-watch", daemon=True))
    _PARENT_WATCH[0].start()


def worker_dies_with_parent() -> None:
    """Initializer of a multiprocessing worker: SIGKILL when the process that started it dies, including when it
    died while this worker was still starting (the kernel signal only covers a death after the request)."""
    die_with_parent(signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os.kill(os.getpid(), signal.SIGKILL)


class _LogTail:
    """Follows the child's log file: forwards new lines to our log, keeps the last ones for error messages."""

    def __init__(self, path: Path, keep: int = 25):
        self.path = path
        self.offset = path.stat().st_size
        self.lines: deque[str] = deque(maxlen=keep)
        self.partial = ""

    def poll(self) -> bool:
        """Read what was appended; True when the file grew."""
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        if not data:
            return False
        self.offset += len(data)
        *complete, self.partial = (self.partial + data.decode(errors="replace")).split("\n")
        for line in complete:
            self.lines.append(line)
            log.info("%s", line)
        return True

    def text(self) -> str:
        return "\n".join([*self.lines, self.partial]).strip("\n")


def run_supervised(cmd: list[str], log_path: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None,
                   stall_s: float | None = None, timeout_s: float | None = None) -> None:
    """Run ``cmd`` to completion with its output appended to ``log_path``; raise ``ChildFailed`` unless it
    exits with 0. See the module docstring for when the child's process group is killed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as sink:
        sink.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
        sink.flush()
        tail = _LogTail(log_path)
        with _terminate_raises():
            child_env = dict(os.environ if env is None else env) | {SESSION_ENV: "1"}
            proc = subprocess.Popen(cmd, cwd=cwd, env=child_env, stdin=subprocess.DEVNULL, stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with_parent)
            try:
                code = _wait(proc, tail, stall_s, timeout_s)
            finally:
                kill_group(proc, grace_s=0 if proc.poll() is not None else TERMINATE_GRACE_S)
                proc.wait()
                tail.poll()
    if code != 0:
        raise ChildFailed(f"{cmd[0]} exited with code {code} (full log: {log_path})", tail.text())


def _wait(proc: subprocess.Popen, tail: _LogTail, stall_s: float | None, timeout_s: float | None) -> int:
    # Only a worker's parent matters: a `fils run` started with nohup is reparented when its shell exits and
    # must go on training.
    parent = os.getppid() if multiprocessing.parent_process() is not None else None
    started = last_progress = time.monotonic()
    while (code := proc.poll()) is None:
        time.sleep(POLL_S)
        now = time.monotonic()
        if tail.poll():
            last_progress = now
        if parent is not None and os.getppid() != parent:
            raise ChildFailed("the worker running this stage lost its parent; training stopped", tail.text())
        if stall_s is not None and now - last_progress > stall_s:
            raise ChildFailed(f"no output for {stall_s:.0f} s: the child looks stuck and was killed (raise "
                              f"launch.stall_timeout_s if a step really takes this long)", tail.text())
        if timeout_s is not None and now - started > timeout_s:
            raise ChildFailed(f"ran past its {timeout_s:.0f} s limit (launch.timeout_s) and was killed", tail.text())
    return code
