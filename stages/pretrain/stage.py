"""The `pretrain` stage: FILS pre-training on the shards, with the action boxes of `optical_flow` and the
caption embeddings of `captions`; exports the student encoder in HF VideoMAE layout.

The whole training run is one unit. Its run directory (checkpoints, logs, loader positions) lives in the
stage's staging area for the current fingerprint, which survives a killed attempt, so rerunning resumes from
the last checkpoint. Training always runs in a child process: ``python -m stages.pretrain.stage --job JOB.json``
(one CPU process) or ``python -m torch.distributed.run ... -m stages.pretrain.stage --job JOB.json`` (several
processes or GPUs), supervised so that it never outlives or hangs the stage (``pipeline.child_process``); its
output goes to ``train.log`` and to the log.

Outputs: ``encoder/`` (``model.safetensors`` + ``config.json``, loads into ``transformers.VideoMAEModel``),
``checkpoint.pt`` (final training state), ``checkpoints/step_*.pt`` (every checkpoint the trainer kept,
``pretrain.trainer.keep_every``: hard links, no copies; the nightly sweep evaluates them), ``metrics.csv``,
``tensorboard/``, ``train.log``,
``pretrain_config.json`` (the resolved trainer config, epochs turned into steps), ``loss_floors.json`` (each
active loss term's value at no learning, ``fils_model.loss_floors``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from fils_model.checkpoint import CheckpointManager
from fils_model.config import COMPUTE_ONLY_SETTINGS, PretrainConfig
from fils_model.distributed import DistEnv
from fils_model.loss_floors import LOSS_FLOORS_JSON
from pipeline.artifacts import UNIT_FILE
from pipeline.child_process import ChildFailed, end_session_on_sigterm
from pipeline.clips.batches import STREAM_SKIP_REASONS, ClipBatches, check_shard_count, read_counts
from pipeline.clips.config import LoaderConfig
from pipeline.clips.stream import Layout, check_repeated_views
from pipeline.fingerprint import without_runtime_only
from pipeline.launch import gpus_of, nproc_of, run_training
from pipeline.runner import StageError
from pipeline.shards import shard_paths
from pipeline.stage import StageContext, StageResult, StageSpec, Unit
from stages.captions.tables import text_encoder_id
from stages.config import FilsConfig
from stages.pretrain.config import PretrainDataConfig, PretrainSection
from stages.pretrain.samples import PretrainRecipe, pretrain_stream
from stages.pretrain.side_tables import ClipTables, load_tables
from stages.shard.tables import read_clips

log = logging.getLogger("fils.pretrain")

UNIT_ID = "train"
JOB_FILE = "job.json"
LOG_FILE = "train.log"
ENTRY = "stages.pretrain.stage"  # the training process: ``main`` below
ENCODER_DIR = "encoder"  # the VideoMAE-layout export of the last checkpoint
METRICS_CSV = "metrics.csv"  # one row per logged step: the loss terms
# How the run is computed, not what it computes: the loader's processes, the launch, and the model's own
# compute-only settings (activation recompute; compilation, the same up to floating-point reordering).
RUNTIME_ONLY = ("pretrain.loader", "pretrain.launch", *(f"pretrain.{name}" for name in COMPUTE_ONLY_SETTINGS))


SKIP_REASONS = STREAM_SKIP_REASONS + PretrainRecipe.skip_reasons  # what `skipped_samples` counts


class PretrainJob(BaseModel):
    """Everything one training process needs, written as JSON by the stage for ``--job``."""

    model_config = ConfigDict(extra="forbid")
    train: PretrainConfig
    data: PretrainDataConfig
    loader: LoaderConfig
    shards: list[str]
    optical_flow_dir: Path  # committed upstream outputs, read through their stages' readers
    captions_dir: Path
    run_dir: Path
    num_clips: int  # usable clips of the split (what an epoch means)
    max_steps_per_attempt: int | None = None
    threads: int = 0


def _section(cfg: FilsConfig) -> PretrainSection:
    if cfg.pretrain is None:
        raise StageError("the config has no `pretrain:` section; add one (see configs/pretrain_ek100_vitb.yaml "
                         "or the tiny one in configs/demo.yaml)")
    return cfg.pretrain


def _config_of(cfg: FilsConfig) -> dict[str, Any]:
    if cfg.pretrain is None:
        return {"pretrain": None}
    return {"pretrain": without_runtime_only(cfg.pretrain.model_dump(mode="json"), RUNTIME_ONLY, "pretrain")}


def pretrained_encoder(pretrain_dir: Path) -> Path:
    """The committed encoder (VideoMAE layout) in the output folder ``pretrain_dir`` of this stage."""
    return pretrain_dir / ENCODER_DIR


def training_loss_floors(pretrain_dir: Path) -> dict[str, float]:
    """Loss name -> its trivial floor (``fils_model.loss_floors``) for this stage's output ``pretrain_dir``; empty
    for an output committed before the floors were recorded."""
    path = pretrain_dir / LOSS_FLOORS_JSON
    return json.loads(path.read_text()) if path.is_file() else {}


def training_metrics(pretrain_dir: Path) -> Path | None:
    """The committed loss log (CSV) of this stage's output ``pretrain_dir``; None when the run kept none."""
    path = pretrain_dir / METRICS_CSV
    return path if path.is_file() else None


def _no_unit_limit(cfg: FilsConfig) -> None:
    """The training child enforces pretrain.launch.timeout_s itself, under every task runner."""


def _plan(ctx: StageContext) -> list[Unit]:
    _section(ctx.cfg)
    return [Unit(UNIT_ID)]


def run_dir_of(ctx: StageContext) -> Path:
    """Stable across attempts of one fingerprint (the staging root), unlike the unit's out_dir."""
    return ctx.units_dir.parent / "run"


def usable_clips(ctx: StageContext, tables: ClipTables, data: PretrainDataConfig) -> int:
    """Usable clips of the split: with a caption embedding, and a box when boxes are required."""
    clips = read_clips(ctx.upstream_dir("shard"), columns=["key", "split"]).to_pylist()
    count = 0
    for row in clips:
        if row["split"] != data.split:
            continue
        usable = tables.embedding(row["key"]) is not None
        if data.missing_action_area == "skip":
            usable = usable and tables.box(row["key"]) is not None
        count += usable
    return count


def _check_streams(shards: list[Path], num_clips: int, world_size: int, workers: int, split: str) -> None:
    check_shard_count(len(shards), world_size, workers, split, "pretrain")
    if not num_clips:
        raise StageError(f"pretrain: no clip of split {split!r} has a caption embedding (and action box, if "
                         "required); fix the captions stage or pretrain.data.split")


def build_job(ctx: StageContext) -> PretrainJob:
    """Resolve the run (epochs -> steps from the usable clips) and check it can be fed, before launching."""
    section = _section(ctx.cfg)
    data = section.data
    shards = shard_paths(ctx.upstream_dir("shard"), data.split)
    if not shards:
        raise StageError(f"pretrain: no shards of split {data.split!r} in {ctx.upstream_dir('shard')}; "
                         "set pretrain.data.split to a split the shard stage produced")
    optical_flow_dir, captions_dir = ctx.upstream_dir("optical_flow"), ctx.upstream_dir("captions")
    tables = load_tables(optical_flow_dir, captions_dir)
    if tables.text_dim != section.model.text_dim:
        raise StageError(f"pretrain: caption embeddings are {tables.text_dim}-d but pretrain.model.text_dim is "
                         f"{section.model.text_dim}; set pretrain.model.text_dim: {tables.text_dim}")
    num_clips = usable_clips(ctx, tables, data)
    nproc = nproc_of(section.launch)
    _check_streams(shards, num_clips, nproc, section.loader.workers, data.split)
    try:
        check_repeated_views(section.trainer.global_batch_size // nproc, data.repeated_views,
                             "pretrain.data.repeated_views")
    except ValueError as exc:
        raise StageError(f"pretrain ({nproc} rank(s)): {exc}") from None
    try:
        train = section.resolve(num_clips)
    except ValueError as exc:
        raise StageError(f"pretrain: {num_clips} usable clips give an invalid schedule: {exc}") from None
    return PretrainJob(train=train, data=data, loader=section.loader, shards=[str(p) for p in shards],
                       optical_flow_dir=optical_flow_dir, captions_dir=captions_dir, run_dir=run_dir_of(ctx), num_clips=num_clips,
                       max_steps_per_attempt=section.launch.max_steps_per_attempt, threads=section.launch.threads)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (same file system: no copy of multi-GB checkpoints), else copy."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link)
    else:
        link(str(src), str(dst))


def train(ctx: StageContext, unit: Unit, out_dir: Path) -> dict[str, Any]:
    """Run (or resume) training to the end, then export; stops with an error after max_steps_per_attempt."""
    section = _section(ctx.cfg)
    job = build_job(ctx)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    job_path = job.run_dir / JOB_FILE
    job_path.write_text(job.model_dump_json(indent=2))
    try:
        run_training(ENTRY, job_path, job.run_dir / LOG_FILE, section.launch)
    except ChildFailed as exc:
        raise StageError(f"training failed: {exc}") from None

    total = job.train.trainer.total_steps
    checkpoints = CheckpointManager(job.run_dir / "checkpoints", 1, 1)
    latest = checkpoints.latest()
    step = int(latest.stem.removeprefix("step_")) if latest else 0
    if step < total:
        raise StageError(f"pretrain stopped at step {step} of {total} (pretrain.launch.max_steps_per_attempt="
                         f"{section.launch.max_steps_per_attempt}); run the stage again to continue")
    from fils_model.export import export_checkpoint  # imports transformers: only when there is something to export

    export_checkpoint(latest, out_dir / ENCODER_DIR, language={"text_encoder_id": text_encoder_id(job.captions_dir)})
    _link_tree(latest, out_dir / "checkpoint.pt")
    (out_dir / "checkpoints").mkdir()
    for kept in checkpoints.saved():  # the commit deletes the staging: the kept checkpoints go with the output
        _link_tree(kept, out_dir / "checkpoints" / kept.name)
    for name in (METRICS_CSV, LOSS_FLOORS_JSON, "tensorboard", LOG_FILE):
        if (job.run_dir / name).exists():
            _link_tree(job.run_dir / name, out_dir / name)
    (out_dir / "pretrain_config.json").write_text(job.train.model_dump_json(indent=2))
    return {"steps": total, "clips": job.num_clips, "sample_counts": read_counts(job.run_dir / "data")}


def _finalize(ctx: StageContext, units: list[Unit]) -> StageResult:
    unit_dir = ctx.unit_dir(UNIT_ID)
    for item in unit_dir.iterdir():
        if item.name != UNIT_FILE:
            _link_tree(item, ctx.output_dir / item.name)
    summary = json.loads((unit_dir / UNIT_FILE).read_text())
    counts = summary["sample_counts"]
    return StageResult(row_counts={"steps": summary["steps"], "clips": summary["clips"],
                                   "skipped_samples": sum(counts.get(k, 0) for k in SKIP_REASONS)},
                       extra={"sample_counts": counts})


def _gpus_held(cfg: FilsConfig) -> int:
    return gpus_of(cfg.pretrain.launch)


SPEC = StageSpec(name="pretrain", version="4", upstream=("shard", "optical_flow", "captions"), config_of=_config_of,
                 plan=_plan, process=train, finalize=_finalize, unit_timeout_s=_no_unit_limit,
                 log_files=(METRICS_CSV, LOG_FILE, "tensorboard/*"),  # wall-clock throughput and times
                 sections=("pretrain",), runtime_only=RUNTIME_ONLY, gpus_held=_gpus_held)


# -- the training process ------------------------------------------------------------------------------------
def make_batches(job: PretrainJob, start: int, env: DistEnv) -> ClipBatches:
    """This rank's batches from ``start`` to the end of training or of this attempt."""
    check_shard_count(len(job.shards), env.world_size, job.loader.workers, job.data.split, "pretrain")
    trainer = job.train.trainer
    settings = pretrain_stream(tuple(job.shards), job.data, job.train.model,
                               load_tables(job.optical_flow_dir, job.captions_dir),
                               trainer.global_batch_size // env.world_size, trainer.checkpoint_every,
                               job.loader.decode_timeout_s)
    end = trainer.total_steps if job.max_steps_per_attempt is None else min(trainer.total_steps,
                                                                           start + job.max_steps_per_attempt)
    layout = Layout(env.rank, env.world_size, max(1, job.loader.workers))
    return ClipBatches(settings, layout, start, end, job.loader, job.run_dir / "data", trainer.log_every)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="FILS pre-training process (started by the pretrain stage, "
                                     "directly or under torch.distributed.run)")
    parser.add_argument("--job", type=Path, required=True, help=f"the {JOB_FILE} the stage wrote")
    args = parser.parse_args(argv)
    end_session_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = PretrainJob.model_validate_json(args.job.read_text())
    import torch

    from fils_model.pretrain_trainer import run_pretraining

    if job.threads:
        torch.set_num_threads(job.threads)
    metrics = run_pretraining(job.train, job.run_dir, partial(make_batches, job))
    if metrics:
        log.info("last step: %s", ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    main()
