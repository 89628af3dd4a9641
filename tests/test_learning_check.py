"""The short version of benchmarks/bench_learning_check.py: FILS against its control and random init.

Same generated data, noisy captions (motion right 60 % of the time), estimated action areas and probes as the
benchmark, at a smaller size (fewer clips and steps, two seeds, no learning-rate sweep: every arm uses the same
rate). The margins are derived from the spread the benchmark measured (README, learning-check table): see
``MARGIN`` below."""
import importlib
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
SHORT = dict(train_per_class=200, tune_per_class=4, validation_per_class=60, steps=2000, probe_steps=300)
MARGIN = 0.05


def _bench():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # spawned worker processes inherit sys.path and import it by name
    return importlib.import_module("bench_learning_check")


def test_fils_beats_the_shuffled_caption_control_and_random_init(tmp_path):
    bench = _bench()
    table = bench.run(bench.CheckSettings(**SHORT), seeds=[0, 1],
                      arms=("random_init", "fils", "fils_shuffled_captions"), out=tmp_path, jobs=2, sweep=False)
    assert table["clips"]["validation"] == 300
    paired = table["fils_minus_arm"]
    for arm in ("fils_shuffled_captions", "random_init"):
        assert paired[arm]["linear_motion"]["mean"] >= MARGIN, (arm, table["arms"], paired)
    for arm in ("fils", "fils_shuffled_captions"):  # the losses left their trivial floors
        losses = table["arms"][arm]["losses"]["loss_actclip"]
        assert losses["last"] < losses["first"] and losses["first"] > 0.9 * losses["floor"]
