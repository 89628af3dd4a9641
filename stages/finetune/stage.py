"""The `finetune` stage: a classifier (encoder + mean pool + LayerNorm + linear heads) trained on the labelled
clips of the shard stage, starting from the pretrain stage's encoder, any VideoMAE-layout checkpoint, or random
weights. ``mode: full`` fine-tunes everything (DDP through ``torch.distributed.run`` when there are several
processes); ``mode: linear_probe`` trains the head on frozen, cached features.

Output: ``<workdir>/finetune/classifier/`` (``model.safetensors`` + ``classifier.json``) and ``metrics.csv``;
``classifier_ema/`` with ``model_ema``; ``classifier_random_init/`` with ``random_init_baseline`` (the same recipe
from random weights of the encoder's architecture: the evaluate stage's reference).
One unit of work is the whole run; its checkpoints live in the staging folder, so a killed run resumes.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from fils_model.classifier import VideoClassifier, save_classifier
from fils_model.config import ModelConfig
from fils_model.distributed import cleanup, init_distributed
from fils_model.encoder_init import load_pretrained_encoder
from fils_model.finetune_config import FinetuneRecipe
from fils_model.finetune_trainer import FinetuneTrainer
from fils_model.linear_probe import extract_features, train_probe
from fils_model.seeding import seed_everything
from fils_model.weights import weights_file, weights_fingerprint
from pipeline.artifacts import UNIT_FILE
from pipeline.child_process import ChildFailed, end_session_on_sigterm
from pipeline.clips.batches import ClipBatches, check_shard_count
from pipeline.clips.stream import Layout, StreamSettings
from pipeline.fingerprint import file_identity, without_runtime_only
from pipeline.launch import gpus_of, nproc_of, run_training
from pipeline.runner import StageError
from pipeline.shards import iter_shard, shard_paths
from pipeline.stage import StageContext, StageResult, StageSpec, Unit
from pipeline.video.clip_config import ViewsConfig
from stages.config import FilsConfig
from stages.finetune.config import FinetuneSection
from stages.finetune.data import LabelRecipe, action_map, labelled_count, view_batches
from stages.pretrain.stage import pretrained_encoder

log = logging.getLogger("fils.finetune")

CLASSIFIER_DIR = "classifier"
EMA_CLASSIFIER_DIR = "classifier_ema"  # the model EMA, when finetune.model_ema: a second result
RANDOM_INIT_CLASSIFIER_DIR = "classifier_random_init"  # the same recipe from random weights, when random_init_baseline
METRICS_CSV = "metrics.csv"
LOG_FILE = "train.log"  # the training process's output, in the run directory
JOB_FILE = "job.json"
ENTRY = "stages.finetune.stage"  # the training process: ``main`` below
# Loader and launch settings, and the batch of the probe's feature pass, do not change the classifier.
RUNTIME_ONLY = ("finetune.loader", "finetune.launch", "finetune.data.feature_batch_size")


class FinetuneJob(BaseModel):
    """Everything one training process needs, written as JSON by the stage for ``--job``."""

    model_config = ConfigDict(extra="forbid")
    config: FilsConfig
    recipe: FinetuneRecipe  # the section resolved for the training split (epochs -> steps)
    run_dir: Path
    out_dir: Path
    random_architecture: ModelConfig | None = None  # train from random weights of this architecture (the baseline)


def section_of(cfg: FilsConfig) -> FinetuneSection:
    if cfg.finetune is None:
        raise StageError("the finetune stage needs a `finetune:` section; start from configs/finetune_*.yaml")
    return cfg.finetune


def starts_from_pretrain(cfg: FilsConfig) -> bool:
    """Whether the classifier starts from the pretrain stage's encoder (``finetune.init: upstream``)."""
    return section_of(cfg).init == "upstream"


def _needs(cfg: FilsConfig) -> dict[str, str]:
    if not starts_from_pretrain(cfg):
        return {"shard": ""}
    return {"shard": "", "pretrain": "finetune.init is 'upstream'; or set finetune.init to a VideoMAE checkpoint "
                                    "folder/file or to 'random'"}


def encoder_source(cfg: FilsConfig) -> Path | None:
    """The checkpoint ``finetune.init`` names (None: random weights); a clear error when it is missing. The
    pretrain stage's encoder is read only when declared upstream (``_needs``), so the runner has checked that it
    is committed."""
    init = section_of(cfg).init
    if init == "random":
        return None
    if init == "upstream":
        return pretrained_encoder(cfg.workdir / "pretrain")
    path = Path(init).expanduser()
    if not weights_file(path).is_file():
        raise StageError(f"finetune.init: checkpoint {weights_file(path)} not found; give a VideoMAE-layout folder "
                         "(model.safetensors + config.json), a weights file or a pretrain .pt, 'upstream' or 'random'")
    return path


def _init_identity(cfg: FilsConfig) -> Any:
    """The encoder's identity; the pretrain stage's enters the fingerprint as an upstream output."""
    init = section_of(cfg).init
    if init in ("random", "upstream"):
        return init
    weights = weights_file(Path(init).expanduser())
    return file_identity(weights) if weights.is_file() else str(weights)


def _config_of(cfg: FilsConfig) -> dict[str, Any]:
    settings = without_runtime_only(section_of(cfg).model_dump(mode="json"), RUNTIME_ONLY, "finetune")
    return settings | {"encoder": _init_identity(cfg)}


def build_classifier(section: FinetuneSection | FinetuneRecipe, source: Path | None,
                     random_model: Any = None) -> VideoClassifier:
    """The classifier with the encoder of ``source`` (random weights when None) and freshly initialised heads.
    Seeds every RNG: the heads' initialisation, and numpy's for Mixup/CutMix (unseeded, no two runs would agree)."""
    seed_everything(section.seed)
    if source is None:
        return VideoClassifier(random_model.model_copy(update={"drop_path": section.drop_path}), section.head)
    encoder, model_cfg = load_pretrained_encoder(source, section.drop_path)
    model = VideoClassifier(model_cfg, section.head)
    model.encoder.load_state_dict(encoder.state_dict())
    return model


def fit_linear_probe(cfg: FilsConfig, shard_dir: Path, source: Path | None, recipe: FinetuneRecipe,
                     architecture: ModelConfig | None) -> VideoClassifier:
    """Frozen encoder of ``source`` (random weights of ``architecture`` when None); head trained on features of one
    centre view per training clip of the shard stage's output ``shard_dir``."""
    section = section_of(cfg)
    model = build_classifier(recipe, source, architecture)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    samples = (s for path in shard_paths(shard_dir, section.data.split) for s in iter_shard(path))
    excluded: list[dict[str, str]] = []
    batches = view_batches(samples, model.cfg, section.head, ViewsConfig(temporal=1, spatial=1),
                           section.data.sampling, section.data.feature_batch_size, excluded,
                           section.data.decode_backend)
    data = extract_features(model, batches, device)
    model.cpu()
    train_probe(model, data, recipe)
    return model


def train_full(job: FinetuneJob) -> None:
    """Full fine-tuning in this process (one rank of a torchrun job, or alone); rank 0 saves the result."""
    cfg, recipe, run_dir, out_dir = job.config, job.recipe, job.run_dir, job.out_dir
    env = init_distributed()
    try:
        section = section_of(cfg)
        if job.random_architecture is None:
            model = build_classifier(recipe, encoder_source(cfg), section.model)
        else:
            model = build_classifier(recipe, None, job.random_architecture)
        trainer = FinetuneTrainer(recipe, model, run_dir, env)
        shards = tuple(str(p) for p in shard_paths(cfg.workdir / "shard", section.data.split))
        check_shard_count(len(shards), env.world_size, section.loader.workers, section.data.split, "finetune")
        settings = StreamSettings(shards=shards, data=section.data, seed=recipe.seed, num_frames=model.cfg.num_frames,
                                  img_size=model.cfg.img_size, local_batch=trainer.local_batch,
                                  segment_steps=recipe.checkpoint_every, decode_timeout_s=section.loader.decode_timeout_s,
                                  recipe=LabelRecipe(section.head))
        if section.launch.threads:
            torch.set_num_threads(section.launch.threads)
        layout = Layout(env.rank, env.world_size, max(1, section.loader.workers))
        trainer.fit(ClipBatches(settings, layout, trainer.step, recipe.total_steps, section.loader, run_dir / "data",
                                recipe.log_every))
        if env.is_main:
            save_classifier(trainer.model, out_dir)
            if trainer.ema_model is not None:
                save_classifier(trainer.ema_model, out_dir.with_name(EMA_CLASSIFIER_DIR))
    finally:
        cleanup()


def _launch_full(cfg: FilsConfig, recipe: FinetuneRecipe, run_dir: Path, out_dir: Path,
                 random_architecture: ModelConfig | None = None) -> None:
    """Full fine-tuning in a supervised child (``pipeline.launch``: one process or torchrun), resumable."""
    section = section_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    job = run_dir / JOB_FILE
    job.write_text(FinetuneJob(config=cfg, recipe=recipe, run_dir=run_dir, out_dir=out_dir,
                               random_architecture=random_architecture).model_dump_json())
    try:
        run_training(ENTRY, job, run_dir / LOG_FILE, section.launch)
    except ChildFailed as exc:
        raise StageError(f"finetune: {exc}\nrerun to resume from the last checkpoint in "
                         f"{run_dir / 'checkpoints'}") from None


def _plan(ctx: StageContext) -> list[Unit]:
    encoder_source(ctx.cfg)  # fail before any work when the checkpoint is missing
    section = section_of(ctx.cfg)
    if section.mode == "full":  # every loader stream of every rank needs a shard of its own
        shards = shard_paths(ctx.upstream_dir("shard"), section.data.split)
        check_shard_count(len(shards), nproc_of(section.launch), section.loader.workers, section.data.split,
                          "finetune")
    return [Unit("train")]


def process_train(ctx: StageContext, unit: Unit, out_dir: Path) -> dict[str, Any]:
    cfg = ctx.cfg
    section = section_of(cfg)
    shard_dir = ctx.upstream_dir("shard")
    clips = labelled_count(shard_dir, section.data.split, section.head)
    if clips == 0:
        raise StageError(f"finetune: split {section.data.split!r} of {shard_dir} has no clip labelled for task "
                         f"{section.head.task!r}; check finetune.data.split and the dataset's labels")
    recipe = section.resolve(clips)
    run_dir = ctx.units_dir.parent / "train"  # survives a killed attempt: checkpoints for resuming
    source = encoder_source(cfg)
    classifier_dir = out_dir / CLASSIFIER_DIR
    if recipe.mode == "linear_probe":
        save_classifier(fit_linear_probe(cfg, shard_dir, source, recipe, section.model), classifier_dir)
    else:
        _launch_full(cfg, recipe, run_dir, classifier_dir)
        shutil.copyfile(run_dir / METRICS_CSV, out_dir / METRICS_CSV)
    if section.random_init_baseline and source is not None:  # the section forbids it with init: random
        _train_random_init_baseline(cfg, shard_dir, source, recipe, run_dir, out_dir)
    extra: dict[str, Any] = {"benchmark": section.benchmark, "init": section.init,
                             "encoder_fingerprint": weights_fingerprint(source) if source else "random",
                             "mode": recipe.mode, "train_clips": clips, "steps": recipe.total_steps}
    if section.head.task == "epic_action":
        verbs, nouns = action_map(shard_dir, section.head.num_classes)
        extra |= {"action_verbs": verbs.tolist(), "action_nouns": nouns.tolist()}
    random_init = {"init": "random", "encoder_fingerprint": "random"}
    for weights in (CLASSIFIER_DIR, EMA_CLASSIFIER_DIR, RANDOM_INIT_CLASSIFIER_DIR):
        meta_path = out_dir / weights / "classifier.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text()) | extra | {"weights": weights}
            meta |= random_init if weights == RANDOM_INIT_CLASSIFIER_DIR else {}
            meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True))
    return {"train_clips": clips, "steps": recipe.total_steps}


def _train_random_init_baseline(cfg: FilsConfig, shard_dir: Path, source: Path, recipe: FinetuneRecipe,
                                run_dir: Path, out_dir: Path) -> None:
    """The same recipe on random weights of ``source``'s architecture (``finetune.random_init_baseline``)."""
    _, architecture = load_pretrained_encoder(source)
    target = out_dir / RANDOM_INIT_CLASSIFIER_DIR
    if recipe.mode == "linear_probe":
        save_classifier(fit_linear_probe(cfg, shard_dir, None, recipe, architecture), target)
        return
    baseline_dir = run_dir.with_name(run_dir.name + "_random_init")  # its own checkpoints, resumable too
    # The model EMA is a second result of the main run only; without it the baseline trains the same way.
    _launch_full(cfg, recipe.model_copy(update={"model_ema": False}), baseline_dir, target, architecture)
    shutil.copyfile(baseline_dir / METRICS_CSV, target / METRICS_CSV)


def _finalize(ctx: StageContext, units: list[Unit]) -> StageResult:
    shutil.copytree(ctx.unit_dir("train"), ctx.output_dir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(UNIT_FILE))
    summary = json.loads((ctx.unit_dir("train") / UNIT_FILE).read_text())
    return StageResult(row_counts={"train_clips": summary["train_clips"], "steps": summary["steps"]})


SPEC = StageSpec(name="finetune", version="4", upstream=("shard", "pretrain"), config_of=_config_of, plan=_plan,
                 process=process_train, finalize=_finalize, unit_timeout_s=lambda cfg: section_of(cfg).launch.timeout_s,
                 needs=_needs, sections=("finetune",), runtime_only=RUNTIME_ONLY,
                 gpus_held=lambda cfg: gpus_of(section_of(cfg).launch))


def main(argv: list[str] | None = None) -> None:
    """Entry of the training process(es): ``-m stages.finetune.stage --job <run_dir>/job.json``."""
    parser = argparse.ArgumentParser(description="one rank of a fine-tuning run (started by the finetune stage)")
    parser.add_argument("--job", type=Path, required=True)
    job = FinetuneJob.model_validate_json(parser.parse_args(argv).job.read_text())
    end_session_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_full(job)


if __name__ == "__main__":
    main()
