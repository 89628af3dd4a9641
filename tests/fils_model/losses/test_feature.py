"""Feature prediction in language space (fils_model/losses/feature.py): the target normalisation and the
Smooth-L1, against hand-written references and closed-form values."""

from __future__ import annotations

import pytest
import torch

from fils_model.losses.feature import feature_loss, language_targets


def reference_smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float) -> float:
    total = 0.0
    for d in (pred.double() - target.double()).flatten().tolist():
        total += 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta
    return total / pred.numel()


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_smooth_l1_matches_the_hand_written_reference(beta: float) -> None:
    torch.manual_seed(0)
    pred, target = 2 * torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    assert float(feature_loss(pred, target, beta)) == pytest.approx(reference_smooth_l1(pred, target, beta), rel=1e-5)


def test_closed_form_values() -> None:
    """A difference of 0.5 everywhere is quadratic at beta 1 (0.125); of 3 it is linear (2.5)."""
    zeros = torch.zeros(2, 4, 6)
    assert float(feature_loss(zeros + 0.5, zeros)) == pytest.approx(0.125)
    assert float(feature_loss(zeros - 3.0, zeros)) == pytest.approx(2.5)
    assert float(feature_loss(zeros, zeros)) == 0.0


def test_targets_are_standardised_per_token_in_fp32() -> None:
    torch.manual_seed(0)
    projected = (5 + 3 * torch.randn(2, 7, 16)).bfloat16()
    targets = language_targets(projected)
    assert targets.dtype == torch.float32
    torch.testing.assert_close(targets.mean(-1), torch.zeros(2, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(targets.var(-1, unbiased=False), torch.ones(2, 7), atol=1e-3, rtol=0)


def test_unpaired_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        feature_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4))
