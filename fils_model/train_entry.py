"""``torchrun`` entry point: ``python -m torch.distributed.run --nproc_per_node N -m fils_model.train_entry``.

``--config`` is a JSON :class:`PretrainConfig`. With ``--data synthetic`` (the only source built in here) the
run trains on :class:`fils_model.synthetic.SyntheticClips`; the pipeline's pretrain stage calls :func:`run`
with its own batch factory.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from fils_model.config import PretrainConfig
from fils_model.distributed import DistEnv, cleanup, init_distributed
from fils_model.export import export_checkpoint
from fils_model.synthetic import SyntheticClips
from fils_model.trainer import Trainer

BatchFactory = Callable[[int, DistEnv], Iterable[dict[str, torch.Tensor]]]


def run(cfg: PretrainConfig, run_dir: Path, make_batches: BatchFactory, export_dir: Path | None = None) -> dict:
    """Train (resuming if possible) with batches from ``make_batches(start_step, env)``; export on rank 0."""
    env = init_distributed()
    try:
        trainer = Trainer(cfg, run_dir, env)
        metrics = trainer.fit(make_batches(trainer.step, env))
        if export_dir is not None and env.is_main:
            export_checkpoint(trainer.checkpoints.latest(), export_dir)
        return metrics
    finally:
        cleanup()


def synthetic_batches(cfg: PretrainConfig, seed: int) -> BatchFactory:
    data = SyntheticClips(cfg.model, seed=seed)
    return lambda start, env: data.stream(start, cfg.trainer.global_batch_size, env.rank, env.world_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="PretrainConfig as JSON")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--data", choices=["synthetic"], default="synthetic")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--export-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PretrainConfig.model_validate_json(args.config.read_text())
    run(cfg, args.run_dir, synthetic_batches(cfg, args.data_seed), args.export_dir)


if __name__ == "__main__":
    main()
