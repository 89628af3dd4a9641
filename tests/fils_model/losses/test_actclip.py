"""ActCLIP (fils_model/losses/actclip.py): pooling of the action-area tokens and the symmetric InfoNCE, against a
hand-written reference, closed-form values, duplicate captions, autocast and the released code's variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fils_model.losses.actclip import ActCLIPLoss, pool_tokens


def reference_loss(video: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """The CLIP loss written out clip by clip and caption by caption, in float64."""
    v = [row / row.norm() for row in video.double()]
    t = [row / row.norm() for row in text.double()]
    n, total = len(v), 0.0
    for i in range(n):
        to_text = [scale * float(v[i] @ t[j]) for j in range(n)]
        to_video = [scale * float(v[j] @ t[i]) for j in range(n)]
        total += -to_text[i] + math.log(sum(math.exp(x) for x in to_text))
        total += -to_video[i] + math.log(sum(math.exp(x) for x in to_video))
    return total / (2 * n)


@torch.no_grad()
def test_matches_the_hand_written_reference() -> None:
    torch.manual_seed(0)
    loss_fn = ActCLIPLoss(temperature_init=0.1)
    video, text = torch.randn(7, 5), torch.randn(7, 5)
    assert float(loss_fn(video, text)) == pytest.approx(reference_loss(video, text, 10.0), rel=1e-5)


@pytest.mark.parametrize("n, scale", [(2, 1.0), (4, 2.0), (16, 5.0)])
@torch.no_grad()
def test_closed_form_values(n: int, scale: float) -> None:
    """Orthonormal pairs (video i = caption i): logits ``scale * I`` give ``log(1 + (n - 1) e^-scale)``; every
    clip and caption identical: ``log(n)``, whatever the scale."""
    loss_fn = ActCLIPLoss(temperature_init=1 / scale)
    eye = torch.eye(n)
    assert float(loss_fn(3.0 * eye, eye)) == pytest.approx(math.log1p((n - 1) * math.exp(-scale)), rel=1e-5)
    same = torch.ones(n, 3)
    assert float(loss_fn(same, 2.0 * same)) == pytest.approx(math.log(n), rel=1e-6)


def test_actclip_pools_only_action_area_tokens() -> None:
    tokens = torch.randn(2, 6, 4)
    select = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    pooled = pool_tokens(tokens, select, "patch-average")
    torch.testing.assert_close(pooled[0], tokens[0, [0, 2]].mean(0))
    torch.testing.assert_close(pooled[1], tokens[1].mean(0))  # empty action area -> all tokens
    torch.testing.assert_close(pool_tokens(tokens, select, "average"), tokens.mean(1))
    for _ in range(5):
        drawn = pool_tokens(tokens, select, "patch")[0]  # drawn once: pytest 9 unrolls any(<genexpr>) per item
        assert any(torch.equal(drawn, tokens[0, i]) for i in (0, 2))


def test_actclip_loss_symmetric_and_temperature() -> None:
    loss_fn = ActCLIPLoss(temperature_init=0.07, max_scale=100.0)
    assert torch.isclose(loss_fn.logit_scale.exp(), torch.tensor(1 / 0.07))
    text = torch.randn(5, 8)
    perfect, random = loss_fn(text * 3.0, text), loss_fn(torch.randn(5, 8), text)
    assert perfect < random
    with torch.no_grad():
        loss_fn.logit_scale.fill_(10.0)
    loss_fn.clamp_()
    assert torch.isclose(loss_fn.logit_scale.exp(), torch.tensor(100.0))


def test_actclip_duplicate_captions_equal_multi_positive_loss() -> None:
    """Clips sharing a caption are not pushed apart: with identical caption embeddings the one-positive CLIP loss
    equals multi-positive InfoNCE (uniform target over same-caption clips), value and gradient."""
    torch.manual_seed(0)
    loss_fn = ActCLIPLoss()
    a, b = torch.randn(8), torch.randn(8)
    text = torch.stack([a, a, a, b, b])  # two captions, repeated as automatic captions are
    video = torch.randn(5, 8, requires_grad=True)
    plain = loss_fn(video, text)
    (grad_plain,) = torch.autograd.grad(plain, video)
    v = torch.nn.functional.normalize(video, dim=-1)
    t = torch.nn.functional.normalize(text, dim=-1)
    logits = loss_fn.logit_scale.exp() * v @ t.t()
    same = (t @ t.t() > 1 - 1e-6).float()
    target = same / same.sum(1, keepdim=True)
    multi = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                   + torch.nn.functional.cross_entropy(logits.t(), target))
    (grad_multi,) = torch.autograd.grad(multi, video)
    torch.testing.assert_close(plain, multi)
    torch.testing.assert_close(grad_plain, grad_multi)
    # a perfect match of every clip to its caption reaches the floor: mean log(duplicates), not 0
    perfect = loss_fn(text * 10.0, text)
    assert abs(float(perfect.detach()) - float((3 * np.log(3) + 2 * np.log(2)) / 5)) < 0.05


def test_actclip_logits_are_fp32_under_bf16_autocast() -> None:
    """At logit scale 100, bf16 similarities shift logits by up to ~0.4: the loss must not depend on autocast."""
    torch.manual_seed(0)
    loss_fn = ActCLIPLoss(temperature_init=0.01)
    video, text = torch.randn(32, 64), torch.randn(32, 64)
    text[:, :8] += video[:, :8]  # partly matched pairs
    reference = loss_fn(video, text)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss_fn(video, text)
    torch.testing.assert_close(mixed, reference, atol=1e-5, rtol=1e-5)


def test_actclip_without_normalisation_uses_raw_dot_products() -> None:
    """The released code's ClipLoss (B4): scale x raw dot products, no L2 normalisation."""
    torch.manual_seed(0)
    loss_fn = ActCLIPLoss(temperature_init=0.5, normalize=False)
    video, text = torch.randn(6, 4), torch.randn(6, 4)
    logits = 2.0 * video @ text.t()
    labels = torch.arange(6)
    expected = 0.5 * (torch.nn.functional.cross_entropy(logits, labels)
                      + torch.nn.functional.cross_entropy(logits.t(), labels))
    torch.testing.assert_close(loss_fn(video, text), expected)
