"""The nightly sweep (``fils/nightly-eval``): evaluate every checkpoint that the results table lacks on the
configured benchmark, append the metrics, draw each metric over checkpoints, and fail when one drops.

Encoder checkpoints (VideoMAE-layout folders/files, pretrain ``.pt``) are evaluated frozen, from the feature bank
(``stages.evaluate.feature_bank``): each split is decoded and encoded once per checkpoint, then a sweep of linear
probes (and attentive ones, ``evaluate.sweep.probes.attentive``) is trained side by side with the setting chosen on
held-out training clips (``stages.evaluate.probes``), and, when the checkpoint has a language projector, zero-shot
classification and retrieval run on the same features (``stages.evaluate.language_eval``). Fine-tuned classifier
folders are evaluated as they are. A checkpoint is identified by the hash of its weights, so a renamed file is not
evaluated twice and a rewritten one is evaluated again. One broken checkpoint is reported in the result and does
not stop the others.

After recording, each watched metric (the headline metric of each classification protocol, Recall@5 both ways,
EK-100 retrieval's average mAP) of every newly evaluated checkpoint is compared with the best earlier checkpoint of
the same protocol; a drop of more than ``evaluate.sweep.alert_margin`` is listed in ``SweepResult.drops``, and the
flow fails on it after publishing everything.
"""
from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fils_model.classifier import VideoClassifier, is_classifier_dir, load_classifier
from fils_model.language_head import checkpoint_step, has_language_head
from fils_model.probe_sweep import ProbeSetting
from fils_model.weights import weights_file, weights_fingerprint
from pipeline.artifacts import ArtifactStore
from pipeline.locks import stage_locks
from pipeline.runner import verified_output
from pipeline.shards import iter_shard, shard_paths
from pipeline.video.clip_config import ViewsConfig
from stages.config import FilsConfig
from stages.evaluate import plots
from stages.evaluate.feature_bank import BankSettings, Features, FrozenEncoder, bank_features
from stages.evaluate.language_eval import language_protocols, language_results
from stages.evaluate.predict import predict
from stages.evaluate.probes import Resolve, probe_sweep
from stages.evaluate.report import excluded_clips
from stages.evaluate.results import evaluated_keys, read_results, record_results, result_rows
from stages.evaluate.scoring import HEADLINE, score
from stages.evaluate.stage import WEIGHTS, bank_settings, protocol_of, results_path, shard_rejects
from stages.finetune.data import action_map
from stages.finetune.stage import RANDOM_INIT_CLASSIFIER_DIR, section_of

log = logging.getLogger("fils.sweep")

WATCHED = (*HEADLINE, "v2t_r5", "t2v_r5", "avg_map")  # metrics whose drop fails the sweep


class MetricDropped(RuntimeError):
    """A watched metric of a new checkpoint fell more than ``evaluate.sweep.alert_margin`` below the best so far."""


@dataclass
class SweepResult:
    evaluated: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # already in the results table
    unscored: list[Path] = field(default_factory=list)  # what they still lack could not be scored (see notes)
    failed: dict[str, str] = field(default_factory=dict)  # checkpoint -> error
    rows: list[dict[str, Any]] = field(default_factory=list)
    decoded: dict[str, dict[str, int]] = field(default_factory=dict)  # checkpoint -> split -> clips decoded
    notes: dict[str, list[str]] = field(default_factory=dict)  # checkpoint -> chosen probe settings, skipped parts
    plots: list[Path] = field(default_factory=list)  # one per metric, over checkpoint steps
    drops: list[str] = field(default_factory=list)  # watched metrics that fell below the best earlier checkpoint


def discover_checkpoints(cfg: FilsConfig) -> list[Path]:
    """Existing checkpoints matched by ``evaluate.sweep.checkpoints``, oldest first."""
    found: dict[Path, None] = {}
    for pattern in cfg.evaluate.sweep.checkpoints:
        full = pattern if Path(pattern).is_absolute() else str(cfg.workdir / pattern)
        for match in glob.glob(full):
            if weights_file(Path(match)).is_file():
                found[Path(match)] = None
    return sorted(found, key=lambda p: (weights_file(p).stat().st_mtime, str(p)))


def probe_settings(cfg: FilsConfig) -> list[ProbeSetting]:
    probes = cfg.evaluate.sweep.probes
    return [ProbeSetting(lr, wd) for lr in probes.lrs for wd in probes.weight_decays]


def probe_recipe(cfg: FilsConfig) -> Resolve:
    """Training clips -> the probe recipe: the finetune section's head and optimiser without augmentation, for
    ``evaluate.sweep.probes.epochs`` (10 % warm-up)."""
    section = section_of(cfg)
    epochs = cfg.evaluate.sweep.probes.epochs
    probe = section.model_copy(update={
        "mode": "linear_probe", "epochs": epochs, "total_steps": None, "warmup_epochs": epochs / 10,
        "warmup_steps": 0, "model_ema": False,
        "mix": section.mix.model_copy(update={"mixup": 0.0, "cutmix": 0.0})})
    return probe.resolve


def _split_features(cfg: FilsConfig, shard_dir: Path, encoder: FrozenEncoder, split: str,
                    settings: BankSettings) -> Features:
    shards = shard_paths(shard_dir, split)
    if not shards:
        raise FileNotFoundError(f"no shards of split {split!r} under {shard_dir}; set the split to one the shard "
                                "stage wrote")
    return bank_features(cfg.workdir, encoder, shards, settings)


PROBE_PROTOCOLS = {"linear": "linear_probe_sweep", "attentive": "attentive_probe_sweep"}


def expected_protocols(cfg: FilsConfig, checkpoint: Path, captions: bool) -> list[str]:
    """What the sweep records for an encoder checkpoint: the probe sweeps, and the language-space evaluations when
    it has a language projector (``captions``: the captions stage is committed, for retrieval)."""
    kinds = ["linear"] + (["attentive"] if cfg.evaluate.sweep.probes.attentive else [])
    language = language_protocols(cfg, captions) if has_language_head(checkpoint) else []
    return [PROBE_PROTOCOLS[kind] for kind in kinds] + language


@dataclass
class FrozenEvaluation:
    protocols: dict[str, tuple[dict[str, float], int]]  # protocol -> (metrics, clips scored)
    excluded: int
    decoded: dict[str, int]
    notes: list[str]


def _probe_protocols(cfg: FilsConfig, shard_dir: Path, encoder: FrozenEncoder, test: Features,
                     kinds: list[str]) -> tuple[dict[str, tuple[dict[str, float], int]], list[str], int]:
    """The probe sweeps of ``kinds`` on the training split's bank; returns their results, notes and the training
    clips decoded."""
    section, ev = section_of(cfg), cfg.evaluate
    data = section.data
    train = _split_features(cfg, shard_dir, encoder, data.split, BankSettings(
        ViewsConfig(temporal=1, spatial=1), data.sampling, ev.bank.tokens, data.feature_batch_size,
        data.decode_backend))
    head = section.head
    verbs, nouns = action_map(shard_dir, head.num_classes) if head.task == "epic_action" else (None, None)
    protocols: dict[str, tuple[dict[str, float], int]] = {}
    notes = [f"{len(train.excluded)} training clip(s) excluded: {train.excluded[:3]}"] if train.excluded else []
    for kind in kinds:
        outcome = probe_sweep(train, test, head, probe_recipe(cfg), probe_settings(cfg), ev.sweep.probes.holdout,
                              kind, verbs, nouns)
        protocols[PROBE_PROTOCOLS[kind]] = (outcome.scored.metrics, outcome.test_clips)
        notes.append(f"{kind} probe: chose {outcome.chosen.label} on held-out training clips "
                     f"({', '.join(f'{k}: {100 * v:.1f}' for k, v in outcome.held_out.items())})")
        lrs = ev.sweep.probes.lrs
        if len(lrs) > 1 and outcome.chosen.lr in (min(lrs), max(lrs)):
            notes.append(f"{kind} probe: the chosen lr {outcome.chosen.lr:g} is at the edge of "
                         "evaluate.sweep.probes.lrs: a wider grid may do better")
    return protocols, notes, train.decoded


def evaluate_frozen(cfg: FilsConfig, shard_dir: Path, captions_dir: Path | None, checkpoint: Path,
                    protocols: list[str]) -> FrozenEvaluation:
    """``protocols`` (of :func:`expected_protocols`) of one encoder checkpoint, all from its feature bank: the
    training split is decoded only when a probe sweep is asked for."""
    section, ev = section_of(cfg), cfg.evaluate
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = FrozenEncoder(checkpoint, device)
    test = _split_features(cfg, shard_dir, encoder, ev.split, bank_settings(cfg))
    kinds = [kind for kind, name in PROBE_PROTOCOLS.items() if name in protocols]
    found, notes, decoded = _probe_protocols(cfg, shard_dir, encoder, test, kinds) if kinds else ({}, [], 0)
    language = [p for p in protocols if p not in PROBE_PROTOCOLS.values()]
    if language and encoder.language is not None:
        results, skipped = language_results(cfg, shard_dir, captions_dir, test, encoder.language, section.head,
                                            section.benchmark, language)
        found |= {r.protocol: (r.metrics, r.clips) for r in results}
        notes += [f"{name} not scored: {why}" for name, why in skipped.items()]
    return FrozenEvaluation(found, excluded_clips(test.excluded + shard_rejects(shard_dir, ev.split)),
                            {section.data.split: decoded, ev.split: test.decoded}, notes)


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


def _trend_plots(benchmark: str, table: Path) -> list[Path]:
    """One figure per metric over checkpoints, one line per protocol (random-init rows are a reference, not a
    checkpoint, and are left out)."""
    rows = [r for r in read_results(table) if r["benchmark"] == benchmark
            and not r["protocol"].endswith(WEIGHTS[RANDOM_INIT_CLASSIFIER_DIR][0])]
    folder = table.parent / "trends"
    return [plots.metric_trend(rows, metric, benchmark, folder / f"{benchmark}_{metric}.png")
            for metric in sorted({r["metric"] for r in rows})]


def metric_drops(table: list[dict[str, Any]], checkpoints: set[str], margin: float) -> list[str]:
    """Watched metrics of the ``checkpoints`` (fingerprints) more than ``margin`` below the best row of the same
    benchmark, protocol, views and metric recorded before theirs (the table keeps rows in recording order)."""
    drops = []
    best: dict[tuple[str, ...], float] = {}
    for row in table:
        if row["metric"] not in WATCHED:
            continue
        same = (row["benchmark"], row["protocol"], row["views"], row["metric"])
        earlier = best.get(same)
        best[same] = row["value"] if earlier is None else max(earlier, row["value"])
        if row["checkpoint"] in checkpoints and earlier is not None and row["value"] < earlier - margin:
            drops.append(f"{row['protocol']} {row['metric']} of {row['checkpoint_path']}: {100 * row['value']:.2f} "
                         f"is {100 * (earlier - row['value']):.2f} points below the best earlier checkpoint "
                         f"({100 * earlier:.2f}; alert margin {100 * margin:.2f})")
    return drops


def run_sweep(cfg: FilsConfig, checkpoints: list[Path] | None = None) -> SweepResult:
    """Evaluate ``checkpoints`` (default: discovered by ``evaluate.sweep.checkpoints``) not yet in the table,
    reading the shard stage's clips (and the captions stage's captions, when committed) under their shared locks
    (neither can be recommitted meanwhile)."""
    store = ArtifactStore(cfg.workdir)
    captions = store.success("captions") is not None and cfg.evaluate.retrieval.enabled
    with stage_locks(cfg.workdir, None, ("shard", "captions") if captions else ("shard",)):
        shard_dir = verified_output(store, "shard", "the evaluation sweep")
        captions_dir = verified_output(store, "captions", "retrieval in the evaluation sweep") if captions else None
        return _sweep(cfg, shard_dir, captions_dir, checkpoints)


def _sweep(cfg: FilsConfig, shard_dir: Path, captions_dir: Path | None, checkpoints: list[Path] | None
           ) -> SweepResult:
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
            expected = [protocol_of(meta, meta.get("weights", ""))] if classifier else \
                expected_protocols(cfg, checkpoint, captions_dir is not None)
            missing = [p for p in expected if (benchmark, fingerprint, p, views) not in done]
            if not missing:
                result.skipped.append(checkpoint)
                continue
            log.info("sweep: evaluating %s (%s): %s", checkpoint, fingerprint, ", ".join(missing))
            if model is not None:
                metrics, clips, excluded = _evaluate(cfg, shard_dir, model, meta)
                found = FrozenEvaluation({missing[0]: (metrics, clips)}, excluded, {}, [])
            else:
                found = evaluate_frozen(cfg, shard_dir, captions_dir, checkpoint, missing)
            step = None if classifier else checkpoint_step(checkpoint)
        except Exception as exc:  # noqa: BLE001 - one broken checkpoint must not stop the nightly run
            log.error("sweep: %s failed: %s", checkpoint, exc)
            result.failed[str(checkpoint)] = f"{type(exc).__name__}: {exc}"
            continue
        result.notes[str(checkpoint)] = found.notes
        result.decoded[str(checkpoint)] = found.decoded
        if not found.protocols:  # every missing evaluation was skipped again: the notes say why
            result.unscored.append(checkpoint)
            continue
        rows = [row for name, (metrics, clips) in found.protocols.items()
                for row in result_rows(benchmark, fingerprint, checkpoint, name, views, metrics, clips,
                                       found.excluded, step)]
        record_results(table, rows)
        done |= {(benchmark, fingerprint, name, views) for name in found.protocols}
        result.evaluated.append(checkpoint)
        result.rows += rows
        for note in found.notes:
            log.info("sweep: %s: %s", checkpoint, note)
    result.plots = _trend_plots(benchmark, table)
    result.drops = metric_drops(read_results(table), {r["checkpoint"] for r in result.rows},
                                cfg.evaluate.sweep.alert_margin)
    return result
