"""Every metric equals scikit-learn's on random data; marginalisation and view averaging on hand-made cases."""
import numpy as np
import pytest
from sklearn import metrics as skm

from fils_model.finetune_config import HeadConfig
from stages.evaluate import metrics as m
from stages.evaluate.scoring import score

RNG = np.random.default_rng(0)
N, K = 300, 12
SCORES = RNG.random((N, K))
LABELS = RNG.integers(0, K - 2, N)  # the last two classes never occur in the ground truth


@pytest.mark.parametrize("k", [1, 5])
def test_topk_matches_sklearn(k):
    assert m.topk_accuracy(SCORES, LABELS, k) == pytest.approx(
        skm.top_k_accuracy_score(LABELS, SCORES, k=k, labels=np.arange(K)))


def test_mean_class_accuracy_and_confusion_match_sklearn():
    predictions = SCORES.argmax(1)
    assert m.mean_class_accuracy(SCORES, LABELS) == pytest.approx(skm.balanced_accuracy_score(LABELS, predictions))
    np.testing.assert_array_equal(m.confusion_matrix(LABELS, predictions, K),
                                  skm.confusion_matrix(LABELS, predictions, labels=np.arange(K)))


def test_charades_map_matches_sklearn_and_has_no_offset():
    targets = (RNG.random((N, K)) < 0.15).astype(int)
    targets[:, 3] = 0  # a class without positives is skipped
    targets[:20] = 0  # clips without any label are dropped (LaViLa's charades_map)
    keep = targets.sum(1) > 0
    expected = np.mean([skm.average_precision_score(targets[keep, c], SCORES[keep, c]) for c in range(K) if c != 3])
    assert m.mean_average_precision(SCORES, targets) == pytest.approx(expected)
    perfect = targets + 0.01 * RNG.random(targets.shape)
    assert m.mean_average_precision(perfect, targets) == pytest.approx(1.0)


def test_epic_marginalisation_hand_made():
    # actions: 0=(verb 0, noun 1), 1=(verb 0, noun 0), 2=(verb 1, noun 1), 3=(verb 2, noun 0)
    verbs, nouns = np.array([0, 0, 1, 2]), np.array([1, 0, 1, 0])
    probs = np.array([[0.30, 0.25, 0.40, 0.05]])
    np.testing.assert_allclose(m.marginalise(probs, verbs, 3), [[0.55, 0.40, 0.05]])
    np.testing.assert_allclose(m.marginalise(probs, nouns, 2), [[0.30, 0.70]])
    # the most likely action (2) has verb 1, but verb 0 wins after marginalising; the true action is 0
    head = HeadConfig(task="epic_action", num_classes=4, num_verbs=3, num_nouns=2)
    scored = score(head, {"action": probs}, {"action": np.array([0])}, verbs, nouns)
    assert scored.metrics["action_top1"] == 0.0
    assert scored.metrics["verb_top1"] == 1.0 and scored.metrics["noun_top1"] == 1.0


def test_view_averaging_is_mean_of_softmax():
    logits = np.array([[[10.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])  # one confident view vs two mild ones
    expected = np.mean([np.exp(v) / np.exp(v).sum() for v in logits[0]], axis=0)
    np.testing.assert_allclose(m.average_views(logits)[0], expected)
    assert m.average_views(logits)[0].argmax() == 0  # averaging logits instead would also say 0, votes would say 1
    np.testing.assert_allclose(m.average_views(np.zeros((1, 2, 3)), multi_label=True), 0.5)
