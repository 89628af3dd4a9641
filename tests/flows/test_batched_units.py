"""A dataset of 1,000 tiny videos (one of them undecodable) through the shard stage as a Prefect flow: a bounded
number of task runs, a flow run killed with SIGKILL in the middle of its batches redoes only the videos it had not
finished, and the outputs are byte-identical to the unbatched units of a CLI run."""
from __future__ import annotations

import asyncio
import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.settings import PREFECT_API_URL

from flows.fils_flow import fils
from pipeline.artifacts import SUCCESS_FILE, SuccessRecord
from pipeline.batching import BATCHES_PER_WORKER
from tests.builders.videos import gradient_frames, write_video
from tests.helpers import REPO, wait_until_gone

pytestmark = pytest.mark.usefixtures("prefect_backend")

VIDEOS = 1000
BROKEN = "videos/v0500.mp4"  # in the middle of a batch
WORKERS = 2


def _write_dataset(root: Path) -> Path:
    """1,000 labelled 4-frame videos of 32x24 px (copies of one encoding) and one file that is no video."""
    (root / "videos").mkdir(parents=True)
    template = write_video(root / "template.mp4", gradient_frames(4, 32, 24))
    rows = []
    for i in range(VIDEOS):
        path = f"videos/v{i:04d}.mp4"
        if path == BROKEN:
            (root / path).write_bytes(os.urandom(3000))
        else:
            shutil.copyfile(template, root / path)
        rows.append({"path": path, "label": str(i % 5), "split": "train" if i % 10 else "val"})
    template.unlink()
    with open(root / "samples.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def _overrides(workdir: Path, samples: Path) -> list[str]:
    return [f"workdir={workdir}", "data.source.kind=csv", f"data.source.root={samples}",
            f"data.source.annotations={samples / 'samples.csv'}", f"runtime.workers={WORKERS}",
            "runtime.progress=false", "shard.short_side=24"]


def _digests(workdir: Path) -> dict[str, str]:
    return {str(p.relative_to(workdir / "shard")): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((workdir / "shard").rglob("*")) if p.is_file() and p.name != SUCCESS_FILE}


def _sealed_units(workdir: Path) -> int:
    return sum(1 for d in (workdir / ".staging" / "shard").glob("*/units/*") if not d.name.startswith("."))


async def _task_run_names(flow_run_id) -> list[str]:
    """The task runs of a flow run and of all its subflow runs (a subflow call is a task run of its parent too)."""
    async with get_client() as client:
        runs, frontier = [flow_run_id], [flow_run_id]
        while frontier:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
            frontier = [child.id for child in children]
            runs += frontier
        tasks = await client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=runs)))
        return [task.name for task in tasks]


def test_a_thousand_videos_are_a_few_task_runs_and_a_killed_run_redoes_only_unfinished_videos(
        tmp_path, mark):
    samples = _write_dataset(tmp_path / "samples")
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "stages.cli", "run", "-c", "configs/demo.yaml", "--stages", "shard",
                    *(arg for override in _overrides(reference, samples) for arg in ("--set", override))],
                   cwd=REPO, check=True, capture_output=True)

    workdir = tmp_path / "batched"
    killed = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom flows.fils_flow import fils\n"
         "fils(config_path='configs/demo.yaml', stages=['shard'], overrides=sys.argv[1:])",
         *_overrides(workdir, samples)],
        cwd=REPO, env=os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()},
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "killed.log", "w"))
    deadline = time.monotonic() + 300
    while _sealed_units(workdir) < VIDEOS // 3 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    survivors = wait_until_gone(mark)
    assert survivors == [], [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in survivors]
    sealed = _sealed_units(workdir)
    assert VIDEOS // 3 <= sealed < VIDEOS, (tmp_path / "killed.log").read_text()[-3000:]

    state = fils(config_path="configs/demo.yaml", stages=["shard"], overrides=_overrides(workdir, samples),
                 return_state=True)
    assert state.is_completed(), state.message
    record = SuccessRecord.model_validate_json((workdir / "shard" / SUCCESS_FILE).read_text())
    assert record.timings["units"] == VIDEOS and record.timings["units_run"] == VIDEOS - sealed

    names = asyncio.run(_task_run_names(state.state_details.flow_run_id))
    batches = [name for name in names if name.startswith("shard:batch-")]
    assert len(batches) == min(VIDEOS - sealed, BATCHES_PER_WORKER * WORKERS), names
    assert sorted(set(names) - set(batches)) == ["shard-units-0", "stage-shard-0"]  # the subflows' task runs

    assert _digests(workdir) == _digests(reference)
    rejects = pq.read_table(workdir / "shard" / "rejects.parquet").to_pylist()
    assert [r["source_path"] for r in rejects] == [BROKEN]
    assert record.row_counts["clips"] == VIDEOS - 1
