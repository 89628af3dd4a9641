"""The training step without host synchronisation: token selection by index tensors gives exactly the outputs of
boolean selection, the compiled parts have no graph break and give the eager loss and gradients, logged values are
reduced only on log steps, and AdamW is fused where asked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fils_model import trainer as trainer_module
from fils_model.checkpoint import CheckpointError
from fils_model.config import LossConfig, ModelConfig, OptimConfig, PretrainConfig, TrainerConfig
from fils_model.fils import FILSModel
from fils_model.losses.actclip import pool_tokens
from fils_model.losses.feature import feature_loss, language_targets
from fils_model.masking import tube_mask
from fils_model.optim import build_optimizer
from fils_model.pretrain_trainer import PretrainTrainer
from fils_model.token_index import gather_tokens, split_tokens
from tests.builders.synthetic_clips import SyntheticClips
from tests.fils_model.reference import rows_where

torch.set_num_threads(1)
CFG = ModelConfig(size="tiny", img_size=32, num_frames=8, patch_size=8, text_dim=16, mask_ratio=0.75)


def test_split_selects_what_the_boolean_mask_selects() -> None:
    mask = tube_mask(5, (4, 6, 6), 0.9, np.random.default_rng(3))
    num_masked = int(mask[0].sum())
    split = split_tokens(mask, num_masked)
    assert split.visible.shape == (5, 4 * 36 - num_masked) and split.masked.shape == (5, num_masked)
    tokens = torch.randn(5, 4 * 36, 7)
    assert torch.equal(gather_tokens(tokens, split.visible), rows_where(tokens, ~mask))
    assert torch.equal(gather_tokens(tokens, split.masked), rows_where(tokens, mask))
    assert torch.equal(gather_tokens(mask, split.masked), torch.ones_like(split.masked, dtype=torch.bool))
    assert (split.visible.diff(dim=1) > 0).all() and (split.masked.diff(dim=1) > 0).all()


def boolean_forward(model: FILSModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The FILS forward as it was written with boolean selection (feature + ActCLIP, paper-intent sources)."""
    video, mask = batch["video"], batch["mask"]
    enc, pred, teacher = model.encoder, model.predictor, model.teacher
    visible = enc.norm(enc.blocks(rows_where(enc.embed(video) + enc.pos_embed, ~mask)))
    pos = pred.pos_embed.expand(len(video), -1, -1)
    sequence = pred.blocks(torch.cat([pred.encoder_to_decoder(visible) + rows_where(pos, ~mask),
                                      pred.mask_token + rows_where(pos, mask)], dim=1))
    states = sequence[:, visible.shape[1]:]
    target = language_targets(teacher.projector(rows_where(teacher.encoder(video), mask)))
    pooled = pool_tokens(model.projector(visible), rows_where(batch["action_tokens"], ~mask), "patch-average")
    return {"loss_feature": feature_loss(model.projector(model.feature_head(states)), target),
            "loss_actclip": model.actclip(pooled, batch["text_embedding"])}


@pytest.mark.parametrize("indices_from", ["collate", "mask"])
def test_index_selection_gives_exactly_the_boolean_outputs(indices_from: str) -> None:
    torch.manual_seed(0)
    model = FILSModel(CFG, LossConfig())
    batch = SyntheticClips(CFG).batch(0, 4)
    if indices_from == "mask":  # a caller without the loader's collate
        del batch["visible_index"], batch["masked_index"]
    out = model(batch)
    reference = boolean_forward(model, batch)
    for name, value in reference.items():
        assert torch.equal(out[name], value), name
    grads = torch.autograd.grad(out["loss"], [p for p in model.parameters() if p.requires_grad])
    ref_grads = torch.autograd.grad(reference["loss_feature"] + reference["loss_actclip"],
                                    [p for p in model.parameters() if p.requires_grad])
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))


def test_compiled_parts_have_no_graph_break_and_match_eager() -> None:
    torch.manual_seed(0)
    model = FILSModel(CFG, LossConfig(pixel_weight=0.5))
    batch = SyntheticClips(CFG).batch(1, 4)
    split = split_tokens(batch["mask"], CFG.num_masked)
    tokens = model.encoder.embed(batch["video"])
    visible = model.encoder.encode(tokens, split.visible)
    for part, args in ((model.encoder.encode, (tokens, split.visible)), (model.predictor.sequence, (visible, split)),
                       (model.teacher.forward, (batch["video"], split.masked)), (model, (batch,))):
        explained = torch._dynamo.explain(part)(*args)
        assert (explained.graph_break_count, explained.graph_count) == (0, 1), explained.break_reasons
    torch._dynamo.reset()
    params = [p for p in model.parameters() if p.requires_grad]
    eager = model(batch)
    eager_grads = torch.autograd.grad(eager["loss"], params)
    model.compile_parts()
    compiled = model(batch)
    compiled_grads = torch.autograd.grad(compiled["loss"], params)
    for name in ("loss_feature", "loss_actclip", "loss_pixel", "loss"):
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-5)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert "encoder.blocks.0.attn.qkv.weight" in model.state_dict()  # checkpoints load into either


def test_logged_values_are_reduced_only_on_log_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    reduce = trainer_module.mean_over_ranks
    monkeypatch.setattr(trainer_module, "mean_over_ranks", lambda values: calls.append(1) or reduce(values))
    cfg = PretrainConfig(model=CFG, optim=OptimConfig(warmup_steps=1),
                         trainer=TrainerConfig(total_steps=12, global_batch_size=4, log_every=5, diagnostics_every=100,
                                               tensorboard=False))
    trainer = PretrainTrainer(cfg, tmp_path)
    values = trainer.train_step(SyntheticClips(CFG).batch(0, 4))
    assert isinstance(values["loss"], torch.Tensor)
    assert "grad_norm" not in values  # without clipping the norm is made on log steps only
    assert not calls
    last = trainer.fit(SyntheticClips(CFG).stream(1, 4))
    assert len(calls) == 3  # the log steps 5, 10 and 12 (the last), not the other 9
    assert trainer.step == 12
    logged = (tmp_path / "metrics.csv").read_text().splitlines()[1:]
    assert sorted({int(row.split(",")[0]) for row in logged}) == [5, 10, 12]
    assert set(last) >= {"loss", "loss_feature", "loss_actclip", "grad_norm", "lr", "clips_per_s"}
    assert all(isinstance(v, float) for v in last.values())


def test_fused_adamw_where_asked() -> None:
    model = torch.nn.Linear(4, 4)
    assert build_optimizer(model, OptimConfig(), 256, fused=True).defaults["fused"] is True
    assert not build_optimizer(model, OptimConfig(), 256).defaults.get("fused")


def test_a_run_resumes_under_other_compute_only_settings(tmp_path: Path) -> None:
    """Activation checkpointing and compilation say how a run is computed: changing them between attempts resumes
    (a changed architecture setting does not)."""
    def config(**model) -> PretrainConfig:
        return PretrainConfig(model=ModelConfig(**(CFG.model_dump() | model)), optim=OptimConfig(warmup_steps=1),
                              trainer=TrainerConfig(total_steps=4, global_batch_size=4, checkpoint_every=2,
                                                    tensorboard=False))

    PretrainTrainer(config(activation_checkpointing=True), tmp_path).fit(SyntheticClips(CFG).stream(0, 4))
    resumed = PretrainTrainer(config(activation_checkpointing=["predictor"]), tmp_path)
    assert resumed.step == 4
    with pytest.raises(CheckpointError, match="different .model. config"):
        PretrainTrainer(config(mlp_ratio=2.0), tmp_path)
