"""The nightly sweep (``fils/nightly-eval``): evaluate every checkpoint that the results table lacks on the
configured benchmark, append the metrics, and draw the headline metric over checkpoints.

Encoder checkpoints (VideoMAE-layout folders/files, pretrain ``.pt``) are linear-probed with the finetune
section's head and data (``evaluate.sweep.probe_*``); fine-tuned classifier folders are evaluated as they are.
A checkpoint is identified by the hash of its weights, so a renamed file is not evaluated twice and a rewritten
one is evaluated again. One broken checkpoint is reported in the result and does not stop the others.
"""
from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fils_model.classifier import VideoClassifier, is_classifier_dir, load_classifier
from fils_model.weights import weights_file, weights_fingerprint
from pipeline.artifacts import ArtifactStore
from pipeline.locks import stage_locks
from pipeline.runner import verified_output
from pipeline.shards import iter_shard, shard_paths
from stages.config import FilsConfig
from stages.evaluate import plots
from stages.evaluate.predict import predict
from stages.evaluate.report import excluded_clips
from stages.evaluate.results import evaluated_keys, read_results, record_results, result_rows
from stages.evaluate.scoring import HEADLINE, score
from stages.evaluate.stage import WEIGHTS, protocol_of, results_path, shard_rejects
from stages.finetune.data import action_map, labelled_count
from stages.finetune.stage import RANDOM_INIT_CLASSIFIER_DIR, fit_linear_probe, section_of

log = logging.getLogger("fils.sweep")



@dataclass
class SweepResult:
    evaluated: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # already in the results table
    failed: dict[str, str] = field(default_factory=dict)  # checkpoint -> error
    rows: list[dict[str, Any]] = field(default_factory=list)
    plot: Path | None = None


def discover_checkpoints(cfg: FilsConfig) -> list[Path]:
    """Existing checkpoints matched by ``evaluate.sweep.checkpoints``, oldest first."""
    found: dict[Path, None] = {}
    for pattern in cfg.evaluate.sweep.checkpoints:
        full = pattern if Path(pattern).is_absolute() else str(cfg.workdir / pattern)
        for match in glob.glob(full):
            if weights_file(Path(match)).is_file():
                found[Path(match)] = None
    return sorted(found, key=lambda p: (weights_file(p).stat().st_mtime, str(p)))


def _probe(cfg: FilsConfig, shard_dir: Path, checkpoint: Path) -> VideoClassifier:

    section = section_of(cfg)
    sweep = cfg.evaluate.sweep
    optim = section.optim if sweep.probe_lr is None else section.optim.model_copy(update={"base_lr": sweep.probe_lr})
    probe = section.model_copy(update={
        "mode": "linear_probe", "epochs": sweep.probe_epochs, "total_steps": None, "warmup_epochs": sweep.probe_epochs / 10,
        "warmup_steps": 0, "model_ema": False, "optim": optim,
        "mix": section.mix.model_copy(update={"mixup": 0.0, "cutmix": 0.0})})
    clips = labelled_count(shard_dir, section.data.split, section.head)
    return fit_linear_probe(cfg, shard_dir, checkpoint, probe.resolve(clips), None)


def _evaluate(cfg: FilsConfig, shard_dir: Path, model: VideoClassifier, meta: dict[str, Any]
              ) -> tuple[dict[str, float], int, int]:
    ev = cfg.evaluate
    shards = shard_paths(shard_dir, ev.split)
    if not shards:
        raise FileNotFoundError(f"no shards of split {ev.split!r} under {shard_dir}; set evaluate.split to a split "
                                "the shard stage wrote")
    samples = (s for path in shards for s in iter_shard(path))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preds = predict({"model": model}, samples, ev.views, ev.sampling, ev.batch_size, device,
                    ev.decode_backend)["model"]
    for bad in preds.excluded:
        log.warning("sweep: evaluation clip %s excluded: %s", bad["key"], bad["reason"])
    scores, targets = preds.arrays()
    verbs, nouns = meta.get("action_verbs"), meta.get("action_nouns")
    if model.head_cfg.task == "epic_action" and verbs is None:
        verbs, nouns = action_map(shard_dir, model.head_cfg.num_classes)
    excluded = excluded_clips(preds.excluded + shard_rejects(shard_dir, ev.split))
    return score(model.head_cfg, scores, targets, verbs, nouns).metrics, len(preds.keys), excluded


def _plot(cfg: FilsConfig, benchmark: str, table: Path) -> Path | None:
    rows = [r for r in read_results(table) if r["benchmark"] == benchmark
            and not r["protocol"].endswith(WEIGHTS[RANDOM_INIT_CLASSIFIER_DIR][0])]  # a reference, not a checkpoint
    metric = next((m for m in HEADLINE if any(r["metric"] == m for r in rows)), None)
    if metric is None:
        return None
    points = [(f"{r['checkpoint'][:8]} {r['protocol']}", r["value"])
              for r in sorted(rows, key=lambda r: r["timestamp"]) if r["metric"] == metric]
    return plots.metric_over_checkpoints(points, metric, benchmark, table.parent / f"{benchmark}_{metric}.png")


def run_sweep(cfg: FilsConfig, checkpoints: list[Path] | None = None) -> SweepResult:
    """Evaluate ``checkpoints`` (default: discovered by ``evaluate.sweep.checkpoints``) not yet in the table,
    reading the shard stage's clips under its shared lock (the shard stage cannot be recommitted meanwhile)."""
    with stage_locks(cfg.workdir, None, ("shard",)):
        shard_dir = verified_output(ArtifactStore(cfg.workdir), "shard", "the evaluation sweep")
        return _sweep(cfg, shard_dir, checkpoints)


def _sweep(cfg: FilsConfig, shard_dir: Path, checkpoints: list[Path] | None) -> SweepResult:
    benchmark, views = section_of(cfg).benchmark, cfg.evaluate.views.label
    table = results_path(cfg)
    done = evaluated_keys(table)
    result = SweepResult()
    for checkpoint in checkpoints if checkpoints is not None else discover_checkpoints(cfg):
        checkpoint = Path(checkpoint)
        try:
            fingerprint = weights_fingerprint(checkpoint)
            classifier = is_classifier_dir(checkpoint)
            model, meta = load_classifier(checkpoint) if classifier else (None, {})
            # a classifier folder of the finetune stage says which weights it holds (trained, EMA, random-init)
            protocol = protocol_of(meta, meta.get("weights", "")) if classifier else "linear_probe"
            if (benchmark, fingerprint, protocol, views) in done:
                result.skipped.append(checkpoint)
                continue
            log.info("sweep: evaluating %s (%s, %s)", checkpoint, fingerprint, protocol)
            model = model if model is not None else _probe(cfg, shard_dir, checkpoint)
            metrics, clips, excluded = _evaluate(cfg, shard_dir, model, meta)
        except Exception as exc:  # noqa: BLE001 - one broken checkpoint must not stop the nightly run
            log.error("sweep: %s failed: %s", checkpoint, exc)
            result.failed[str(checkpoint)] = f"{type(exc).__name__}: {exc}"
            continue
        rows = result_rows(benchmark, fingerprint, checkpoint, protocol, views, metrics, clips, excluded)
        record_results(table, rows)
        done.add((benchmark, fingerprint, protocol, views))
        result.evaluated.append(checkpoint)
        result.rows += rows
    result.plot = _plot(cfg, benchmark, table)
    return result
