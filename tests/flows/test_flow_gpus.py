"""Two flow runs, started together in processes of their own, each captioning with VideoBLIP on two (simulated)
GPUs, against a real Prefect server whose global concurrency limit has two GPU slots: one waits for the other, so
their GPU work never overlaps (the units are made to last: with `runtime.gpu_slots=null` the same two runs
overlapped when this test was written), and each unit worker of the thread runner is pinned to one GPU."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.settings import PREFECT_API_URL

from pipeline.runner import run_pipeline
from stages import registry
from tests.builders.videoblip import save_random_checkpoint
from tests.helpers import REPO, make_config

pytestmark = pytest.mark.usefixtures("prefect_backend")

LIMIT = "fils-gpu-test"
TIMES_FILE = "unit-times.jsonl"
UNIT_S = 3.0


def _timed_captions(ctx, unit, out_dir):
    """The captions stage's unit, made to last (so that unsynchronised runs would overlap), with its start and end
    written down (runs in the pinned workers)."""
    from stages.captions import stage as captions_stage

    start = time.time()
    summary = captions_stage.process_shard(ctx, unit, out_dir)
    time.sleep(UNIT_S)
    with open(Path(os.environ["FILS_TEST_TIMES"]), "a") as fh:
        fh.write(json.dumps({"run": ctx.workdir.name, "start": start, "end": time.time(), "pid": os.getpid(),
                             "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")
    return summary


def main(overrides: list[str]) -> None:
    """One flow run of the captions stage with the timed unit (the entry of the test's subprocesses)."""
    from flows.fils_flow import fils
    from stages.captions import stage as captions_stage

    captions_stage.SPEC = dataclasses.replace(captions_stage.SPEC, process=_timed_captions)
    fils(config_path="configs/demo.yaml", stages=["captions"], overrides=overrides)


async def _create_limit(slots: int) -> None:
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=LIMIT, limit=slots))


def test_two_flow_runs_needing_two_gpus_each_take_turns_on_two_slots(tmp_path, samples_dir):
    asyncio.run(_create_limit(2))
    checkpoint = save_random_checkpoint(tmp_path / "videoblip", "tiny", seed=4)
    shards = tmp_path / "shards"
    run_pipeline(registry(), make_config(shards, samples_dir, ["shard.min_shards=4", "shard.short_side=64"]),
                 ["shard"])
    times = tmp_path / TIMES_FILE
    runs = []
    for name in ("run_a", "run_b"):
        shutil.copytree(shards / "shard", tmp_path / name / "shard")
        overrides = [f"workdir={tmp_path / name}", f"data.source.root={samples_dir}",
                     f"data.source.annotations={samples_dir / 'samples.csv'}", "shard.min_shards=4",
                     "shard.short_side=64", "shard.window_s=3.0", "shard.target_shard_mb=64",
                     "captions.source=videoblip", f"captions.model={checkpoint}", "captions.num_frames=2",
                     "captions.image_size=32", "captions.generation.max_new_tokens=3", "captions.quality.gate=never",
                     "runtime.gpus=[0,1]", f"runtime.gpu_slots={LIMIT}", "runtime.progress=false"]
        runs.append(subprocess.Popen(
            [sys.executable, "-c", "import sys\nfrom tests.flows.test_flow_gpus import main\nmain(sys.argv[1:])",
             *overrides], cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "w"),
            env=os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO), "PREFECT_LOGGING_LEVEL": "INFO",
                              "FILS_TEST_TIMES": str(times)}))
    for name, run in zip(("run_a", "run_b"), runs):
        assert run.wait(600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    units = [json.loads(line) for line in times.read_text().splitlines()]
    spans = {name: (min(u["start"] for u in units if u["run"] == name), max(u["end"] for u in units if u["run"] == name))
             for name in ("run_a", "run_b")}
    assert {u["gpu"] for u in units} == {"0", "1"}  # the thread runner's pinned workers
    assert all(len({u["gpu"] for u in units if u["pid"] == pid}) == 1 for pid in {u["pid"] for u in units})
    first, second = sorted(spans.values())
    assert first[1] <= second[0], f"the runs' GPU work overlapped: {spans}"
    logs = "".join((tmp_path / f"{name}.log").read_text() for name in ("run_a", "run_b"))
    assert logs.count("holding 2 GPU slot(s)") == 2


def _report_device(ctx, unit, out_dir):
    return {"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}


def test_a_batch_of_the_process_and_dask_runners_runs_in_a_worker_pinned_to_a_claimed_gpu(tmp_path, samples_dir):
    """What a batch task does in a process/Dask worker (no shared pool there): it claims a free GPU slot of the
    node and its units run in one spawned process that sees only that GPU."""
    from flows.fils_flow import run_batch
    from pipeline.artifacts import UNIT_FILE
    from pipeline.batching import Batch
    from pipeline.stage import StageContext, Unit

    cfg = make_config(tmp_path, samples_dir)
    ctx = StageContext(cfg=cfg, stage="probe", workdir=tmp_path, upstream={}, output_dir=tmp_path / "out",
                       units_dir=tmp_path / "units")
    batch = Batch("00000", tuple(Unit(f"u{i}") for i in range(3)))
    assert run_batch.fn("probe", _report_device, ctx, batch, 60.0, gpus=["3"], per_gpu=1) == {}
    seen = [json.loads((ctx.units_dir / f"u{i}" / UNIT_FILE).read_text()) for i in range(3)]
    assert {s["gpu"] for s in seen} == {"3"} and len({s["pid"] for s in seen}) == 1 and seen[0]["pid"] != os.getpid()


def test_dask_places_gpu_batches_on_the_workers_that_own_a_gpu(tmp_path, samples_dir):
    """With ``runtime.dask_gpu_resource``, every batch asks Dask for one GPU: all run on the one worker that has it,
    under that worker's own device (a dask-cuda worker's CUDA_VISIBLE_DEVICES), never pinned over by the flow."""
    import dask
    from distributed import Nanny, Scheduler, SpecCluster
    from prefect import flow

    from flows.fils_flow import fan_out_units
    from pipeline.artifacts import UNIT_FILE, ArtifactStore
    from pipeline.runner import prepare_stage
    from pipeline.stage import StageResult, StageSpec, Unit

    env = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False", "PYTHONPATH": str(REPO)}
    workers = {"gpu": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1},
                                                 "env": env | {"CUDA_VISIBLE_DEVICES": "7"}}},
               "cpu": {"cls": Nanny, "options": {"nthreads": 1, "env": env}}}
    spec = StageSpec(name="probe", version="1", upstream=(), config_of=lambda cfg: {},
                     plan=lambda ctx: [Unit(f"u{i}") for i in range(4)], process=_report_device,
                     finalize=lambda ctx, units: StageResult({}), units_on_gpu=lambda cfg: True)
    with dask.config.set({"distributed.worker.daemon": False}), SpecCluster(
            workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}) as cluster:
        cfg = make_config(tmp_path, samples_dir, ["runtime.task_runner=dask", "runtime.gpus=[0,1]",
                                                  f"runtime.dask_address={cluster.scheduler_address}",
                                                  "runtime.dask_gpu_resource=GPU"])
        prepared = prepare_stage(spec, cfg, ArtifactStore(tmp_path))
        assert flow(name="probe")(lambda: fan_out_units(prepared))() == {}
    seen = [json.loads((prepared.ctx.units_dir / f"u{i}" / UNIT_FILE).read_text()) for i in range(4)]
    assert {s["gpu"] for s in seen} == {"7"}
