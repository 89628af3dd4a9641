"""Caption-stage throughput: VideoBLIP clips/s at several batch sizes and text-encoder captions/s.

Uses randomly initialised VideoBLIP weights (no download): `--size small` (default, CPU-friendly, real
token layout) or `--size real` (the architecture sizes of kpyu/video-blip-opt-2.7b-ego4d, for GPU runs).
Random weights generate arbitrary tokens, so `min_new_tokens = max_new_tokens` fixes the decode length. The text
encoder is the stage's default (MiniLM) when it is in the local Hugging Face cache, and is reported as skipped
otherwise (benchmarks never download). Writes benchmarks/results/captions.json (benchmarks/record.py).

    python benchmarks/bench_captions.py [--size small|real] [--batch-sizes 1 8 32] [--frames 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the offline VideoBLIP builder lives in tests/

import numpy as np  # noqa: E402
import torch  # noqa: E402

from stages.captions.captioner_config import DEFAULT_PROMPT, GenerationSettings  # noqa: E402
from stages.captions.text_encoders import load_text_encoder  # noqa: E402
from stages.captions.videoblip import VideoCaptioner, resolve_device_dtype  # noqa: E402
from tests.builders.videoblip import build_random_videoblip  # noqa: E402

from record import cell, describe_machine, save, spread  # noqa: E402

PRESETS = {"small": "small", "real": "opt-2.7b"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_captioner(args: argparse.Namespace) -> dict:
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    t0 = time.perf_counter()
    parts = build_random_videoblip(PRESETS[args.size], device=device, dtype=dtype)
    captioner = VideoCaptioner(*parts, model_id=f"random:{PRESETS[args.size]}", revision="seed-0")
    build_s = time.perf_counter() - t0
    settings = GenerationSettings(
        max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, num_beams=args.num_beams
    )
    rng = np.random.default_rng(0)
    clip = lambda: rng.integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)  # noqa: E731
    captioner.caption([clip()], DEFAULT_PROMPT, settings)  # warm-up
    results = []
    for batch_size in args.batch_sizes:
        batch = [clip() for _ in range(batch_size)]
        times = []
        for _ in range(args.repeats):
            _sync(device)
            start = time.perf_counter()
            captioner.caption(batch, DEFAULT_PROMPT, settings)
            _sync(device)
            times.append(time.perf_counter() - start)
        results.append({"batch_size": batch_size, "seconds_per_batch": spread(times),
                        "clips_per_s": spread([batch_size / t for t in times])})
    params = sum(p.numel() for p in captioner.model.parameters())
    return {"preset": PRESETS[args.size], "params": params, "dtype": str(dtype).removeprefix("torch."),
            "build_s": round(build_s, 2), "frames": args.frames, "frame_hw": [args.height, args.width],
            "generation": settings.generate_kwargs(), "batches": results}


def bench_text(args: argparse.Namespace) -> dict:
    try:
        encoder = load_text_encoder(args.text_backend, args.text_model, device=args.device)
    except OSError as exc:  # not in the local cache, and benchmarks run offline
        return {"encoder_id": args.text_model, "skipped": f"not available offline: {str(exc).splitlines()[0]}"}
    captions = [f"a person picks up the {i} cup and puts it on the table" for i in range(args.num_captions)]
    encoder.encode(captions[:8])  # warm-up
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        encoder.encode(captions, batch_size=args.text_batch_size)
        rates.append(len(captions) / (time.perf_counter() - start))
    return {"encoder_id": encoder.encoder_id, "dim": encoder.dim, "captions": len(captions),
            "batch_size": args.text_batch_size, "captions_per_s": spread(rates)}


def render_markdown(doc: dict) -> str:
    c, t = doc["figures"]["captioner"], doc["figures"]["text_encoder"]
    rates = " / ".join(cell(b["clips_per_s"]) for b in c["batches"])
    sizes = " / ".join(str(b["batch_size"]) for b in c["batches"])
    text = (f"{t['encoder_id']} text encoder: {cell(t['captions_per_s'], '{:.0f}')} captions/s" if "skipped" not in t
            else f"text encoder {t['encoder_id']}: not measured ({t['skipped']})")
    return (f"`python benchmarks/bench_captions.py` ({doc['settings']['device']}, random VideoBLIP `{c['preset']}`, "
            f"{c['frames']} frames, {c['generation']['max_new_tokens']} new tokens; {describe_machine(doc)}): "
            f"{rates} clips/s at batch {sizes} (pipeline overhead only, not real captioning cost); {text}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per batch size")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="default: bf16/fp16 on CUDA, float32 on CPU")
    parser.add_argument("--text-backend", choices=["hf", "open_clip"], default="hf")
    parser.add_argument("--text-model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--text-batch-size", type=int, default=64)
    parser.add_argument("--num-captions", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/captions.json)")
    args = parser.parse_args()
    device, _ = resolve_device_dtype(args.device, args.dtype)
    settings = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
                "repeats": args.repeats}
    save("captions", settings, {"captioner": bench_captioner(args), "text_encoder": bench_text(args)}, args.out)


if __name__ == "__main__":
    main()
