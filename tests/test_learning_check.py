"""A short run of benchmarks/bench_learning_check.py: the linear probe on a FILS-pretrained tiny encoder beats the
probe on a randomly initialised one by a clear margin (the paper's claim in miniature).

Recipe and budget are the benchmark's defaults (48 clips per class, half of them validation = 120 validation
clips; 1000 pre-training steps, 1 torch thread, ~30-40 s per run); two pre-training seeds so one run does not decide.
The VideoMAE-style pixel baseline is left to the benchmark to keep this test near a minute and a half."""
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_learning_check.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_learning_check", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fils_probe_beats_random_init_probe():
    bench = _bench()
    table = bench.run(bench.CheckSettings(), seeds=[0, 1], methods=("random_init", "fils"))
    results = table["results"]
    assert set(results) == {"random_init", "fils"}
    assert table["validation_clips"] >= 40
    fils, random = results["fils"], results["random_init"]
    assert fils["mean_top1"] >= random["mean_top1"] + 0.15, table
    assert all(f > r for f, r in zip(fils["probe_top1"], random["probe_top1"])), table
