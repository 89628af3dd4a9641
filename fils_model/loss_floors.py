"""The value each pre-training loss term takes when the model has learned nothing: the line its curve must fall
below for the term to be doing anything.

* ActCLIP (InfoNCE over ``candidates`` captions): uniform logits give ``ln(candidates)``.
* Pixel reconstruction with per-tube normalised targets (VideoMAE's ``norm_pix_loss``): predicting 0, the targets'
  mean, gives their mean square, ``(n - 1) / n`` for ``n`` pixels per tube and channel (unbiased std).
* Feature prediction (Smooth-L1 with ``beta`` against LayerNorm'd targets): predicting 0 against unit-variance
  Gaussian targets gives ``E[smooth_l1(z)]``, closed form below. A curve far *below* it is not proof of learning:
  a collapsed teacher makes its targets trivially predictable (the collapse diagnostics say which).
"""
from __future__ import annotations

import math

from fils_model.config import LossConfig, ModelConfig

LOSS_FLOORS_JSON = "loss_floors.json"  # the trainer writes them next to metrics.csv, for plots against them


def infonce_floor(candidates: int) -> float:
    return math.log(candidates)


def normalised_pixel_floor(pixels_per_tube: int) -> float:
    return (pixels_per_tube - 1) / pixels_per_tube


def smooth_l1_gaussian_floor(beta: float) -> float:
    """``E[smooth_l1_beta(z)]`` for ``z ~ N(0, 1)``: ``0.5 z^2 / beta`` inside ``|z| < beta``, ``|z| - beta / 2``
    outside."""
    density = math.exp(-beta**2 / 2) / math.sqrt(2 * math.pi)  # phi(beta)
    inside = math.erf(beta / math.sqrt(2))  # P(|z| < beta)
    square_inside = inside - 2 * beta * density  # E[z^2; |z| < beta]
    return square_inside / (2 * beta) + 2 * density - beta / 2 * (1 - inside)


def loss_floors(loss: LossConfig, model: ModelConfig, contrastive_candidates: int) -> dict[str, float]:
    """Floors of the active terms, keyed by the names the trainer logs them under, and of their weighted sum
    (``loss``) when every active term has one."""
    floors: dict[str, float] = {}
    if loss.actclip_weight > 0:
        floors["loss_actclip"] = infonce_floor(contrastive_candidates)
    if loss.feature_weight > 0:
        floors["loss_feature"] = smooth_l1_gaussian_floor(loss.smooth_l1_beta)
    if loss.pixel_weight > 0 and loss.norm_pix_loss:
        floors["loss_pixel"] = normalised_pixel_floor(model.tubelet_size * model.patch_size**2)
    weights = {"loss_actclip": loss.actclip_weight, "loss_feature": loss.feature_weight, "loss_pixel": loss.pixel_weight}
    active = [name for name, weight in weights.items() if weight > 0]
    if all(name in floors for name in active):
        floors["loss"] = sum(weights[name] * floors[name] for name in active)
    return floors
