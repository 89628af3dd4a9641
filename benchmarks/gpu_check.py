"""One-shot GPU check (issue "Feed the GPU"): run once on a lent H100/H200, in at most ~5 minutes.

    python benchmarks/gpu_check.py                  # on the GPU machine; writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --smoke --out /tmp/g.json   # every code path on the CPU with tiny shapes

Measures, each part in its own try/except (an error is recorded as a string and the next part runs):
  * ``fils_step.eager`` / ``fils_step.compiled``: the ViT-B/16 16x224 FILS optimiser step of PretrainTrainer
    (``train_step``: bf16 autocast, fused AdamW, index-selected tokens, EMA teacher update), eager and with
    ``trainer.compile: true``, at the largest batch of ``--batches`` that fits (CUDA OOM -> the next smaller one):
    clips/s, step ms, peak memory, FLOPs per clip counted by torch's FlopCounterMode on one eager step (forward +
    backward; the compiled step does the same computation), achieved TFLOP/s and MFU against ``--peak-tflops``
    (default: the dense bf16 peak of a detected H100/H200), and the host syncs of one step
    (``torch.cuda.set_sync_debug_mode``). The compiled part runs last: its compilation time is the least
    predictable, so it cannot starve the other parts of the budget;
  * ``hf_videomae``: HF transformers' VideoMAEForPreTraining (``VideoMAEConfig()``: ViT-B 16x224, norm_pix_loss),
    bf16 autocast, fused torch AdamW; same batch search and figures;
  * ``loader``: ``benchmarks/bench_loader.py``'s ``loader_check(workers=os.cpu_count())``;
  * ``videoblip``: VideoBLIP at real size (OPT-2.7B layout, random weights, no download), built on the GPU in bf16
    by tests/builders/videoblip.py and captioning through the stage's ``VideoCaptioner.caption`` (image processor,
    generate, decode; the folder loader ``from_pretrained`` is not used) at batch 1/8/32 with the captions stage's
    default frames and generation settings (``min_new_tokens`` raised to ``max_new_tokens``: random weights would
    stop at an arbitrary EOS): clips/s, peak memory.

A global budget (``--budget-s``) is checked before each part and enforced inside it by an alarm; parts after it
are recorded as skipped. The JSON is written after every part (to ``--out`` and, when ``$OUT`` is set, to
``$OUT/gpu_check.json``), so a killed run still leaves the parts done; the complete object is printed at the end.
Exit status 0 whenever the JSON was written, errors included (they are in the file); 2 without CUDA (no --smoke).
"""

from __future__ import annotations

import time

START = time.monotonic()  # the budget counts the imports too

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded; the lent machine has no network
BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
for path in (REPO, BENCHMARKS):  # the project, the offline VideoBLIP builder (tests/), record.py, bench_loader.py
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from fils_model.config import ModelConfig  # noqa: E402

from record import commit, machine  # noqa: E402

PARTS = ("fils_step.eager", "hf_videomae", "loader", "videoblip", "fils_step.compiled")  # the order they run in
DEFAULT_OUT = BENCHMARKS / "results" / "gpu_check.json"
# Dense bf16 tensor-core peak (TFLOP/s) by device-name fragment, first match wins.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0))

Step = Callable[[], object]


class BudgetExceeded(Exception):
    """Raised by the alarm when the global time budget runs out inside a part."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """Shapes and repeat counts: the real check, or tiny ones for ``--smoke``."""

    device: torch.device
    model: ModelConfig
    batches: tuple[int, ...]
    warmup: int
    compiled_warmup: int
    steps: int
    videoblip_preset: str
    caption_batches: tuple[int, ...]
    caption_repeats: int
    frame_hw: tuple[int, int] | None  # None: the captions stage's image_size short side, 16:9
    loader_kwargs: dict[str, int]
    peak_tflops: float | None
    peak_source: str
    smoke: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        device = torch.device("cpu" if args.smoke else "cuda")
        peak, source = peak_tflops(args.peak_tflops, device)
        common = dict(device=device, peak_tflops=peak, peak_source=source, smoke=args.smoke)
        if args.smoke:
            return cls(model=ModelConfig(size="tiny", num_frames=8, img_size=32), batches=(4, 2), warmup=1,
                       compiled_warmup=2, steps=2, videoblip_preset="tiny", caption_batches=(1, 2), caption_repeats=1,
                       frame_hw=(32, 32), loader_kwargs={"videos": 2, "steps": 2}, **common)
        return cls(model=ModelConfig(size="base"), batches=tuple(args.batches), warmup=3, compiled_warmup=6,
                   steps=args.steps, videoblip_preset="opt-2.7b", caption_batches=(1, 8, 32), caption_repeats=3,
                   frame_hw=None, loader_kwargs={}, **common)


def peak_tflops(given: float | None, device: torch.device) -> tuple[float | None, str]:
    if given is not None:
        return given, "--peak-tflops"
    if device.type != "cuda":
        return None, "no GPU: MFU not computed (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for fragment, peak in PEAK_BF16_TFLOPS:
        if fragment in name:
            return peak, f"assumed dense bf16 peak of {fragment} (device {name!r})"
    return None, f"unknown peak for {name!r}: MFU not computed (pass --peak-tflops)"


def log(message: str) -> None:
    print(f"[gpu_check {time.monotonic() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def host_syncs(step: Step, device: torch.device) -> dict[str, Any] | None:
    """The synchronising CUDA calls of one step, by the Python line that made them (None on the CPU)."""
    if device.type != "cuda":
        return None
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sync(device)
    found = [w for w in caught if "synchroniz" in str(w.message)]
    where = sorted({f"{os.path.relpath(w.filename, REPO)}:{w.lineno}" for w in found})
    return {"count": len(found), "where": where}


def time_step(step: Step, batch: int, plan: Plan, warmup: int, count_flops: bool) -> dict[str, Any]:
    """Warm-up (the first step timed on its own: compilation, allocator growth), ``plan.steps`` timed steps between
    two device syncs, peak memory of those, then one step under FlopCounterMode and one under sync debugging."""
    device = plan.device
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    first_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(plan.steps):
        step()
    sync(device)
    step_s = (time.perf_counter() - start) / plan.steps
    out: dict[str, Any] = {"batch": batch, "first_step_s": round(first_s, 3), "step_ms": round(step_s * 1e3, 2),
                           "clips_per_s": round(batch / step_s, 2), "peak_mem_gib": peak_gib(device),
                           "timed_steps": plan.steps, "warmup_steps": warmup}
    if count_flops:
        with FlopCounterMode(display=False) as counter:
            step()
        sync(device)
        out["gflops_per_clip"] = round(counter.get_total_flops() / batch / 1e9, 2)
    out["host_syncs_per_step"] = host_syncs(step, device)
    return out


def with_mfu(figures: dict[str, Any], gflops_per_clip: float | None, plan: Plan) -> dict[str, Any]:
    if gflops_per_clip is None:
        return figures | {"achieved_tflops": None, "mfu": None}
    achieved = gflops_per_clip * figures["clips_per_s"] / 1e3
    mfu = achieved / plan.peak_tflops if plan.peak_tflops else None
    return figures | {"achieved_tflops": round(achieved, 1), "mfu": None if mfu is None else round(mfu, 4)}


def is_oom(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "ALLOC_FAILED" in text


def largest_fitting(make_step: Callable[[int], Step], batches: tuple[int, ...], plan: Plan, warmup: int,
                    count_flops: bool) -> dict[str, Any]:
    """Figures at the first batch of ``batches`` (descending) whose steps do not run out of GPU memory."""
    oom: list[int] = []
    for batch in batches:
        try:
            figures = time_step(make_step(batch), batch, plan, warmup, count_flops)
            return figures | {"oom_batches": oom}
        except RuntimeError as exc:  # torch.OutOfMemoryError, or cuBLAS/cuDNN failing to allocate a workspace
            if not is_oom(exc):
                raise
            oom.append(batch)
            log(f"  batch {batch}: out of memory")
        finally:
            free_memory(plan.device)
    raise RuntimeError(f"out of memory at every batch of {list(batches)}")


# -- parts -------------------------------------------------------------------------------------------------------
def fils_batch(cfg: ModelConfig, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A loader-like batch, built once on the device: uint8 video in the collate's layout (a (B, 3, T, H, W) view of
    channels-last frames; the trainer normalises it on the device), tube mask with its token indices (as the
    pretrain collate makes them), random action area and caption embedding."""
    from fils_model.masking import tube_mask
    from fils_model.token_index import split_tokens

    mask = tube_mask(batch, cfg.grid, cfg.mask_ratio, np.random.default_rng(0))
    split = split_tokens(mask, cfg.num_masked)
    cpu = {"mask": mask, "visible_index": split.visible, "masked_index": split.masked,
           "action_tokens": torch.rand(batch, cfg.num_patches) < 0.3, "text_embedding": torch.randn(batch, cfg.text_dim)}
    frames = torch.randint(0, 256, (batch, cfg.num_frames, cfg.img_size, cfg.img_size, cfg.in_chans),
                           dtype=torch.uint8, device=device)
    video = frames.permute(0, 4, 1, 2, 3)
    return {"video": video} | {k: v.to(device) for k, v in cpu.items()}


def fils_step(plan: Plan, doc: dict[str, Any], compiled: bool) -> dict[str, Any]:
    from fils_model.config import PretrainConfig, TrainerConfig
    from fils_model.distributed import DistEnv
    from fils_model.pretrain_trainer import PretrainTrainer

    with tempfile.TemporaryDirectory() as tmp:
        def make_step(batch: int) -> Step:
            never = 10**9  # no diagnostics, logging or checkpoint inside the measured steps
            cfg = PretrainConfig(model=plan.model, trainer=TrainerConfig(
                total_steps=never, global_batch_size=batch, precision="bf16", tensorboard=False, compile=compiled,
                diagnostics_every=never, log_every=never, checkpoint_every=never))
            trainer = PretrainTrainer(cfg, Path(tmp) / f"b{batch}", DistEnv(device=plan.device))
            data = fils_batch(plan.model, batch, plan.device)
            return lambda: trainer.train_step(data)

        if not compiled:
            figures = largest_fitting(make_step, plan.batches, plan, plan.warmup, count_flops=True)
            return with_mfu(figures, figures["gflops_per_clip"], plan)
        eager = part_result(doc, "fils_step.eager")
        fits = eager.get("batch")  # compiled needs no more memory than eager: start there, skip recompilations
        batches = tuple(b for b in plan.batches if fits is None or b <= fits)
        figures = largest_fitting(make_step, batches, plan, plan.compiled_warmup, count_flops=False)
        figures["compile_s"] = figures.pop("first_step_s")
        flops = eager.get("gflops_per_clip")
        return with_mfu(figures, flops, plan) | {"gflops_source": "eager count (same computation)" if flops else None}


def hf_videomae(plan: Plan, doc: dict[str, Any]) -> dict[str, Any]:
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    from fils_model.export import videomae_config
    from fils_model.masking import tube_mask

    config = videomae_config(plan.model) if plan.smoke else VideoMAEConfig(norm_pix_loss=True)
    grid = (config.num_frames // config.tubelet_size, config.image_size // config.patch_size,
            config.image_size // config.patch_size)
    device = plan.device

    def make_step(batch: int) -> Step:
        model = VideoMAEForPreTraining(config).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05,
                                      fused=device.type == "cuda")
        video = torch.randn(batch, config.num_frames, config.num_channels, config.image_size, config.image_size,
                            device=device)
        mask = tube_mask(batch, grid, 0.9, np.random.default_rng(0)).to(device)

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(video, bool_masked_pos=mask).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    figures = largest_fitting(make_step, plan.batches, plan, plan.warmup, count_flops=True)
    return with_mfu(figures, figures["gflops_per_clip"], plan) | {"config": {
        "hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
        "decoder_layers": config.decoder_num_hidden_layers, "decoder_hidden_size": config.decoder_hidden_size,
        "frames": config.num_frames, "image_size": config.image_size, "mask_ratio": 0.9,
        "norm_pix_loss": config.norm_pix_loss, "attn_implementation": getattr(config, "_attn_implementation", None)}}


def loader(plan: Plan, doc: dict[str, Any]) -> dict[str, Any]:
    from bench_loader import loader_check

    return loader_check(os.cpu_count() or 1, **plan.loader_kwargs)


def videoblip(plan: Plan, doc: dict[str, Any]) -> dict[str, Any]:
    from stages.captions.config import CaptionsConfig
    from stages.captions.videoblip import VideoCaptioner
    from tests.builders.videoblip import build_random_videoblip

    device, stage = plan.device, CaptionsConfig()
    default = stage.generation.to_settings()
    settings = dataclasses.replace(default, min_new_tokens=default.max_new_tokens)
    start = time.perf_counter()
    parts = build_random_videoblip(plan.videoblip_preset, device=device, dtype=torch.bfloat16)
    captioner = VideoCaptioner(*parts, model_id=f"random:{plan.videoblip_preset}", revision="seed-0")
    sync(device)
    build_s = time.perf_counter() - start
    height, width = plan.frame_hw or (stage.image_size, round(stage.image_size * 16 / 9))
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {
        "preset": plan.videoblip_preset, "params": sum(p.numel() for p in captioner.model.parameters()),
        "dtype": "bfloat16", "build_s": round(build_s, 1), "frames": stage.num_frames, "frame_hw": [height, width],
        "generation": settings.generate_kwargs(), "repeats": plan.caption_repeats,
        "path": "tests/builders/videoblip.build_random_videoblip on the device + stages.captions.videoblip."
                "VideoCaptioner.caption (the stage's captioning call; not its folder loader)",
        "batches": []}
    for batch in plan.caption_batches:
        clips = [rng.integers(0, 256, (stage.num_frames, height, width, 3), dtype=np.uint8) for _ in range(batch)]
        try:
            free_memory(device)
            captioner.caption(clips, stage.prompt, settings)  # warm-up at this batch size
            start = time.perf_counter()
            captioner.prepare_inputs(clips, stage.prompt)
            prepare_s = time.perf_counter() - start
            times = []
            for _ in range(plan.caption_repeats):
                sync(device)
                start = time.perf_counter()
                captioner.caption(clips, stage.prompt, settings)
                sync(device)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            out["batches"].append({"batch": batch, "seconds_per_batch": round(seconds, 3),
                                   "clips_per_s": round(batch / seconds, 2), "prepare_inputs_s": round(prepare_s, 3),
                                   "peak_mem_gib": peak_gib(device)})
        except BudgetExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - one batch size failing (OOM) leaves the others' figures
            out["batches"].append({"batch": batch} | error_record(exc))
        log(f"  videoblip batch {batch}: {out['batches'][-1]}")
    return out


PART_FUNCTIONS: dict[str, Callable[[Plan, dict[str, Any]], dict[str, Any]]] = {
    "fils_step.eager": lambda plan, doc: fils_step(plan, doc, compiled=False),
    "fils_step.compiled": lambda plan, doc: fils_step(plan, doc, compiled=True),
    "hf_videomae": hf_videomae, "loader": loader, "videoblip": videoblip,
}


# -- running and recording ---------------------------------------------------------------------------------------
def error_record(exc: BaseException) -> dict[str, str]:
    """The error as strings only (no reference to the frames, so their tensors are freed)."""
    tail = "".join(traceback.format_exception(exc)[-4:])
    return {"error": f"{type(exc).__name__}: {exc}"[:2000], "traceback_tail": tail[-3000:]}


def _alarm(signum: int, frame: object) -> None:
    raise BudgetExceeded("the global time budget ran out inside this part")


def run_part(name: str, plan: Plan, doc: dict[str, Any], deadline: float, fail: set[str]) -> dict[str, Any]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return {"skipped": f"time budget spent ({time.monotonic() - START:.0f} s elapsed of {doc['settings']['budget_s']} s)"}
    log(f"{name}: start ({remaining:.0f} s of budget left)")
    started = time.monotonic()
    signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, remaining)
        try:
            if name in fail:
                raise RuntimeError(f"injected failure (--fail-section {name})")
            result = PART_FUNCTIONS[name](plan, doc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)  # disarmed before the error is recorded
    except Exception as exc:  # noqa: BLE001 - every part is recorded, whatever it raised, and the next one runs
        result = error_record(exc)
    free_memory(plan.device)
    result["seconds"] = round(time.monotonic() - started, 1)
    log(f"{name}: {json.dumps(result, default=str)[:400]}")
    return result


def part_result(doc: dict[str, Any], name: str) -> dict[str, Any]:
    section, _, sub = name.partition(".")
    found = doc["sections"].get(section, {})
    return found.get(sub, {}) if sub else found


def store(doc: dict[str, Any], name: str, result: dict[str, Any]) -> None:
    section, _, sub = name.partition(".")
    if sub:
        doc["sections"].setdefault(section, {})[sub] = result
    else:
        doc["sections"][section] = result


def write(doc: dict[str, Any], paths: list[Path]) -> None:
    text = json.dumps(doc, indent=2, default=str) + "\n"
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_text(text)
            partial.replace(path)  # a kill mid-write leaves the previous complete file
        except OSError as exc:  # one unwritable copy does not cost the other
            log(f"could not write {path}: {exc}")


def environment(device: torch.device, given_commit: str | None) -> dict[str, Any]:
    """Versions, GPU, cores (record.py's ``machine`` plus the CUDA side) and the commit measured."""
    info: dict[str, Any] = {"torch": torch.__version__}
    try:
        import transformers

        info |= machine(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        transformers=transformers.__version__)
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            info |= {"gpu_memory_gib": round(props.total_memory / 2**30, 1), "gpu_sms": props.multi_processor_count,
                     "gpu_capability": f"{props.major}.{props.minor}"}
    except Exception as exc:  # noqa: BLE001 - the figures matter more than their description
        info |= error_record(exc)
    try:
        info["commit"] = given_commit or commit()
    except OSError as exc:  # no git on the machine
        info["commit"] = f"unknown ({exc})"
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON (a copy goes to $OUT/gpu_check.json "
                        "when $OUT is set)")
    parser.add_argument("--budget-s", type=float, default=290.0, help="global time budget, imports included")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 192, 128, 96, 64, 32],
                        help="training batches tried in descending order until one fits (not with --smoke)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (not with --smoke)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for MFU (default: dense bf16 of a detected H100/H200)")
    parser.add_argument("--sections", nargs="+", choices=PARTS, default=list(PARTS),
                        help="run only these parts (always in the order listed in the default)")
    parser.add_argument("--fail-section", action="append", choices=PARTS, default=[],
                        help="fault injection for tests: raise inside this part (repeatable)")
    parser.add_argument("--commit", default=None,
                        help="commit to record when the checkout has no .git (a copied working tree)")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny shapes (size tiny, 8 frames, 32 px, batches 4/2, VideoBLIP tiny, 2 timed steps)")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on the GPU machine, or pass --smoke for the CPU code-path check",
              file=sys.stderr)
        return 2
    plan = Plan.from_args(args)
    paths = [args.out] + ([Path(os.environ["OUT"]) / "gpu_check.json"] if os.environ.get("OUT") else [])
    deadline = START + args.budget_s
    doc: dict[str, Any] = {
        "benchmark": "gpu_check", "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment(plan.device, args.commit),
        "settings": {"smoke": plan.smoke, "budget_s": args.budget_s, "device": str(plan.device),
                     "model": {"size": plan.model.size, "frames": plan.model.num_frames, "img_size": plan.model.img_size,
                               "patch": plan.model.patch_size, "mask_ratio": plan.model.mask_ratio,
                               "activation_checkpointing": list(plan.model.activation_checkpointing)},
                     "precision": "bf16 autocast", "batches": list(plan.batches), "timed_steps": plan.steps,
                     "peak_tflops": plan.peak_tflops, "peak_source": plan.peak_source,
                     "sections": args.sections, "fail_section": args.fail_section},
        "sections": {},
    }
    write(doc, paths)
    for name in PARTS:
        if name in args.sections:
            store(doc, name, run_part(name, plan, doc, deadline, set(args.fail_section)))
            doc["elapsed_s"] = round(time.monotonic() - START, 1)
            write(doc, paths)
    print(json.dumps(doc, indent=2, default=str))
    failed = [name for name in PARTS if "error" in part_result(doc, name)]
    if failed:
        log(f"parts with errors (see the JSON): {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
