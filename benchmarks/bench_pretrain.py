"""Pre-training throughput of FILS vs HF ``transformers`` VideoMAEForPreTraining at the same size.

Prints one JSON object: per size, FILS clips/s, step time and peak memory, the HF step time, and
``step_time_ratio`` = FILS / HF (target <= 1.3). FILS' step additionally runs the EMA teacher on the full
clip and the language projector, which VideoMAE does not have. Each measurement runs in its own process so
the peak-memory figure (``ru_maxrss`` on CPU, ``max_memory_allocated`` on GPU) belongs to it alone.

    python benchmarks/bench_pretrain.py --sizes tiny small --frames 8 --img-size 112 --batch 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fils_model.config import ModelConfig, PretrainConfig, TrainerConfig  # noqa: E402
from tests.builders.synthetic_clips import SyntheticClips  # noqa: E402


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(size=args.size, img_size=args.img_size, num_frames=args.frames, patch_size=args.patch)


def fils_step(args: argparse.Namespace, device: torch.device):
    from fils_model.distributed import DistEnv
    from fils_model.pretrain_trainer import PretrainTrainer

    cfg = PretrainConfig(
        model=model_config(args),
        trainer=TrainerConfig(total_steps=1000, global_batch_size=args.batch, tensorboard=False),
    )
    trainer = PretrainTrainer(cfg, Path(tempfile.mkdtemp()), DistEnv(device=device))
    batch = SyntheticClips(cfg.model).batch(0, args.batch)
    return lambda: trainer.train_step(batch)


def hf_step(args: argparse.Namespace, device: torch.device):
    from transformers import VideoMAEForPreTraining

    from fils_model.export import videomae_config

    cfg = model_config(args)
    model = VideoMAEForPreTraining(videomae_config(cfg)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    batch = SyntheticClips(cfg).batch(0, args.batch)
    video, mask = batch["video"].transpose(1, 2).to(device), batch["mask"].to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = model(video, bool_masked_pos=mask).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()

    return step


def worker(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    step = (fils_step if args.impl == "fils" else hf_step)(args, device)
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step_s = (time.perf_counter() - start) / args.steps
    return {"step_s": step_s, "clips_per_s": args.batch / step_s, "peak_mem_mib": peak, "device": device.type}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["fils", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    common = [f"--frames={args.frames}", f"--img-size={args.img_size}", f"--patch={args.patch}",
              f"--batch={args.batch}", f"--steps={args.steps}", f"--warmup={args.warmup}", f"--threads={args.threads}"]
    report: dict = {"frames": args.frames, "img_size": args.img_size, "batch": args.batch, "threads": torch.get_num_threads()}
    for size in args.sizes:
        runs = {}
        for impl in ("fils", "hf"):
            cmd = [sys.executable, __file__, "--worker", f"--impl={impl}", f"--size={size}", *common]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[impl] = json.loads(out.strip().splitlines()[-1])
        report[size] = {
            "fils": runs["fils"],
            "hf_videomae_pretraining": runs["hf"],
            "step_time_ratio": runs["fils"]["step_s"] / runs["hf"]["step_s"],
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
