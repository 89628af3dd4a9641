"""Pre-training step time of FILS against the work it cannot avoid, and against HF VideoMAEForPreTraining.

At the same size and batch, each repeat times, each in its own process (so a peak-memory figure belongs to one
implementation alone):
  * ``fils``: one FILS optimiser step (student on the visible tokens, predictor, language projector, ActCLIP,
    feature prediction, the EMA teacher on the full clip, AdamW, the teacher's EMA update);
  * the irreducible parts of that step, measured separately: ``student_predictor`` (a VideoMAE-style optimiser step
    of the same student and predictor, pixel loss only) and ``teacher_forward`` (one teacher forward on the full,
    unmasked clip); their sum is the work FILS cannot avoid, and ``fils / irreducible`` is the target (<= 1.1);
  * ``hf``: HF transformers' VideoMAEForPreTraining step, for reference (FILS does strictly more: its teacher alone
    sees 1 / (1 - mask_ratio) times the tokens of VideoMAE's encoder);
  * ``fils_compiled``: the FILS step with ``trainer.compile`` (encoder, predictor and teacher through
    torch.compile; the warm-up steps pay the compilation, reported on its own).
Ratios are taken within each repeat. FLOPs per step (forward + backward; the teacher's forward only) come from
torch's FlopCounterMode. Writes benchmarks/results/pretrain.json (benchmarks/record.py) and prints it.

    python benchmarks/bench_pretrain.py --sizes tiny small --frames 8 --img-size 112 --batch 4 --repeats 3
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
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fils_model.config import LossConfig, ModelConfig, PretrainConfig, TrainerConfig  # noqa: E402
from fils_model.token_index import split_tokens  # noqa: E402
from tests.builders.synthetic_clips import SyntheticClips  # noqa: E402

from record import cell, describe_machine, save, significant, spread  # noqa: E402

IMPLS = ("fils", "student_predictor", "teacher_forward", "hf", "fils_compiled")
PIXEL_ONLY = LossConfig(actclip_weight=0.0, feature_weight=0.0, pixel_weight=1.0)


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(size=args.size, img_size=args.img_size, num_frames=args.frames, patch_size=args.patch)


def _trainer(args: argparse.Namespace, device: torch.device, loss: LossConfig, compile: bool = False):
    from fils_model.distributed import DistEnv
    from fils_model.pretrain_trainer import PretrainTrainer

    cfg = PretrainConfig(model=model_config(args), loss=loss,
                         trainer=TrainerConfig(total_steps=1000, global_batch_size=args.batch, tensorboard=False,
                                               compile=compile))
    return PretrainTrainer(cfg, Path(tempfile.mkdtemp()), DistEnv(device=device)), cfg


def fils_step(args: argparse.Namespace, device: torch.device, loss: LossConfig | None = None, compile: bool = False):
    trainer, cfg = _trainer(args, device, loss or LossConfig(), compile)
    batch = SyntheticClips(cfg.model).batch(0, args.batch)
    return lambda: trainer.train_step(batch)["loss"].item()  # the host waits for the step, as a log step does


def fils_compiled_step(args: argparse.Namespace, device: torch.device):
    return fils_step(args, device, compile=True)


def student_predictor_step(args: argparse.Namespace, device: torch.device):
    return fils_step(args, device, PIXEL_ONLY)


def teacher_forward(args: argparse.Namespace, device: torch.device):
    trainer, cfg = _trainer(args, device, LossConfig())
    batch = SyntheticClips(cfg.model).batch(0, args.batch)
    video = batch["video"].to(device)
    masked = split_tokens(batch["mask"], cfg.model.num_masked).masked.to(device)

    @torch.no_grad()
    def step() -> None:
        with trainer.autocast():
            trainer.model.teacher(video, masked).sum().item()

    return step


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


STEPS = {"fils": fils_step, "student_predictor": student_predictor_step, "teacher_forward": teacher_forward,
         "hf": hf_step, "fils_compiled": fils_compiled_step}


def worker(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    step = STEPS[args.impl](args, device)
    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup_s = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with FlopCounterMode(display=False) as counter:
        step()
    times.sort()
    return {"step_s": times[len(times) // 2], "peak_mem_mib": peak, "gflops": counter.get_total_flops() / 1e9,
            "device": device.type, "warmup_s": warmup_s}


def render_markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = [
        f"`python benchmarks/bench_pretrain.py` ({s['frames']} frames x {s['img_size']} px, batch {s['batch']}; "
        f"{describe_machine(doc)}). The irreducible work is a VideoMAE-style step of the same student and predictor "
        "plus one teacher forward on the full clip, each measured on its own. The compiled step's warm-up is its "
        "compilation: the longest figure is a cold one, the others found inductor's cache of the first:",
        "",
        "| size | FILS step | irreducible: student + predictor step, teacher forward | FILS / irreducible "
        "(target ≤ 1.1) | HF VideoMAE step | FILS / HF | GFLOP per step: FILS, irreducible, HF "
        "| FILS compiled: step, / eager, warm-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in s["sizes"]:
        f = doc["figures"][size]

        def ms(key: str, f: dict = f) -> str:
            return cell({k: v * 1e3 if k != "n" else v for k, v in f[key].items()})

        lines.append(
            f"| {size} | {ms('fils_step_s')} ms | {ms('student_predictor_step_s')} ms + {ms('teacher_forward_s')} ms "
            f"| {cell(f['fils_over_irreducible'], '{:.2f}')} | {ms('hf_step_s')} ms | {cell(f['fils_over_hf'], '{:.2f}')}"
            f" | {significant(f['gflops']['fils'])}, {significant(f['gflops']['irreducible'])}, "
            f"{significant(f['gflops']['hf'])} | {ms('fils_compiled_step_s')} ms, "
            f"{cell(f['compiled_over_eager'], '{:.2f}')}, {cell(f['compile_warmup_s'])} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process (their median is taken)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="processes per implementation and size")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/pretrain.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    common = [f"--frames={args.frames}", f"--img-size={args.img_size}", f"--patch={args.patch}",
              f"--batch={args.batch}", f"--steps={args.steps}", f"--warmup={args.warmup}", f"--threads={args.threads}"]
    figures: dict = {}
    for size in args.sizes:
        repeats = []
        for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every implementation
            runs = {}
            for impl in IMPLS:
                cmd = [sys.executable, __file__, "--worker", f"--impl={impl}", f"--size={size}", *common]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                runs[impl] = json.loads(out.strip().splitlines()[-1])
            repeats.append(runs)
        step = {impl: [r[impl]["step_s"] for r in repeats] for impl in IMPLS}
        irreducible = [a + b for a, b in zip(step["student_predictor"], step["teacher_forward"])]
        first = repeats[0]
        figures[size] = {
            **{f"{impl}_step_s" if impl != "teacher_forward" else "teacher_forward_s": spread(step[impl])
               for impl in IMPLS},
            "irreducible_s": spread(irreducible),
            "fils_over_irreducible": spread([f / i for f, i in zip(step["fils"], irreducible)]),
            "fils_over_hf": spread([f / h for f, h in zip(step["fils"], step["hf"])]),
            "compiled_over_eager": spread([c / f for c, f in zip(step["fils_compiled"], step["fils"])]),
            "compile_warmup_s": spread([r["fils_compiled"]["warmup_s"] for r in repeats]),
            "fils_clips_per_s": spread([args.batch / t for t in step["fils"]]),
            "fils_peak_mem_mib": spread([r["fils"]["peak_mem_mib"] for r in repeats]),
            "gflops": {"fils": first["fils"]["gflops"], "hf": first["hf"]["gflops"],
                       "irreducible": first["student_predictor"]["gflops"] + first["teacher_forward"]["gflops"]},
            "device": first["fils"]["device"],
        }
    settings = {"sizes": args.sizes, "frames": args.frames, "img_size": args.img_size, "patch": args.patch,
                "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
                "threads": args.threads or torch.get_num_threads()}
    save("pretrain", settings, figures, args.out)


if __name__ == "__main__":
    main()
