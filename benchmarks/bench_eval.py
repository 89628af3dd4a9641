"""The nightly sweep's cost per checkpoint with the frozen-feature bank against re-decoding for every probe, and
probe training throughput on cached features.

Each repeat, on generated clips (320x240, 32 frames) sharded once, for a checkpoint the sweep has not seen (a fresh random FILS
checkpoint with a language projector):
  * bank: ``stages.evaluate.sweep.evaluate_frozen``, what the sweep runs: each split decoded and encoded once into
    the bank, then P linear-probe settings trained side by side (choice on held-out training clips, refit) and
    zero-shot classification;
  * re-decoding: the same evaluations the way they ran before the bank, each decoding and encoding what it reads:
    every probe setting decodes the training and evaluation splits and trains one probe on all training clips, and
    zero-shot decodes the evaluation split again (it does less probe training than the bank arm: no choice, no
    refit);
  * warm bank: the bank arm again on the same checkpoint (what trying new probe settings costs);
  * probes/s: linear probes trained per second on cached ViT-B-sized features (768 wide, 174 classes), eight
    settings in one pass against the same eight one at a time.
An untimed evaluation of another checkpoint first loads the text encoder and warms every code path. The ratio
re-decoding / bank is computed within each repeat. Writes benchmarks/results/eval.json.

    python benchmarks/bench_eval.py [--clips-per-class 12] [--settings 5] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fils_model.config import PretrainConfig
from fils_model.fils import FILSModel
from fils_model.finetune_config import FinetuneRecipe, HeadConfig
from fils_model.probe_sweep import LinearHeads, ProbeSetting, train_probe_sweep
from pipeline.runner import run_pipeline
from pipeline.samples import CLASS_PROMPTS_CSV, SAMPLES_CSV, SampleSettings, write_samples
from pipeline.shards import shard_paths
from pipeline.video.clip_config import ViewsConfig
from stages import registry
from stages.config import FilsConfig, load_config
from stages.evaluate.feature_bank import BankSettings, Features, FrozenEncoder, bank_features
from stages.evaluate.language_eval import language_results
from stages.evaluate.probes import view_scores
from stages.evaluate.scoring import score
from stages.evaluate.stage import bank_settings
from stages.evaluate.sweep import evaluate_frozen, expected_protocols, probe_recipe, probe_settings
from stages.finetune.stage import section_of

from record import cell, describe_machine, save, spread

MODEL = {"size": "tiny", "img_size": 32, "patch_size": 8, "num_frames": 8, "text_dim": 384}  # MiniLM's width


def _config(root: Path, workdir: Path, lrs: list[float]) -> FilsConfig:
    return load_config(tree={
        "workdir": str(workdir),
        "data": {"source": {"kind": "csv", "root": str(root), "annotations": str(root / SAMPLES_CSV)}},
        "runtime": {"workers": 1, "progress": False}, "shard": {"short_side": 240, "window_s": 4.0},
        "captions": {"source": "narration",
                     "text_encoder": {"backend": "hf", "model": "sentence-transformers/all-MiniLM-L6-v2"}},
        "finetune": {"benchmark": "demo-motion", "mode": "linear_probe", "epochs": 20,
                     "head": {"num_classes": 5}, "global_batch_size": 16, "data": {"sampling": {"mode": "segment"}}},
        "evaluate": {"views": {"temporal": 2, "spatial": 1}, "sampling": {"mode": "segment"},
                     "zero_shot": {"prompts": str(root / CLASS_PROMPTS_CSV)},
                     "sweep": {"probes": {"lrs": lrs, "epochs": 20}}}})


def _checkpoint(path: Path, seed: int) -> Path:
    cfg = PretrainConfig.model_validate({"model": MODEL, "trainer": {"total_steps": 1, "global_batch_size": 2}})
    torch.manual_seed(seed)
    torch.save({"step": seed, "model": FILSModel(cfg.model, cfg.loss).state_dict(),
                "config": cfg.model_dump(mode="json")}, path)
    return path


def _redecoding(cfg: FilsConfig, checkpoint: Path, scratch: Path) -> None:
    """Every probe setting and zero-shot decode and encode what they read (a fresh bank folder each time)."""
    section = section_of(cfg)
    head, shard_dir = section.head, cfg.workdir / "shard"
    train_shards, test_shards = shard_paths(shard_dir, section.data.split), shard_paths(shard_dir, cfg.evaluate.split)
    encoder = FrozenEncoder(checkpoint, torch.device("cpu"))
    train_settings = BankSettings(ViewsConfig(temporal=1, spatial=1), section.data.sampling)
    for n, setting in enumerate(probe_settings(cfg)):
        train = bank_features(scratch / f"probe{n}", encoder, train_shards, train_settings)
        test = bank_features(scratch / f"probe{n}", encoder, test_shards, bank_settings(cfg))
        index, targets = train.labelled(head)
        width = train.pooled.shape[-1]
        (probe,) = train_probe_sweep(lambda: LinearHeads(width, head), train.pooled[index, 0],  # noqa: B023
                                     targets, probe_recipe(cfg)(len(index)), [setting])
        test_index, test_targets = test.labelled(head)
        score(head, view_scores(probe, test.pooled[test_index], head),
              Features.scoring_targets(test_targets))
    test = bank_features(scratch / "zero_shot", encoder, test_shards, bank_settings(cfg))
    language_results(cfg, shard_dir, None, test, encoder.language, head, section.benchmark)


def _sweep_seconds(root: Path, tmp: Path, settings: int, seed: int) -> dict[str, float]:
    lrs = [10 ** (-4 + 3 * i / max(1, settings - 1)) for i in range(settings)]
    cfg = _config(root, tmp / "work", lrs)
    if not (cfg.workdir / "shard" / "_SUCCESS.json").is_file():
        run_pipeline(registry(), cfg, ["shard"])
    # Untimed: loads the text encoder and warms every code path, so neither arm pays a first call.
    warm_up = _checkpoint(tmp / f"warm_up_{seed}.pt", 1000 + seed)
    evaluate_frozen(cfg, cfg.workdir / "shard", None, warm_up, expected_protocols(cfg, warm_up, False))
    checkpoint = _checkpoint(tmp / f"checkpoint_{seed}.pt", seed)
    protocols = expected_protocols(cfg, checkpoint, False)
    start = time.perf_counter()
    found = evaluate_frozen(cfg, cfg.workdir / "shard", None, checkpoint, protocols)
    bank_s = time.perf_counter() - start
    start = time.perf_counter()
    evaluate_frozen(cfg, cfg.workdir / "shard", None, checkpoint, protocols)
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    _redecoding(cfg, checkpoint, tmp / f"redecode_{seed}")
    redecode_s = time.perf_counter() - start
    return {"bank_s_per_checkpoint": bank_s, "redecoding_s_per_checkpoint": redecode_s,
            "warm_bank_s_per_checkpoint": warm_s, "redecoding_over_bank": redecode_s / bank_s,
            "clips_decoded": sum(found.decoded.values())}


def _probes_per_second(clips: int, settings: int) -> dict[str, float]:
    head = HeadConfig(num_classes=174)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(clips, 768, generator=generator)
    targets = {"target_label": torch.randint(0, 174, (clips,), generator=generator)}
    recipe = FinetuneRecipe(head=head, global_batch_size=256, total_steps=100, warmup_steps=10)
    grid = [ProbeSetting(10 ** (-4 + i / 2), 0.05) for i in range(settings)]
    make = lambda: LinearHeads(768, head)  # noqa: E731
    start = time.perf_counter()
    train_probe_sweep(make, features, targets, recipe, grid)
    together = settings / (time.perf_counter() - start)
    start = time.perf_counter()
    for setting in grid:
        train_probe_sweep(make, features, targets, recipe, [setting])
    alone = settings / (time.perf_counter() - start)
    return {"probes_per_s_one_pass": together, "probes_per_s_one_at_a_time": alone}


def render_markdown(doc: dict) -> str:
    f, s = doc["figures"], doc["settings"]
    return "\n".join([
        f"`python benchmarks/bench_eval.py` (a new checkpoint of the demo's tiny model on {s['clips']} generated "
        f"clips: {s['settings']} linear-probe settings + zero-shot, {s['views']} test views; {describe_machine(doc)}):",
        "",
        "| sweep, one checkpoint | bank (decode once) | re-decoding per probe | re-decoding / bank | warm bank |",
        "|---|---|---|---|---|",
        f"| seconds | {cell(f['bank_s_per_checkpoint'])} | {cell(f['redecoding_s_per_checkpoint'])} | "
        f"{cell(f['redecoding_over_bank'], '{:.2f}')}x | {cell(f['warm_bank_s_per_checkpoint'])} |",
        "",
        f"Linear probes trained per second on cached features ({s['probe_clips']} clips x 768, 174 classes, "
        f"{s['probe_steps']} steps at batch 256): {cell(f['probes_per_s_one_pass'])} with {s['probe_settings']} "
        f"settings in one pass, {cell(f['probes_per_s_one_at_a_time'])} one at a time.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips-per-class", type=int, default=12)
    parser.add_argument("--settings", type=int, default=5, help="linear-probe settings (lrs) per checkpoint")
    parser.add_argument("--probe-clips", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/eval.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "samples"
        write_samples(root, SampleSettings(clips_per_class=args.clips_per_class, width=320, height=240, frames=32,
                                           validation_every=3, real=False, caption_accuracy=0.8))
        runs = [_sweep_seconds(root, Path(tmp), args.settings, seed) | _probes_per_second(args.probe_clips, 8)
                for seed in range(args.repeats)]
    figures = {key: spread([run[key] for run in runs]) for key in runs[0] if key != "clips_decoded"}
    settings = {"clips": runs[0]["clips_decoded"], "settings": args.settings, "views": "2x1",
                "repeats": args.repeats, "probe_clips": args.probe_clips, "probe_settings": 8, "probe_steps": 100}
    save("eval", settings, figures, args.out)


if __name__ == "__main__":
    main()
