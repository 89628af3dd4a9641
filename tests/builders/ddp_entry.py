"""A pre-training process on generated clips, for the DDP check:
``python -m torch.distributed.run --nproc_per_node N -m tests.builders.ddp_entry --config cfg.json --run-dir D``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fils_model.config import PretrainConfig
from fils_model.pretrain_trainer import run_pretraining
from tests.builders.synthetic_clips import SyntheticClips


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="PretrainConfig as JSON")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PretrainConfig.model_validate_json(args.config.read_text())
    data = SyntheticClips(cfg.model)
    run_pretraining(cfg, args.run_dir,
                    lambda start, env: data.stream(start, cfg.trainer.global_batch_size, env.rank, env.world_size))


if __name__ == "__main__":
    main()
