"""Unit checks of the FILS parts: token pairing, EMA teacher, ActCLIP pooling, masking, schedules, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fils_model.config import LossConfig, ModelConfig, OptimConfig, PretrainConfig, TrainerConfig
from fils_model.ema import ema_momentum
from fils_model.fils import FILSModel
from fils_model.finetune_config import FinetuneOptim
from fils_model.masking import tube_mask
from fils_model.optim import build_optimizer, build_scheduler
from fils_model.token_index import split_tokens
from tests.builders.synthetic_clips import SyntheticClips
from tests.fils_model.reference import rows_where

torch.set_num_threads(1)
CFG = ModelConfig(size="tiny", img_size=32, num_frames=8, patch_size=8, text_dim=16, mask_ratio=0.75)


def make_model(**loss) -> FILSModel:
    torch.manual_seed(0)
    return FILSModel(CFG, LossConfig(**loss))


def test_predictions_paired_with_targets_token_by_token() -> None:
    """Predictor output i must be the state of the i-th masked position (ascending), like ``target[mask]``.

    Reference: run the same decoder blocks on the sequence in *original* token order (attention without
    relative biases is permutation-equivariant) and read the masked positions with the boolean mask.
    """
    model = make_model().eval()
    batch = SyntheticClips(CFG).batch(0, 3)
    mask = batch["mask"]
    split = split_tokens(mask, CFG.num_masked)
    with torch.no_grad():
        visible = model.encoder(batch["video"], split.visible)
        got = model.predictor(visible, split)
        pred = model.predictor
        x = pred.mask_token.expand(3, CFG.num_patches, -1).clone()
        x[~mask] = pred.encoder_to_decoder(visible).reshape(-1, CFG.decoder_dim)
        reference = rows_where(pred.blocks(x + pred.pos_embed), mask)
        full_targets = model.teacher.projector(model.teacher.encoder(batch["video"]))
        full_targets = torch.nn.functional.layer_norm(full_targets, full_targets.shape[-1:])
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-4)
    buggy = pred.blocks(torch.cat([pred.encoder_to_decoder(visible) + rows_where(pred.pos_embed.expand(3, -1, -1), ~mask),
                                   pred.mask_token + rows_where(pred.pos_embed.expand(3, -1, -1), mask)], 1))
    assert not torch.allclose(rows_where(buggy.detach(), mask), reference, atol=1e-3)  # FILS' B1 indexing
    with torch.no_grad():
        targets = model.teacher(batch["video"], split.masked)
    for b in range(3):  # target slot i is token argwhere(mask)[i] of the full-clip teacher output
        index = torch.nonzero(mask[b]).squeeze(1)
        torch.testing.assert_close(targets[b], full_targets[b, index], atol=1e-5, rtol=1e-4)


def test_teacher_gets_no_gradient_and_moves_by_ema_formula() -> None:
    model = make_model()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    batch = SyntheticClips(CFG).batch(0, 4)
    teacher_params = dict(model.teacher.named_parameters())
    assert all(not p.requires_grad for p in teacher_params.values())
    assert not any(p is q for p in teacher_params.values() for q in optimizer.param_groups[0]["params"])
    for step in range(3):
        before = {k: v.detach().clone() for k, v in teacher_params.items()}
        model(batch)["loss"].backward()
        assert all(p.grad is None for p in teacher_params.values())
        optimizer.step()
        optimizer.zero_grad()
        student = dict(model.encoder.named_parameters(prefix="encoder")) | dict(
            model.projector.named_parameters(prefix="projector")
        )
        momentum = 0.9 + 0.03 * step
        model.after_step(momentum)
        for name, value in teacher_params.items():
            expected = momentum * before[name] + (1 - momentum) * student[name].detach()
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)  # float32 rounding
    assert not torch.equal(teacher_params["encoder.norm.weight"], model.encoder.norm.weight)


@pytest.mark.parametrize("source", ["encoder", "tube_embedding"])
def test_actclip_gradient_reaches_only_action_area(source: str) -> None:
    """Through the whole model path, the ActCLIP embedding depends only on action-area tokens."""
    cfg = CFG.model_copy(update={"actclip_source": source})
    torch.manual_seed(0)
    model = FILSModel(cfg, LossConfig(feature_weight=0.0)).eval()
    batch = SyntheticClips(cfg).batch(1, 6)
    action, mask = batch["action_tokens"], batch["mask"]
    embedded = model.encoder.embed(batch["video"]).detach().requires_grad_(True)
    split = split_tokens(mask, cfg.num_masked)
    visible = model.encoder.encode(embedded, split.visible)
    pooled, _ = model._pooled_video(embedded, visible, split, batch)
    tokens, inside = (embedded, action) if source == "tube_embedding" else (visible, rows_where(action, ~mask))
    (grad,) = torch.autograd.grad(pooled.sum(), tokens)
    rows = inside.any(1)
    assert rows.sum() >= 2
    touched = grad.abs().amax(-1) > 0
    assert torch.equal(touched[rows], inside[rows])
    assert touched[~rows].all()  # clips whose action area is invisible fall back to all their tokens


def test_tube_mask_same_spatial_mask_every_slice() -> None:
    grid = (4, 14, 14)
    mask = tube_mask(3, grid, 0.9, np.random.default_rng(0)).view(3, *grid)
    assert (mask.sum((2, 3)) == int(0.9 * 196)).all()
    assert (mask == mask[:, :1]).all()
    assert torch.equal(mask.view(3, -1), tube_mask(3, grid, 0.9, np.random.default_rng(0)))  # seeded


def test_weight_decay_groups() -> None:
    model = make_model(pixel_weight=1.0)
    groups = build_optimizer(model, OptimConfig(weight_decay=0.05), 256).param_groups
    decay = [p for g in groups if g["weight_decay"] == 0.05 for p in g["params"]]
    no_decay = [p for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay and all(p.ndim > 1 for p in decay)
    skipped = {names[id(p)] for p in no_decay}
    assert {"predictor.mask_token", "actclip.logit_scale", "encoder.norm.weight", "encoder.patch_embed.proj.bias"} <= skipped
    assert all(not n.startswith("teacher.") for n in skipped | {names[id(p)] for p in decay})
    assert "pos_embed" not in dict(model.named_parameters())  # fixed table, a buffer


@pytest.mark.parametrize("optim", [OptimConfig, FinetuneOptim])
def test_schedules(optim) -> None:
    """Every learning rate of the pre-training and the fine-tuning settings is per 256 clips."""
    cfg = optim(base_lr=1e-3, min_lr=1e-5, warmup_start_lr=1e-6)
    for batch, scale in ((256, 1.0), (64, 0.25)):
        optimizer = build_optimizer(torch.nn.Linear(2, 2), cfg, batch)
        scheduler = build_scheduler(optimizer, cfg, total_steps=100, warmup_steps=10, global_batch_size=batch)

        def lr(step: int, optimizer=optimizer, scheduler=scheduler) -> float:
            scheduler.step_update(step)
            return optimizer.param_groups[0]["lr"]

        assert lr(0) == pytest.approx(1e-6 * scale)
        assert lr(5) == pytest.approx((1e-6 + 0.5 * (1e-3 - 1e-6)) * scale)
        assert lr(10) == pytest.approx(1e-3 * scale)
        assert lr(55) == pytest.approx((1e-5 + 0.5 * (1e-3 - 1e-5)) * scale)  # half-way down the cosine
        assert lr(100) == pytest.approx(1e-5 * scale)
    ocfg = OptimConfig()
    assert ema_momentum(0, ocfg, 100) == pytest.approx(0.996)
    assert ema_momentum(50, ocfg, 100) == pytest.approx(0.998)
    assert ema_momentum(100, ocfg, 100) == pytest.approx(1.0)


def test_config_presets_and_validation() -> None:
    base = ModelConfig()
    assert (base.embed_dim, base.depth, base.num_heads, base.num_patches) == (768, 12, 12, 1568)
    assert (base.decoder_depth, base.decoder_dim, base.decoder_heads, base.projector_hidden_dim) == (6, 384, 6, 3072)
    assert ModelConfig(size="small", depth=4).depth == 4
    with pytest.raises(ValidationError, match="multiple of patch_size"):
        ModelConfig(img_size=100)
    with pytest.raises(ValidationError, match="all loss weights are 0"):
        LossConfig(actclip_weight=0, feature_weight=0)
    with pytest.raises(ValidationError, match="warmup_steps"):
        PretrainConfig(optim=OptimConfig(warmup_steps=5), trainer=TrainerConfig(total_steps=5, global_batch_size=2))
    with pytest.raises(ValidationError, match="Extra inputs"):
        TrainerConfig(total_steps=1, global_batch_size=1, lr=3)


@pytest.mark.parametrize("parts", [["encoder"], ["predictor"], True])
def test_activation_checkpointing_gives_same_gradients(parts: list[str] | bool) -> None:
    """Per part, or ``true`` for both (older configs); nothing is recomputed by default."""
    batch = SyntheticClips(CFG).batch(0, 2)
    grads = []
    for setting in (False, parts):
        torch.manual_seed(0)
        cfg = ModelConfig(**(CFG.model_dump() | {"activation_checkpointing": setting}))
        model = FILSModel(cfg, LossConfig())
        chosen = {"encoder", "predictor"} if setting is True else set(setting or ())
        assert model.encoder.blocks.checkpointing == ("encoder" in chosen)
        assert model.predictor.blocks.checkpointing == ("predictor" in chosen)
        model(batch)["loss"].backward()
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


LOSS_MIXES = {
    "pixel_only (VideoMAE baseline)": dict(actclip_weight=0.0, feature_weight=0.0, pixel_weight=1.0),
    "feature_only": dict(actclip_weight=0.0),
    "actclip_only": dict(feature_weight=0.0),
    "fils": dict(),
    "fils_with_pixel": dict(pixel_weight=0.5),
}


@pytest.mark.parametrize("source", ["encoder", "tube_embedding"])
@pytest.mark.parametrize("mix", list(LOSS_MIXES))
def test_every_built_parameter_gets_a_gradient_unless_the_model_says_so(mix: str, source: str) -> None:
    """DDP fails on parameters that no loss reads ("Expected to have finished reduction"), unless it is told:
    the model builds only what its losses read, and :attr:`has_unused_parameters` names the one exception."""
    cfg = CFG.model_copy(update={"actclip_source": source, "target_source": source})
    torch.manual_seed(0)
    model = FILSModel(cfg, LossConfig(**LOSS_MIXES[mix]))
    model(SyntheticClips(cfg).batch(0, 4))["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if model.has_unused_parameters:
        assert missing and all(n.startswith("encoder.") for n in missing), missing
    else:
        assert missing == []
    if mix.startswith("pixel_only"):
        assert model.projector is None and model.teacher is None and model.actclip is None


def test_actclip_fallback_rate_is_reported() -> None:
    """Clips whose action area holds no visible token fall back to all visible tokens; the model reports how
    many did (at 90 % masking a small box is often invisible, and the pooling then silently averages)."""
    model = make_model(feature_weight=0.0)
    batch = SyntheticClips(CFG).batch(0, 6)
    visible_count = int((~batch["mask"][0]).sum())
    empty = [0, 3]
    for b in empty:  # hide the action area: the visible tokens are all outside it
        outside = (~batch["action_tokens"][b]).nonzero().squeeze(1)
        batch["mask"][b, :] = True
        batch["mask"][b, outside[:visible_count]] = False
    batch["visible_index"], batch["masked_index"] = split_tokens(batch["mask"], CFG.num_masked)
    inside = (batch["action_tokens"] & ~batch["mask"]).any(1)
    out = model(batch)
    assert out["actclip_fallback_rate"].item() == pytest.approx(float((~inside).float().mean()))
    assert out["actclip_fallback_rate"].item() >= len(empty) / 6


def test_released_code_pairing_indexes_decoder_order_with_the_original_mask() -> None:
    """``feature_pairing: released_code`` (B1): the prediction compared with masked token i is the decoder
    output at the i-th masked *original* position of the ``[visible ; masked]`` sequence."""
    aligned = make_model(actclip_weight=0.0)
    released = make_model(actclip_weight=0.0, feature_pairing="released_code")
    released.load_state_dict(aligned.state_dict())
    batch = SyntheticClips(CFG).batch(0, 3)
    mask = batch["mask"]
    captured: dict[str, torch.Tensor] = {}
    released.feature_head.register_forward_hook(lambda m, i, o: captured.update(states=i[0]))
    with torch.no_grad():
        released(batch)
        split = split_tokens(mask, CFG.num_masked)
        visible = released.encoder(batch["video"], split.visible)
        sequence = released.predictor.sequence(visible, split)
    for b in range(3):
        positions = torch.nonzero(mask[b]).squeeze(1)  # original-order indices into the decoder-order sequence
        torch.testing.assert_close(captured["states"][b], sequence[b, positions])
    assert not torch.allclose(captured["states"], sequence[:, visible.shape[1]:])
