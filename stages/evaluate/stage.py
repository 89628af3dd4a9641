"""The `evaluate` stage: multi-view testing of the committed `finetune` classifier on an evaluation split.

One unit per shard of the split (clips that cannot be decoded are reported and excluded). ``finalize`` scores the
merged predictions and writes ``metrics.parquet``, ``excluded.parquet``, ``report.md`` and ``plots/*.png`` into
``<workdir>/evaluate/``, and appends the metrics to the cross-run results table (``evaluate.results_table``).

The trained weights are the result; when the finetune stage also kept a model EMA, it is scored on the same views
as a second result (protocol ``<mode>+ema``), and its random-init baseline as a third (``<mode>+random_init``): the
report gives every metric a bootstrap interval over the clips and the gain over the random-init encoder a paired
one. Clips of the split that never reached a shard (rejected by the shard
stage) are counted with the clips that could not be decoded, so a score on a subset always says so.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fils_model.classifier import load_classifier
from fils_model.finetune_config import HeadConfig
from fils_model.language_head import has_language_head
from fils_model.weights import weights_fingerprint
from pipeline.fingerprint import path_identity, without_runtime_only
from pipeline.runner import StageError
from pipeline.shards import iter_shard, shard_paths
from pipeline.stage import StageContext, StageResult, StageSpec, Unit
from pipeline.tables import write_table
from stages.captions.stage import text_encoder_identity
from stages.config import FilsConfig
from stages.evaluate import plots
from stages.evaluate.bootstrap import Interval, intervals, metric_draws, paired_differences, resample
from stages.evaluate.feature_bank import BankSettings, bank_features, frozen_encoder, release_frozen_encoders
from stages.evaluate.language_eval import LanguageResult, language_results
from stages.evaluate.predict import Predictions, predict
from stages.evaluate.report import excluded_clips, language_section, render_report
from stages.evaluate.results import read_results, record_results, result_rows, write_rows
from stages.evaluate.scoring import Scored, score
from stages.finetune.stage import CLASSIFIER_DIR, EMA_CLASSIFIER_DIR, RANDOM_INIT_CLASSIFIER_DIR, starts_from_pretrain
from stages.pretrain.stage import pretrained_encoder, training_loss_floors, training_metrics
from stages.shard.tables import REJECTS_FILE, class_names

PREDICTIONS = "predictions_{weights}.npz"
EXCLUDED_JSON = "excluded.json"
METRICS_FILE = "metrics.parquet"
EXCLUDED_FILE = "excluded.parquet"
EXCLUDED_SCHEMA = pa.schema([("key", pa.string()), ("reason", pa.string()), ("clips", pa.int32())])
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
# Every set of committed weights scored: protocol suffix in the results table, column title in the report.
WEIGHTS = {CLASSIFIER_DIR: ("", "trained weights"), EMA_CLASSIFIER_DIR: ("+ema", "model EMA"),
           RANDOM_INIT_CLASSIFIER_DIR: ("+random_init", "random-init encoder")}


def protocol_of(meta: dict[str, Any], weights: str) -> str:
    """A classifier's protocol in the results table: its training mode, suffixed by which of the finetune stage's
    weights it is (``WEIGHTS``)."""
    return meta.get("mode", "full") + WEIGHTS.get(weights, ("", ""))[0]


def results_path(cfg: FilsConfig) -> Path:
    path = cfg.evaluate.results_table
    return path if path.is_absolute() else cfg.workdir / path


# The sweep is not this stage; the results table's location and the batch size do not change the scores.
RUNTIME_ONLY = ("evaluate.sweep", "evaluate.results_table", "evaluate.batch_size", "evaluate.bank")


def _config_of(cfg: FilsConfig) -> dict[str, Any]:
    """The stage's settings, the identity of the files they name (editing a prompt or class file in place makes
    the stage stale) and of the text encoder zero-shot and EK-100 retrieval embed their text with."""
    ev = cfg.evaluate
    files = {"prompts": ev.zero_shot.prompts, "verb_classes": ev.zero_shot.verb_classes,
             "noun_classes": ev.zero_shot.noun_classes, "epic_test": ev.retrieval.epic_test,
             "epic_sentences": ev.retrieval.epic_sentences}
    embeds_text = ev.zero_shot.enabled or ev.retrieval.epic_test is not None
    text = text_encoder_identity(cfg.captions.text_encoder) if embeds_text and cfg.captions is not None else None
    return without_runtime_only(ev.model_dump(mode="json"), RUNTIME_ONLY, "evaluate") | {
        "files": {name: path_identity(path) for name, path in files.items()}, "text_encoder": text}


def _needs(cfg: FilsConfig) -> dict[str, str]:
    needs = {"shard": "", "finetune": ""}
    if cfg.finetune is not None and starts_from_pretrain(cfg):
        needs["pretrain"] = ("the report plots the pre-training losses of the encoder finetune.init names, and "
                             "zero-shot and retrieval use its language projector")
        if cfg.evaluate.retrieval.enabled and cfg.captions is not None:
            needs["captions"] = "retrieval compares clips with their captions (evaluate.retrieval.enabled)"
    return needs


def language_source(ctx: StageContext) -> Path | None:
    """The pre-trained encoder the evaluated classifier was fine-tuned from, when zero-shot or retrieval is on and
    pretrain is upstream: its export folder, or its last checkpoint when the export predates the language files
    (the export folder, without a language head, when neither has one)."""
    ev = ctx.cfg.evaluate
    if not (ev.zero_shot.enabled or ev.retrieval.enabled) or not _fine_tuned_from_pretrain(ctx):
        return None
    export, checkpoint = pretrained_encoder(ctx.upstream_dir("pretrain")), ctx.upstream_dir("pretrain") / "checkpoint.pt"
    return checkpoint if not has_language_head(export) and checkpoint.is_file() and has_language_head(checkpoint) \
        else export


def bank_settings(cfg: FilsConfig) -> BankSettings:
    ev = cfg.evaluate
    return BankSettings(ev.views, ev.sampling, ev.bank.tokens, ev.batch_size, ev.decode_backend)


def _fine_tuned_from_pretrain(ctx: StageContext) -> bool:
    """Whether the committed pretrain output is the one the evaluated classifier was fine-tuned from (not rerun
    since)."""
    pretrain = ctx.upstream.get("pretrain")
    return pretrain is not None and ctx.upstream["finetune"].upstream.get("pretrain") == pretrain.output_id


def pretrain_losses(ctx: StageContext) -> tuple[Path, dict[str, float]] | None:
    """The loss log and loss floors of the pretrain output the evaluated classifier was fine-tuned from (None when
    there is none, or when pretrain has been rerun since: its curve would not belong to this encoder)."""
    if not _fine_tuned_from_pretrain(ctx):
        return None
    metrics = training_metrics(ctx.upstream_dir("pretrain"))
    return None if metrics is None else (metrics, training_loss_floors(ctx.upstream_dir("pretrain")))


def _plan(ctx: StageContext) -> list[Unit]:
    split = ctx.cfg.evaluate.split
    shards = shard_paths(ctx.upstream_dir("shard"), split)
    if not shards:
        raise StageError(f"evaluate: no shards of split {split!r} in {ctx.upstream_dir('shard')}; set "
                         "evaluate.split to a split the shard stage wrote (e.g. validation)")
    return [Unit(path.stem, {"shard": str(path)}) for path in shards]


def classifier_dirs(finetune_dir: Path) -> dict[str, Path]:
    """The committed weights to score: the trained classifier, its model EMA and the random-init baseline when the
    finetune stage kept them."""
    found = {name: finetune_dir / name for name in WEIGHTS}
    return {name: path for name, path in found.items() if (path / "model.safetensors").is_file()}


def process_shard(ctx: StageContext, unit: Unit, out_dir: Path) -> dict[str, Any]:
    cfg = ctx.cfg.evaluate
    models = {name: load_classifier(path)[0] for name, path in classifier_dirs(ctx.upstream_dir("finetune")).items()}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preds = predict(models, iter_shard(Path(unit.payload["shard"])), cfg.views, cfg.sampling, cfg.batch_size,
                    device, cfg.decode_backend)
    for name, weights_preds in preds.items():
        if weights_preds.keys:
            weights_preds.save(out_dir / PREDICTIONS.format(weights=name))
    scored = preds[CLASSIFIER_DIR]
    (out_dir / EXCLUDED_JSON).write_text(json.dumps(scored.excluded))
    source = language_source(ctx)
    if source is not None and has_language_head(source):  # into the bank, where finalize and later sweeps read it
        bank_features(ctx.cfg.workdir, frozen_encoder(source, device), [Path(unit.payload["shard"])],
                      bank_settings(ctx.cfg))
    return {"clips": len(scored.keys), "excluded": len(scored.excluded)}


def shard_rejects(shard_dir: Path, split: str) -> list[dict[str, str]]:
    """Clips of ``split`` the shard stage could not store, as exclusions (key, reason)."""
    rows = pq.read_table(shard_dir / REJECTS_FILE).to_pylist()
    return [{"key": r["key"] or f"(all of {r['source_path']})", "reason": f"shard stage: {r['reason']}",
             "clips": r["clips"]} for r in rows if r["split"] == split]


def write_figures(scored: Scored, names: list[str], benchmark: str, out_dir: Path, limit: int,
                  pretrain: tuple[Path, dict[str, float]] | None) -> list[Path]:
    """Per-class and confusion figures of every head, plus pre-training losses when their CSV exists."""
    figures = []
    for head, values in scored.per_class.items():
        head_names = names if head in ("label", "action") else []
        support = scored.confusion[head].sum(axis=1) if head in scored.confusion else np.ones(len(values))
        kind = "AP" if head not in scored.confusion else "accuracy"
        figures.append(plots.per_class_accuracy(np.nan_to_num(values), support, head_names,
                                                f"{benchmark}: per-class {kind} ({head})",
                                                out_dir / f"per_class_{head}.png", limit))
        if head in scored.confusion:
            figures.append(plots.confusion(scored.confusion[head], head_names, f"{benchmark}: confusion ({head})",
                                           out_dir / f"confusion_{head}.png", limit))
    if pretrain is not None:
        metrics_csv, floors = pretrain
        curve = plots.loss_curves(metrics_csv, out_dir / "pretrain_losses.png", floors)
        if curve is not None:
            figures.append(curve)
    return figures


@dataclass
class WeightsResult:
    preds: Predictions
    scored: Scored
    meta: dict[str, Any]
    intervals: dict[str, Interval]
    draws: dict[str, np.ndarray]  # metric -> value on every bootstrap draw (shared draws: paired across weights)


def _score_weights(ctx: StageContext, units: list[Unit], name: str, classifier: Path,
                   draws: Callable[[int], Iterable[np.ndarray]]) -> WeightsResult | None:
    files = [ctx.unit_dir(u.id) / PREDICTIONS.format(weights=name) for u in units]
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    preds = Predictions.load_all(files)
    model, meta = load_classifier(classifier)
    scores, targets = preds.arrays()
    verbs, nouns = meta.get("action_verbs"), meta.get("action_nouns")
    scored = score(model.head_cfg, scores, targets, verbs, nouns)
    values = metric_draws(scored.outcomes.metrics, draws(len(preds.keys)))
    return WeightsResult(preds, scored, meta, intervals(scored.metrics, values, ctx.cfg.evaluate.intervals.level),
                         values)


@dataclass
class LanguageSpace:
    """The language-space evaluations of the pre-trained encoder (``stages.evaluate.language_eval``)."""

    checkpoint: Path
    results: list[LanguageResult]
    skipped: dict[str, str]  # evaluation -> why it did not run
    intervals: dict[str, dict[str, Interval]]  # protocol -> metric -> bootstrap interval (zero-shot)
    excluded: int
    step: int | None  # the encoder's training step


def _language_space(ctx: StageContext, units: list[Unit], head: HeadConfig, benchmark: str) -> LanguageSpace | None:
    source = language_source(ctx)
    if source is None:
        return None
    if not has_language_head(source):
        return LanguageSpace(source, [], {"language space": f"{source} has no language projector (pre-trained "
                                          "without ActCLIP and feature prediction)"}, {}, 0, None)
    encoder = frozen_encoder(source, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = ctx.cfg
    features = bank_features(cfg.workdir, encoder, [Path(u.payload["shard"]) for u in units], bank_settings(cfg))
    captions = ctx.upstream_dir("captions") if "captions" in ctx.upstream else None
    results, skipped = language_results(cfg, ctx.upstream_dir("shard"), captions, features, encoder.language, head,
                                        benchmark)
    ivl = cfg.evaluate.intervals
    found = {r.protocol: intervals(r.scored.metrics, metric_draws(r.scored.outcomes.metrics,
                                                                  resample(r.clips, ivl.resamples, ivl.seed)),
                                   ivl.level) for r in results if r.scored is not None}
    excluded = excluded_clips(features.excluded + shard_rejects(ctx.upstream_dir("shard"), cfg.evaluate.split))
    return LanguageSpace(source, results, skipped, found, excluded, encoder.language.meta.get("step"))


def _finalize(ctx: StageContext, units: list[Unit]) -> StageResult:
    cfg, out = ctx.cfg, ctx.output_dir
    excluded = []
    for unit in units:
        excluded += json.loads((ctx.unit_dir(unit.id) / EXCLUDED_JSON).read_text())
    excluded = [{"clips": 1} | e for e in excluded] + shard_rejects(ctx.upstream_dir("shard"), cfg.evaluate.split)
    weights = classifier_dirs(ctx.upstream_dir("finetune"))
    ivl = cfg.evaluate.intervals
    results = {name: _score_weights(ctx, units, name, path, lambda clips: resample(clips, ivl.resamples, ivl.seed))
               for name, path in weights.items()}
    main = results.get(CLASSIFIER_DIR)
    if main is None:
        raise StageError(f"evaluate: no clip of split {cfg.evaluate.split!r} could be scored "
                         f"({len(excluded)} excluded; first: {excluded[:3]})")
    scored_results = {name: r for name, r in results.items() if r is not None}
    for name, result in scored_results.items():  # one predict() pass scores every set: the same clips, in order
        if result.preds.keys != main.preds.keys:
            raise StageError(f"evaluate: the predictions of {name} cover other clips than those of {CLASSIFIER_DIR}; "
                             "rerun with --force evaluate")
    classifier = weights[CLASSIFIER_DIR]
    benchmark, views = main.meta.get("benchmark", "unknown"), cfg.evaluate.views.label
    rows = []
    for name, result in scored_results.items():
        rows += result_rows(benchmark, weights_fingerprint(weights[name]), weights[name], protocol_of(main.meta, name),
                            views, result.scored.metrics, len(result.preds.keys), excluded_clips(excluded))
    language = _language_space(ctx, units, HeadConfig.model_validate(main.meta["head"]), benchmark)
    if language is not None:
        for result in language.results:
            rows += result_rows(benchmark, weights_fingerprint(language.checkpoint), language.checkpoint,
                                result.protocol, views, result.metrics, result.clips, language.excluded, language.step)
    write_rows(rows, out / METRICS_FILE)
    write_table(excluded, EXCLUDED_SCHEMA, out / EXCLUDED_FILE)
    table = results_path(cfg)
    record_results(table, rows)
    names = class_names(ctx.upstream_dir("shard"))
    figures = write_figures(main.scored, names, benchmark, out / PLOTS_DIR, cfg.evaluate.plot_classes,
                            pretrain_losses(ctx))
    history = [r for r in read_results(table) if r["benchmark"] == benchmark][-50:]
    baseline = scored_results.get(RANDOM_INIT_CLASSIFIER_DIR)
    gain = None if baseline is None else paired_differences(main.scored.metrics, main.draws, baseline.scored.metrics,
                                                            baseline.draws, ivl.level)
    (out / REPORT_FILE).write_text(render_report(
        benchmark=benchmark, checkpoint=rows[0]["checkpoint"], checkpoint_path=str(classifier),
        protocol=rows[0]["protocol"], views=views, clips=len(main.preds.keys), scored=main.scored, excluded=excluded,
        class_names=names, figures=[f.relative_to(out) for f in figures], history=history,
        top_classes=cfg.evaluate.plot_classes, level=ivl.level if ivl.resamples else None,
        columns={WEIGHTS[name][1]: result.intervals for name, result in scored_results.items()}, gain=gain,
        language=None if language is None else language_section(language.checkpoint, language.results,
                                                                language.intervals, language.skipped)))
    if language is not None:
        release_frozen_encoders()
    extra: dict[str, Any] = {"metrics": main.scored.metrics, "results_table": str(table), "report": REPORT_FILE}
    if EMA_CLASSIFIER_DIR in scored_results:
        extra["ema_metrics"] = scored_results[EMA_CLASSIFIER_DIR].scored.metrics
    if language is not None:
        extra["language_space"] = {"checkpoint": str(language.checkpoint), "skipped": language.skipped,
                                   **{r.protocol: r.metrics for r in language.results},
                                   "intervals": {protocol: {k: asdict(v) for k, v in found.items()}
                                                 for protocol, found in language.intervals.items()}}
    if baseline is not None:
        extra["random_init_metrics"] = baseline.scored.metrics
        extra["gain_over_random_init"] = {k: asdict(v) for k, v in (gain or {}).items()}
    return StageResult(row_counts={"clips": len(main.preds.keys), "excluded": excluded_clips(excluded),
                                   "metrics": len(rows)}, extra=extra)


SPEC = StageSpec(name="evaluate", version="3", upstream=("shard", "finetune", "pretrain", "captions"), config_of=_config_of,
                 plan=_plan, process=process_shard, finalize=_finalize, needs=_needs, sections=("evaluate",),
                 runtime_only=RUNTIME_ONLY)
