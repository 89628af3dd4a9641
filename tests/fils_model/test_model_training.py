"""Tiny end-to-end recipe: losses fall without collapse, exact resume, checkpoint errors, HF export."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fils_model.checkpoint import CheckpointError
from fils_model.config import LossConfig, ModelConfig, OptimConfig, PretrainConfig, TrainerConfig
from fils_model.encoder import VideoEncoder
from fils_model.export import export_checkpoint, load_videomae_encoder
from fils_model.pretrain_trainer import PretrainTrainer
from tests.builders.synthetic_clips import SyntheticClips

torch.set_num_threads(1)


def recipe(steps: int, batch: int = 16, **trainer) -> PretrainConfig:
    # ActCLIP pools tube-embedding tokens here: a 2-layer, 64-wide encoder that sees 16 visible tokens
    # does not pick up the motion direction from captions within a few hundred steps (it stays at chance,
    # ln(batch)), whereas the tube embedding does; the feature targets use the paper-intent teacher encoder.
    return PretrainConfig(
        model=ModelConfig(size="tiny", img_size=32, num_frames=8, patch_size=8, text_dim=32, mask_ratio=0.75,
                          actclip_source="tube_embedding"),
        optim=OptimConfig(base_lr=1e-2, warmup_steps=min(20, steps - 1), ema_start=0.99),
        trainer=TrainerConfig(total_steps=steps, global_batch_size=batch, tensorboard=False, **trainer),
    )


def metrics(run_dir: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    with (run_dir / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            out.setdefault(row["name"], {})[int(row["step"])] = float(row["value"])
    return out


def test_tiny_recipe_lowers_losses_without_collapse(tmp_path: Path) -> None:
    cfg = recipe(300, log_every=10, diagnostics_every=10, checkpoint_every=1000)
    trainer = PretrainTrainer(cfg, tmp_path)
    trainer.fit(SyntheticClips(cfg.model).stream(0, 16))
    m = metrics(tmp_path)

    def mean(name: str, steps: range) -> float:
        return sum(m[name][s] for s in steps) / len(steps)

    first, last = range(10, 40, 10), range(270, 310, 10)
    # ActCLIP: chance level is ln(16) = 2.77; four caption classes put the optimum near ln(4) = 1.39.
    assert mean("loss_actclip", last) < 2.5 < mean("loss_actclip", first)
    assert mean("loss_feature", last) < 0.25 * mean("loss_feature", first)
    # Collapse floor: targets are LayerNorm-ed per token, so a collapsed teacher (every token the same)
    # has per-dimension std 0 across tokens and a trivially zero feature loss; a random teacher starts near
    # 0.6. Requiring > 0.1 (and an effective rank of at least a quarter of the 32 dims) rules collapse out.
    assert min(m["target_std"][s] for s in last) > 0.1
    assert min(m["target_erank"][s] for s in last) > 8
    assert min(m["pred_std"][s] for s in last) > 0.05
    for name in ("lr", "ema_momentum", "grad_norm", "clips_per_s", "logit_scale", "pred_erank"):
        assert name in m
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000300.pt"]


def test_stop_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    cfg = recipe(8, batch=4, checkpoint_every=3, keep_every=2, log_every=2, diagnostics_every=4)
    cfg = cfg.model_copy(update={"loss": LossConfig(pixel_weight=0.5, actclip_pooling="patch")})
    cfg.model.drop_path = 0.1  # exercises the restored torch RNG
    data = SyntheticClips(cfg.model)

    straight = PretrainTrainer(cfg, tmp_path / "straight")
    straight.fit(data.stream(0, 4))

    interrupted = PretrainTrainer(cfg, tmp_path / "resumed")
    interrupted.fit(batch for _, batch in zip(range(5), data.stream(0, 4)))  # "crash" after step 5
    assert sorted(p.name for p in (tmp_path / "resumed/checkpoints").iterdir()) == ["step_00000005.pt"]
    resumed = PretrainTrainer(cfg, tmp_path / "resumed")
    assert resumed.step == 5
    resumed.fit(data.stream(resumed.step, 4))
    assert resumed.step == straight.step == 8
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    # latest plus every keep_every-th save (step 6 = 2nd save) survive
    assert sorted(p.name for p in (tmp_path / "resumed/checkpoints").iterdir()) == ["step_00000006.pt", "step_00000008.pt"]


def test_mismatched_or_missing_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    cfg = recipe(2, batch=2, checkpoint_every=1)
    PretrainTrainer(cfg, tmp_path).fit(SyntheticClips(cfg.model).stream(0, 2))
    wider = cfg.model_copy(update={"model": cfg.model.model_copy(update={"embed_dim": 32})})
    with pytest.raises(CheckpointError, match=r"step_00000002\.pt.*different 'model' config"):
        PretrainTrainer(wider, tmp_path)
    (tmp_path / "checkpoints/step_00000002.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"step_00000002\.pt could not be read"):
        PretrainTrainer(cfg, tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        export_checkpoint(tmp_path / "nope.pt", tmp_path / "out")


def test_export_loads_in_transformers(tmp_path: Path) -> None:
    from transformers import VideoMAEModel

    cfg = recipe(2, batch=2, checkpoint_every=2)
    trainer = PretrainTrainer(cfg, tmp_path / "run")
    trainer.fit(SyntheticClips(cfg.model).stream(0, 2))
    out = export_checkpoint(trainer.checkpoints.latest(), tmp_path / "export")
    hf = VideoMAEModel.from_pretrained(out).eval()
    video = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        expected = trainer.model.encoder.eval()(video)
        got = hf(video.transpose(1, 2)).last_hidden_state
    assert (got - expected).abs().max() < 1e-4
    fresh = VideoEncoder(cfg.model)
    load_videomae_encoder(fresh, out)
    for (name, a), b in zip(fresh.state_dict().items(), trainer.model.encoder.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="not a VideoMAE encoder matching"):
        load_videomae_encoder(VideoEncoder(cfg.model.model_copy(update={"embed_dim": 32})), out)


def test_released_code_variant_trains_with_fp16_and_an_epoch_ema(tmp_path: Path) -> None:
    """``pretrain.variant: released_code`` on CPU: fp16 autocast with a GradScaler, and the teacher updated once
    per epoch (4 steps) with the schedule indexed by epoch, so its momentum stays near ema_start (B2)."""
    from stages.pretrain.config import PretrainSection

    section = PretrainSection.model_validate({
        "variant": "released_code", "model": {"size": "tiny", "img_size": 32, "num_frames": 8, "patch_size": 8,
                                              "text_dim": 32, "mask_ratio": 0.75},
        "optim": {"base_lr": 1e-2, "ema_start": 0.9, "ema_end": 1.0},
        "trainer": {"global_batch_size": 8, "tensorboard": False, "log_every": 1, "checkpoint_every": 1000},
        "epochs": 3})
    cfg = section.resolve(num_clips=32)
    assert (cfg.trainer.total_steps, cfg.trainer.steps_per_epoch, cfg.trainer.precision) == (12, 4, "fp16")
    trainer = PretrainTrainer(cfg, tmp_path)
    assert trainer.scaler.is_enabled()
    teacher = [trainer.model.teacher.projector.fc1.weight.clone()]
    stream = SyntheticClips(cfg.model).stream(0, 8)
    momenta = []
    for _ in range(12):
        momenta.append(trainer.train_step(next(stream))["ema_momentum"])
        teacher.append(trainer.model.teacher.projector.fc1.weight.clone())
    moved = [not torch.equal(a, b) for a, b in zip(teacher, teacher[1:])]
    assert moved == [False, False, False, True] * 3
    used = [m for m in momenta if m == m]  # NaN where the teacher was not updated
    assert used == pytest.approx([0.9, 0.9 + 0.1 / 12, 0.9 + 0.2 / 12])  # the per-step schedule read per epoch


class _RunsACommand:
    """A pickle payload that runs a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    """The nightly sweep reads any ``.pt`` its glob finds: a checkpoint must never be unpickled as code."""
    from fils_model.checkpoint import load_checkpoint
    from fils_model.encoder_init import load_pretrained_encoder

    marker = tmp_path / "pwned"
    crafted = tmp_path / "step_00000001.pt"
    torch.save({"step": 1, "model": _RunsACommand(marker)}, crafted)
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(crafted)
    with pytest.raises(CheckpointError):
        load_pretrained_encoder(crafted)
    assert not marker.exists()


def test_metrics_of_a_run_killed_between_checkpoints_are_not_repeated(tmp_path: Path) -> None:
    """Killed after logging step 5 but before its checkpoint: the resumed run (from step 4) logs step 5 again, and
    ``metrics.csv`` then equals an uninterrupted run's (the timing column aside)."""
    cfg = recipe(6, batch=4, checkpoint_every=2, keep_every=1, log_every=1, diagnostics_every=100)
    data = SyntheticClips(cfg.model)
    PretrainTrainer(cfg, tmp_path / "straight").fit(data.stream(0, 4))
    PretrainTrainer(cfg, tmp_path / "killed").fit(batch for _, batch in zip(range(5), data.stream(0, 4)))
    (tmp_path / "killed/checkpoints/step_00000005.pt").unlink()  # the kill came before this save
    resumed = PretrainTrainer(cfg, tmp_path / "killed")
    assert resumed.step == 4
    resumed.fit(data.stream(4, 4))

    def rows(run: str) -> list[tuple[str, str, str]]:
        with (tmp_path / run / "metrics.csv").open() as fh:
            return [(r["step"], r["name"], r["value"]) for r in csv.DictReader(fh) if r["name"] != "clips_per_s"]

    assert rows("killed") == rows("straight")


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    cfg = recipe(4, batch=2, checkpoint_every=2, keep_every=1)
    PretrainTrainer(cfg, tmp_path).fit(SyntheticClips(cfg.model).stream(0, 2))
    latest = tmp_path / "checkpoints/step_00000004.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # a kill or a full disk in the middle of the save
    assert PretrainTrainer(cfg, tmp_path).step == 2
