"""How the bookkeeping around the work grows with the dataset: N source videos (1k, 10k, 100k: symbolic links to
one tiny video, listed in a CSV) through every step that touches all of them, each step in a fresh process, timed
and with its peak memory (resident set above the process's size before the step):

  * ``listing``: the dataset adapter lists the clips;
  * ``fingerprint``: the shard stage's fingerprint (listing plus the identity of every source file);
  * ``plan``: preparing the shard stage (fingerprint, staging area, one unit per video, which are sealed) and
    grouping the units into batches;
  * ``manifest_write``: writing and committing a ``clips.parquet`` of N rows through the stage's writer and the
    artifact store (sha256 of every file); ``manifest_read``: reading it back through the stage's reader;
  * ``status``: ``fils status --json`` as a user runs it (a process of its own, imports included);
  * ``flow``: the Prefect fan-out of the shard stage's code path over N units that do no work (each still sealed
    and fsynced), batched as configured, on a real local Prefect server: the orchestration cost per video.

In the same run, at the smallest N, the same flow with one task run per unit (``runtime.batch_max_units=1``, as
before batching) is the baseline, and the real shard stage on generated 320x240 clips gives the work per video
that the orchestration overhead is compared with (aim: below 2 %). The growth factor of a step from one N to the
next is its time ratio over the size ratio (1.0: linear; below 1 where a fixed cost dominates). The projection to
Something-Something-V2 (220,847 videos) extends the line through the two largest sizes.

    python benchmarks/bench_scale.py [--sizes 1000 10000 100000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from record import REPO, cell, describe_machine, save, spread

SSV2_VIDEOS = 220_847
STEPS = ("listing", "fingerprint", "plan", "manifest_write", "manifest_read", "status", "flow")
WORKERS = 2


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_dataset(root: Path, n: int) -> Path:
    """``n`` labelled videos, each a symbolic link to one 8-frame 64x48 H.264 file, and the CSV that lists them."""
    from pipeline.samples.synthetic import make_clip
    from pipeline.video.encode import H264Writer

    root.mkdir(parents=True)
    template = root / "template.mp4"
    writer = H264Writer(template, 64, 48, fps=10, gop=8, crf=20, preset="veryfast")
    for frame in make_clip("circle", seed=0, width=64, height=48, frames=8).frames:
        writer.write(frame)
    writer.close()
    (root / "videos").mkdir()
    with open(root / "samples.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        for i in range(n):
            name = f"videos/v{i:07d}.mp4"
            os.symlink(template, root / name)
            writer.writerow([name, i % 174, "train" if i % 10 else "val"])
    return root


def write_config(root: Path, workdir: Path, batch_max_units: int = 500) -> Path:
    path = workdir.with_suffix(".yaml")
    path.write_text(f"workdir: {workdir}\n"
                    f"data: {{source: {{kind: csv, root: {root}, annotations: {root / 'samples.csv'}}}}}\n"
                    f"runtime: {{workers: {WORKERS}, progress: false, batch_max_units: {batch_max_units}}}\n"
                    "shard: {short_side: 48}\n")
    return path


# --- the steps, each run in a process of its own (``--step``) ---------------------------------------------------

def noop_unit(ctx: Any, unit: Any, out_dir: Path) -> dict[str, Any]:
    return {}


def _noop_spec(n: int) -> Any:
    from pipeline.stage import StageResult, StageSpec, Unit

    return StageSpec(name="scale_probe", version="1", upstream=(), config_of=lambda cfg: {"n": n},
                     plan=lambda ctx: [Unit(f"v{i:07d}", size_bytes=1000) for i in range(n)], process=noop_unit,
                     finalize=lambda ctx, units: StageResult({"units": len(units)}))


def run_step(step: str, config: Path, n: int) -> dict[str, Any]:
    from pipeline.artifacts import ArtifactStore
    from pipeline.batching import batch_units
    from pipeline.runner import current_fingerprint, prepare_stage
    from pipeline.tables import write_table
    from stages import registry
    from stages.config import load_config
    from stages.shard.adapters import list_clips
    from stages.shard.tables import CLIP_SCHEMA, CLIPS_FILE, read_clips

    cfg = load_config(config)
    spec, store = registry()["shard"], ArtifactStore(cfg.workdir, registry())
    before = _rss_mb()
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if step == "listing":
        extra["clips"] = len(list_clips(cfg.data.source).clips)
    elif step == "fingerprint":
        current_fingerprint(spec, cfg, {})
    elif step == "plan":
        prepared = prepare_stage(spec, cfg, store)
        extra["batches"] = len(batch_units(prepared.pending, cfg.runtime.batch_max_units,
                                           int(cfg.runtime.batch_max_mb * 2**20), cfg.runtime.workers))
    elif step == "manifest_write":
        prepared = prepare_stage(spec, cfg, store)
        start, before = time.perf_counter(), _rss_mb()  # the commit of N rows, not the plan
        rows = [{"key": f"v{i:07d}", "shard": f"train-{i // 1000:06d}.tar", "split": "train",
                 "source_path": f"videos/v{i:07d}.mp4", "start": 0.0, "end": 0.8, "fps": 10.0, "num_frames": 8,
                 "frame_offset": 0, "width": 64, "height": 48, "label": i % 174, "label_name": str(i % 174),
                 "verb_class": -1, "noun_class": -1, "labels": [], "narration": ""} for i in range(n)]
        write_table(rows, CLIP_SCHEMA, prepared.run.output_dir / CLIPS_FILE)
        prepared.run.commit(stage_version=spec.version, config=spec.config_of(cfg), upstream={},
                            inputs_digest=prepared.inputs_digest, row_counts={"clips": n}, timings={})
        extra["bytes"] = (cfg.workdir / "shard" / CLIPS_FILE).stat().st_size
    elif step == "manifest_read":
        extra["rows"] = read_clips(cfg.workdir / "shard").num_rows
        read_clips(cfg.workdir / "shard", columns=["key", "shard"])
    elif step == "flow":
        extra |= _flow(cfg, n)
    else:
        raise ValueError(f"unknown step {step!r}")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "memory_mb": max(0.0, peak - before), **extra}


def _flow(cfg: Any, n: int) -> dict[str, Any]:
    from prefect import flow

    from flows.fils_flow import fan_out_units
    from pipeline.artifacts import ArtifactStore
    from pipeline.runner import complete_stage, prepare_stage

    spec = _noop_spec(n)

    @flow(name="scale-probe")
    def probe() -> int:
        prepared = prepare_stage(spec, cfg, ArtifactStore(cfg.workdir))
        failures = fan_out_units(prepared)
        complete_stage(prepared, failures)
        return len(prepared.pending)

    return {"units": probe()}


def _in_process(step: str, config: Path, n: int, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--step", step, "--config", str(config), "--n", str(n)],
                         cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"step {step} at N={n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _status(config: Path, env: dict[str, str]) -> dict[str, Any]:
    """``fils status`` as a user runs it: wall time and the process's peak memory (imports included)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "stages.cli", "status", "-c", str(config), "--json"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout = proc.stdout.read()  # type: ignore[union-attr]
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    _, code, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"fils status failed:\n{stderr.decode()[-3000:]}")
    state = {s["stage"]: s["state"] for s in json.loads(stdout)}
    return {"seconds": seconds, "memory_mb": usage.ru_maxrss / 1024, "shard": state["shard"]}


def _shard_work_per_video(tmp: Path, env: dict[str, str]) -> float:
    """Seconds per video of the real shard stage's units (CLI, WORKERS processes) on generated 320x240 clips: the
    stage's own ``process_s``, without the command's start-up."""
    from pipeline.artifacts import SUCCESS_FILE
    from pipeline.samples import SampleSettings, write_samples

    root = tmp / "real-samples"
    write_samples(root, SampleSettings(clips_per_class=4, width=320, height=240, frames=64))
    videos = len(list(root.rglob("*.mp4")))
    config = write_config(root, tmp / "real-work")
    subprocess.run([sys.executable, "-m", "stages.cli", "run", "-c", str(config), "--stages", "shard"], cwd=REPO,
                   env=env, check=True, capture_output=True)
    return json.loads((tmp / "real-work" / "shard" / SUCCESS_FILE).read_text())["timings"]["process_s"] / videos


def measure(tmp: Path, sizes: list[int], env: dict[str, str], repeat: int) -> dict[str, Any]:
    run: dict[str, Any] = {"steps": {}}
    for n in sizes:
        root = write_dataset(tmp / f"data-{n}-{repeat}", n)
        config = write_config(root, tmp / f"work-{n}-{repeat}")
        steps = {}
        for step in STEPS:
            steps[step] = _status(config, env) if step == "status" else _in_process(step, config, n, env)
        assert steps["status"]["shard"] == "done", steps["status"]
        run["steps"][n] = steps
        shutil.rmtree(root)
        shutil.rmtree(tmp / f"work-{n}-{repeat}")
    n = sizes[0]
    unbatched = write_config(tmp / "unused", tmp / f"unbatched-{repeat}", batch_max_units=1)
    run["unbatched_flow"] = _in_process("flow", unbatched, n, env)
    run["shard_work_s_per_video"] = _shard_work_per_video(tmp / f"real-{repeat}", env)
    return run


def _projected(steps: dict[int, Any], step: str, sizes: list[int]) -> float:
    """Seconds at SSv2's size on the line through the two largest sizes (a fixed cost such as imports stays fixed)."""
    large = steps[sizes[-1]][step]["seconds"]
    if len(sizes) == 1:
        return large * SSV2_VIDEOS / sizes[-1]
    slope = (large - steps[sizes[-2]][step]["seconds"]) / (sizes[-1] - sizes[-2])
    return large + max(0.0, slope) * (SSV2_VIDEOS - sizes[-1])


def summarise(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    figures: dict[str, Any] = {"steps": {}}
    for step in STEPS:
        per_n = {}
        for i, n in enumerate(sizes):
            per_n[str(n)] = {"seconds": spread([r["steps"][n][step]["seconds"] for r in runs]),
                             "memory_mb": spread([r["steps"][n][step]["memory_mb"] for r in runs])}
            if i:
                prev = sizes[i - 1]
                per_n[str(n)]["growth"] = spread([
                    r["steps"][n][step]["seconds"] / r["steps"][prev][step]["seconds"] / (n / prev) for r in runs])
        per_n["ssv2_projected_s"] = spread([_projected(r["steps"], step, sizes) for r in runs])
        figures["steps"][step] = per_n
    small, large = sizes[0], sizes[-1]
    figures["flow_ms_per_video"] = spread([1000 * r["steps"][large]["flow"]["seconds"] / large for r in runs])
    figures["unbatched_flow_ms_per_video"] = spread([1000 * r["unbatched_flow"]["seconds"] / small for r in runs])
    figures["batched_flow_ms_per_video_at_smallest"] = spread(
        [1000 * r["steps"][small]["flow"]["seconds"] / small for r in runs])
    figures["shard_work_s_per_video"] = spread([r["shard_work_s_per_video"] for r in runs])
    figures["overhead_percent_of_work"] = spread(
        [100 * r["steps"][large]["flow"]["seconds"] / large / r["shard_work_s_per_video"] for r in runs])
    return figures


LABELS = {"listing": "adapter listing", "fingerprint": "shard fingerprint", "plan": "plan + batches",
          "manifest_write": "write + commit `clips.parquet`", "manifest_read": "read `clips.parquet`",
          "status": "`fils status` (whole process, imports included)", "flow": "Prefect fan-out, no-op units"}


def render_markdown(doc: dict) -> str:
    f, s = doc["figures"], doc["settings"]
    sizes = [str(n) for n in s["sizes"]]
    head = " | ".join(f"{int(n):,} videos" for n in sizes)
    lines = [f"`python benchmarks/bench_scale.py` ({s['workers']} workers, batches of at most "
             f"{s['batch_max_units']} units; {describe_machine(doc)}). Seconds, and peak memory above the process's "
             "size before the step (MB); growth: time ratio over size ratio between neighbouring sizes (1.0 = "
             "linear, below 1 where a fixed cost such as imports dominates); the SSv2 column extends the line through the two "
             "largest sizes to 220,847 videos:", "",
             f"| step | {head} | growth | SSv2 (projected) |", "|---|" + "---|" * (len(sizes) + 2)]
    for step in STEPS:
        row = f["steps"][step]
        cells = [f"{cell(row[n]['seconds'])} s, {cell(row[n]['memory_mb'], '{:.0f}')} MB" for n in sizes]
        growth = ", ".join(cell(row[n]["growth"], "{:.2f}") for n in sizes[1:])
        lines.append(f"| {LABELS[step]} | {' | '.join(cells)} | {growth} | {cell(row['ssv2_projected_s'])} s |")
    lines += ["", f"Orchestration per video at {int(sizes[-1]):,} videos: {cell(f['flow_ms_per_video'])} ms "
              f"(batched; at {int(sizes[0]):,} videos {cell(f['batched_flow_ms_per_video_at_smallest'])} ms, and "
              f"{cell(f['unbatched_flow_ms_per_video'])} ms with one task run per video as before batching), "
              f"against {cell(f['shard_work_s_per_video'])} s of shard-stage work per generated 320x240 video: "
              f"**{cell(f['overhead_percent_of_work'], '{:.2f}')} %** of the work (aim: below 2 %)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/scale.json)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # one step, in a process of its own
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.config, args.n)))
        return
    from flows.local_server import start_server

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "prefect")
        try:
            env = server.env | {"PREFECT_LOGGING_LEVEL": "WARNING"}
            runs = [measure(Path(tmp), args.sizes, env, repeat) for repeat in range(args.repeats)]
        finally:
            server.stop()
    settings = {"sizes": args.sizes, "repeats": args.repeats, "workers": WORKERS, "batch_max_units": 500,
                "ssv2_videos": SSV2_VIDEOS}
    save("scale", settings, summarise(runs, args.sizes), args.out)


if __name__ == "__main__":
    main()
