"""Two-process DDP (gloo, CPU) through ``torchrun`` equals one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fils_model.checkpoint import load_checkpoint
from fils_model.config import LossConfig, ModelConfig, OptimConfig, PretrainConfig, TrainerConfig
from fils_model.pretrain_trainer import PretrainTrainer
from tests.builders.synthetic_clips import SyntheticClips
from tests.helpers import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOSSES = {
    "fils_with_pixel": LossConfig(pixel_weight=0.5),  # all three losses, ActCLIP negatives gathered across ranks
    "pixel_only": LossConfig(actclip_weight=0.0, feature_weight=0.0, pixel_weight=1.0),  # the VideoMAE baseline
}


@pytest.mark.parametrize("losses", list(LOSSES))
def test_two_process_ddp_matches_single_process(tmp_path: Path, losses: str) -> None:
    cfg = PretrainConfig(
        model=ModelConfig(size="tiny", img_size=32, num_frames=4, patch_size=8, text_dim=16, mask_ratio=0.5),
        loss=LOSSES[losses],
        optim=OptimConfig(base_lr=5e-2, warmup_steps=1, grad_clip=1.0),
        trainer=TrainerConfig(total_steps=4, global_batch_size=4, checkpoint_every=4, tensorboard=False),
    )
    config = tmp_path / "config.json"
    config.write_text(cfg.model_dump_json())
    env = os.environ | {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "tests.builders.ddp_entry", "--config", str(config), "--run-dir", str(tmp_path / "ddp"), "--threads", "1"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]

    torch.set_num_threads(1)
    single = PretrainTrainer(cfg, tmp_path / "single")
    single.fit(SyntheticClips(cfg.model).stream(0, cfg.trainer.global_batch_size))

    ddp_state = load_checkpoint(tmp_path / "ddp/checkpoints/step_00000004.pt")
    assert ddp_state["step"] == 4
    moved = 0
    for name, expected in single.model.state_dict().items():
        got = ddp_state["model"][name]
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4, msg=name)
        moved += name.startswith("teacher.")
    assert moved > 0 or single.model.teacher is None
