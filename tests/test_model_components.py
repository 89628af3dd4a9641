"""Unit checks of the FILS parts: token pairing, EMA teacher, ActCLIP pooling, masking, schedules, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fils_model.config import LossConfig, ModelConfig, OptimConfig, PretrainConfig, TrainerConfig
from fils_model.encoder import keep_tokens
from fils_model.fils import FILSModel
from fils_model.losses.actclip import ActCLIPLoss, pool_tokens
from fils_model.losses.pixel import tube_pixels
from fils_model.masking import tube_mask
from fils_model.optim import ema_momentum, lr_factor, param_groups
from fils_model.synthetic import SyntheticClips

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
    with torch.no_grad():
        visible = model.encoder(batch["video"], mask)
        got = model.predictor(visible, mask)
        pred = model.predictor
        x = pred.mask_token.expand(3, CFG.num_patches, -1).clone()
        x[~mask] = pred.encoder_to_decoder(visible).reshape(-1, CFG.decoder_dim)
        reference = keep_tokens(pred.blocks(x + pred.pos_embed), mask)
        full_targets = model.teacher.projector(model.teacher.encoder(batch["video"]))
        full_targets = torch.nn.functional.layer_norm(full_targets, full_targets.shape[-1:])
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-4)
    buggy = pred.blocks(torch.cat([pred.encoder_to_decoder(visible) + keep_tokens(pred.pos_embed.expand(3, -1, -1), ~mask),
                                   pred.mask_token + keep_tokens(pred.pos_embed.expand(3, -1, -1), mask)], 1))
    assert not torch.allclose(keep_tokens(buggy.detach(), mask), reference, atol=1e-3)  # FILS' B1 indexing
    with torch.no_grad():
        targets = model.teacher(batch["video"], mask)
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


@pytest.mark.parametrize("source", ["encoder", "tube_embedding"])
def test_actclip_gradient_reaches_only_action_area(source: str) -> None:
    """Through the whole model path, the ActCLIP embedding depends only on action-area tokens."""
    cfg = CFG.model_copy(update={"actclip_source": source})
    torch.manual_seed(0)
    model = FILSModel(cfg, LossConfig(feature_weight=0.0)).eval()
    batch = SyntheticClips(cfg).batch(1, 6)
    action, mask = batch["action_tokens"], batch["mask"]
    embedded = model.encoder.embed(batch["video"]).detach().requires_grad_(True)
    visible = model.encoder.encode(embedded, mask)
    pooled, _ = model._pooled_video(embedded, visible, batch)
    tokens, inside = (embedded, action) if source == "tube_embedding" else (visible, keep_tokens(action, ~mask))
    (grad,) = torch.autograd.grad(pooled.sum(), tokens)
    rows = inside.any(1)
    assert rows.sum() >= 2
    touched = grad.abs().amax(-1) > 0
    assert torch.equal(touched[rows], inside[rows])
    assert touched[~rows].all()  # clips whose action area is invisible fall back to all their tokens


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


def test_tube_mask_same_spatial_mask_every_slice() -> None:
    grid = (4, 14, 14)
    mask = tube_mask(3, grid, 0.9, np.random.default_rng(0)).view(3, *grid)
    assert (mask.sum((2, 3)) == int(0.9 * 196)).all()
    assert (mask == mask[:, :1]).all()
    assert torch.equal(mask.view(3, -1), tube_mask(3, grid, 0.9, np.random.default_rng(0)))  # seeded


def test_pixel_target_matches_hf_videomae() -> None:
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    cfg = VideoMAEConfig(image_size=16, patch_size=8, num_frames=4, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32, decoder_hidden_size=16,
                         decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32)
    hf = VideoMAEForPreTraining(cfg).eval()
    video = torch.randn(2, 3, 4, 16, 16)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :4] = True
    with torch.no_grad():
        out = hf(video.transpose(1, 2), bool_masked_pos=mask)
        hf_x = hf.videomae(video.transpose(1, 2), bool_masked_pos=mask).last_hidden_state
        hf_x = hf.encoder_to_decoder(hf_x)
    from fils_model.losses.pixel import unnormalise

    target = keep_tokens(tube_pixels(unnormalise(video), 2, 8, True), mask)
    expected_loss = torch.nn.functional.mse_loss(out.logits, target)
    torch.testing.assert_close(out.loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert hf_x.shape[1] == 4


def test_weight_decay_groups() -> None:
    model = make_model(pixel_weight=1.0)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim > 1 for p in decay["params"])
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"predictor.mask_token", "actclip.logit_scale", "encoder.norm.weight", "encoder.patch_embed.proj.bias"} <= skipped
    assert all(not n.startswith("teacher.") for n in skipped | {names[id(p)] for p in decay["params"]})
    assert "pos_embed" not in dict(model.named_parameters())  # fixed table, a buffer


def test_schedules() -> None:
    cfg = OptimConfig(warmup_steps=10, base_lr=1e-3, min_lr=1e-5, warmup_start_lr=1e-6)
    assert lr_factor(0, cfg, 100) == pytest.approx(1e-3)
    assert lr_factor(10, cfg, 100) == pytest.approx(1.0)
    assert lr_factor(100, cfg, 100) == pytest.approx(1e-2)
    assert ema_momentum(0, cfg, 100) == pytest.approx(0.996)
    assert ema_momentum(50, cfg, 100) == pytest.approx(0.998)
    assert ema_momentum(100, cfg, 100) == pytest.approx(1.0)


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


def test_activation_checkpointing_gives_same_gradients() -> None:
    batch = SyntheticClips(CFG).batch(0, 2)
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = FILSModel(CFG.model_copy(update={"activation_checkpointing": flag}), LossConfig())
        assert model.encoder.blocks.checkpointing is flag
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
        visible = released.encoder(batch["video"], mask)
        sequence = released.predictor.sequence(visible, mask)
    for b in range(3):
        positions = torch.nonzero(mask[b]).squeeze(1)  # original-order indices into the decoder-order sequence
        torch.testing.assert_close(captured["states"][b], sequence[b, positions])
    assert not torch.allclose(captured["states"], sequence[:, visible.shape[1]:])
