"""Bootstrap intervals over clips: a hand-written resampling loop as the reference, closed-form cases, and the
normal approximation's width for a proportion."""
import math

import numpy as np
import pytest

from stages.evaluate.bootstrap import intervals, metric_draws, paired_differences, percentile_interval, resample


def _accuracy(correct: np.ndarray):
    return lambda pick: {"top1": float(correct[pick].mean())}


def test_intervals_match_a_hand_written_bootstrap():
    correct = np.random.default_rng(0).random(200) < 0.6
    draws = list(resample(len(correct), 500, seed=7))
    got = intervals({"top1": correct.mean()}, metric_draws(_accuracy(correct), draws))["top1"]
    picks = np.random.default_rng(7).integers(0, 200, (500, 200))  # the same draws, by hand
    values = sorted(correct[pick].mean() for pick in picks)
    assert got.value == correct.mean()
    assert got.low == pytest.approx(np.percentile(values, 2.5)) and got.high == pytest.approx(np.percentile(values, 97.5))


def test_width_of_a_proportion_matches_the_normal_approximation():
    correct = np.random.default_rng(1).random(2000) < 0.3
    p = correct.mean()
    got = intervals({"top1": p}, metric_draws(_accuracy(correct), resample(2000, 2000, seed=0)))["top1"]
    half = 1.96 * math.sqrt(p * (1 - p) / 2000)
    assert (got.high - got.low) / 2 == pytest.approx(half, rel=0.1)


def test_paired_differences_closed_forms_and_pairing():
    rng = np.random.default_rng(2)
    a = rng.random(300) < 0.7
    draws = list(resample(300, 400, seed=3))
    draws_a = metric_draws(_accuracy(a), draws)
    same = paired_differences({"top1": a.mean()}, draws_a, {"top1": a.mean()}, draws_a)["top1"]
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero
    always, never = np.ones(300, bool), np.zeros(300, bool)
    perfect = paired_differences({"top1": 1.0}, metric_draws(_accuracy(always), draws),
                                 {"top1": 0.0}, metric_draws(_accuracy(never), draws))["top1"]
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0) and perfect.excludes_zero
    # b is a, wrong on 15 more clips: the paired gain is 0.05 on every draw up to resampling of those clips, much
    # narrower than the two single intervals, whose halves are ~0.05 each.
    b = a.copy()
    b[np.flatnonzero(a)[:15]] = False
    draws_b = metric_draws(_accuracy(b), draws)
    gain = paired_differences({"top1": a.mean()}, draws_a, {"top1": b.mean()}, draws_b)["top1"]
    single = intervals({"top1": b.mean()}, draws_b)["top1"]
    assert gain.value == pytest.approx(0.05) and gain.excludes_zero
    assert gain.high - gain.low < (single.high - single.low) / 2


def test_no_resamples_gives_no_interval():
    got = percentile_interval(0.5, np.array([]))
    assert got.value == 0.5 and math.isnan(got.low) and math.isnan(got.high)
    assert metric_draws(lambda pick: {"top1": 0.0}, resample(10, 0, seed=0)) == {}


@pytest.mark.parametrize("task", ["single_label", "epic_action", "epic_verb_noun", "multi_label"])
def test_a_resampled_clip_set_scores_as_if_it_were_the_evaluation_set(task):
    """What the bootstrap computes from per-clip outcomes equals scoring the resampled clips from scratch."""
    from fils_model.finetune_config import HeadConfig
    from stages.evaluate.scoring import score

    rng = np.random.default_rng(4)
    n, classes, verbs, nouns = 60, 12, 4, 6
    head = HeadConfig(task=task, num_classes=classes if task != "epic_verb_noun" else 0, num_verbs=verbs,
                      num_nouns=nouns)
    verb_of, noun_of = rng.integers(0, verbs, classes), rng.integers(0, nouns, classes)
    if task == "epic_verb_noun":
        scores = {"verb": rng.random((n, verbs)), "noun": rng.random((n, nouns))}
        targets = {"verb": rng.integers(0, verbs, n), "noun": rng.integers(0, nouns, n)}
    elif task == "multi_label":
        scores, targets = {"label": rng.random((n, classes))}, {"label": (rng.random((n, classes)) < 0.2).astype(int)}
    else:
        key = "action" if task == "epic_action" else "label"
        scores, targets = {key: rng.random((n, classes))}, {key: rng.integers(0, classes, n)}
    scored = score(head, scores, targets, verb_of, noun_of)
    outcomes = scored.outcomes
    assert outcomes.metrics() == scored.metrics
    for pick in resample(n, 5, seed=5):
        expected = score(head, {k: v[pick] for k, v in scores.items()}, {k: v[pick] for k, v in targets.items()},
                         verb_of, noun_of).metrics
        assert outcomes.metrics(pick) == pytest.approx(expected)
