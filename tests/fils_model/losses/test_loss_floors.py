"""Each trivial floor equals the loss it belongs to at no learning: computed through the real loss code."""
import math

import pytest
import torch
import torch.nn.functional as F

from fils_model.config import LossConfig, ModelConfig
from fils_model.loss_floors import loss_floors, normalised_pixel_floor, smooth_l1_gaussian_floor
from fils_model.losses.actclip import ActCLIPLoss
from fils_model.losses.feature import feature_loss, language_targets
from fils_model.losses.pixel import pixel_loss, tube_pixels


@pytest.mark.parametrize("batch", [2, 16, 256])
def test_actclip_floor_is_its_loss_when_video_features_say_nothing(batch):
    torch.manual_seed(0)
    silent = torch.zeros(batch, 32)  # normalised to 0: every logit 0, in both directions
    loss = ActCLIPLoss(gather_negatives=False)(silent, torch.randn(batch, 32))
    floors = loss_floors(LossConfig(feature_weight=0.0), ModelConfig(size="tiny"), batch)
    assert floors["loss_actclip"] == pytest.approx(math.log(batch)) == pytest.approx(loss.item(), abs=1e-5)


def test_normalised_pixel_floor_is_the_loss_of_predicting_zero_exactly():
    model = ModelConfig(size="tiny", img_size=32, patch_size=8, num_frames=4)
    target = tube_pixels(torch.rand(3, 3, 4, 32, 32), model.tubelet_size, model.patch_size, normalise=True)
    loss = pixel_loss(torch.zeros_like(target), target).item()
    floor = normalised_pixel_floor(model.tubelet_size * model.patch_size**2)
    assert floor == pytest.approx(127 / 128) and loss == pytest.approx(floor, rel=1e-4)
    cfg = LossConfig(actclip_weight=0.0, feature_weight=0.0, pixel_weight=1.0)
    assert loss_floors(cfg, model, 8) == {"loss_pixel": floor, "loss": floor}


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_smooth_l1_floor_matches_predicting_zero_for_layernormed_gaussian_targets(beta):
    torch.manual_seed(beta)
    target = language_targets(torch.randn(4096, 512))  # what the teacher's projected tokens become
    loss = feature_loss(torch.zeros_like(target), target, beta).item()
    assert smooth_l1_gaussian_floor(beta) == pytest.approx(loss, abs=2e-3)


def test_smooth_l1_floor_limits_and_reference_value():
    # beta -> 0: E|z| = sqrt(2/pi); beta -> inf: E[z^2] / (2 beta) -> 0; beta = 1 by hand: 0.0994 + 0.3252.
    assert smooth_l1_gaussian_floor(1e-6) == pytest.approx(math.sqrt(2 / math.pi), abs=1e-5)
    assert smooth_l1_gaussian_floor(50.0) == pytest.approx(1 / 100, rel=1e-6)
    assert smooth_l1_gaussian_floor(1.0) == pytest.approx(0.4246, abs=1e-4)
    reference = F.smooth_l1_loss(torch.randn(4_000_000, generator=torch.Generator().manual_seed(1)),
                                 torch.zeros(4_000_000), beta=1.0).item()
    assert smooth_l1_gaussian_floor(1.0) == pytest.approx(reference, abs=1e-3)


def test_total_floor_is_the_weighted_sum_and_absent_when_a_term_has_none():
    model = ModelConfig(size="tiny")
    fils = loss_floors(LossConfig(actclip_weight=1.0, feature_weight=0.5), model, 16)
    assert fils["loss"] == pytest.approx(math.log(16) + 0.5 * smooth_l1_gaussian_floor(1.0))
    raw_pixels = loss_floors(LossConfig(pixel_weight=1.0, norm_pix_loss=False), model, 16)
    assert "loss_pixel" not in raw_pixels and "loss" not in raw_pixels
