"""The Prefect server dies while a stage's units run: the stage still commits, the flow exits with a message
that says what was committed, and a rerun once the server is back skips it. A server of its own (it is killed)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stages.captions.stage
from flows.local_server import start_server
from pipeline.artifacts import ArtifactStore
from tests.helpers import REPO

UNIT_SECONDS = 6.0
STARTED = "captions-unit-started"


def _slow_captions(ctx, unit, out_dir):
    """The captions unit, made long enough for the server to die while it runs (importable by pool workers)."""
    (Path(ctx.workdir) / STARTED).touch()
    time.sleep(UNIT_SECONDS)
    return stages.captions.stage.process_shard(ctx, unit, out_dir)


def run_flow_with_slow_captions(workdir: str, samples: str) -> None:
    """Entry of the flow process: `fils` over shard + captions, as a deployment would run it."""
    from dataclasses import replace

    from flows.fils_flow import fils

    stages.captions.stage.SPEC = replace(stages.captions.stage.SPEC, process=_slow_captions)
    overrides = [f"workdir={workdir}", f"data.source.root={samples}", f"data.source.annotations={samples}/samples.csv",
                 "shard.short_side=64", "captions.source=narration"]
    print("ACTIONS", fils(config_path="configs/demo.yaml", stages=["shard", "captions"], overrides=overrides),
          flush=True)


def _start_flow(server, workdir: Path, samples: Path, log: Path) -> subprocess.Popen:
    code = f"import tests.flows.test_prefect_outage as t; t.run_flow_with_slow_captions({str(workdir)!r}, {str(samples)!r})"
    env = server.env | {"PYTHONPATH": str(REPO),
                        "PREFECT_CLIENT_MAX_RETRIES": "1"}  # the default (5, with backoff) only makes it slower
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


@pytest.mark.skipif(sys.platform != "linux", reason="kills the server's process group")
def test_server_outage_mid_stage_commits_and_a_rerun_skips(tmp_path, samples_dir):
    home, workdir = tmp_path / "prefect-home", tmp_path / "work"
    server = start_server(home)
    port = int(server.api_url.rsplit(":", 1)[1].split("/")[0])
    try:
        flow = _start_flow(server, workdir, samples_dir, tmp_path / "flow.log")
        deadline = time.monotonic() + 300
        while not (workdir / STARTED).exists() and time.monotonic() < deadline:
            assert flow.poll() is None, (tmp_path / "flow.log").read_text()
            time.sleep(0.2)
        os.killpg(server.server.pid, signal.SIGKILL)  # the captions unit is still sleeping
        server.server.wait()
        flow.wait(timeout=600)
        log = (tmp_path / "flow.log").read_text()
        assert flow.returncode != 0, log  # the flow run's end could not be recorded ...
        assert "its work is done: {'shard': 'ran', 'captions': 'ran'}" in log, log
        store = ArtifactStore(workdir)
        for stage in ("shard", "captions"):  # ... but both stages committed, intact
            record = store.success(stage)
            assert record is not None and store.verify(stage, record, checksums=True) == [], log

        server = start_server(home, port)  # the same database, back up
        flow = _start_flow(server, workdir, samples_dir, tmp_path / "rerun.log")
        flow.wait(timeout=600)
        rerun = (tmp_path / "rerun.log").read_text()
        assert flow.returncode == 0, rerun
        assert "ACTIONS {'shard': 'skipped', 'captions': 'skipped'}" in rerun, rerun
    finally:
        server.stop()
