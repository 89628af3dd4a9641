"""The `shard` stage: probe and validate every source video, cut and re-encode its clips, write WebDataset
shards plus ``clips.parquet`` and ``rejects.parquet``.

One unit of work is one source video, so a bad or hanging file costs only its own unit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.fingerprint import file_identity, hash_value, sha256_file, stable_json
from pipeline.runner import StageError
from pipeline.shards import SHARDS_SUBDIR, ShardItem, plan_shards, shuffled, write_shard
from pipeline.stage import StageContext, StageResult, StageSpec, Unit
from pipeline.tables import write_table
from pipeline.video.ingest import ClipRequest, EncodeSettings, encode_clips
from pipeline.video.probe import VideoRejected, iter_frames
from stages.config import FilsConfig
from stages.shard.adapters import AdapterResult, ClipSpec, list_clips
from stages.shard.source_config import SourceConfig
from stages.shard.tables import CLIP_SCHEMA, CLIPS_FILE, REJECT_SCHEMA, REJECTS_FILE

log = logging.getLogger("fils.shard")

CLIPS_JSON = "clips.json"
REJECTS_JSON = "rejects.json"


def _config_of(cfg: FilsConfig) -> dict[str, Any]:
    # Paths stay out: the inputs digest identifies the data, so a moved dataset keeps its cache.
    source = cfg.data.source.model_dump(mode="json", exclude={"root", "annotations"})
    return {"source": source, "shard": cfg.shard.model_dump(mode="json")}


@lru_cache(maxsize=8)
def _listing(source_json: str) -> AdapterResult:
    """The adapter's listing, once per process: it walks the dataset tree, which is slow on big datasets."""
    return list_clips(SourceConfig.model_validate_json(source_json))


def listing_for(cfg: FilsConfig) -> AdapterResult:
    return _listing(cfg.data.source.model_dump_json())


def clips_for(cfg: FilsConfig) -> list[ClipSpec]:
    return listing_for(cfg).clips


def _display_path(clip: ClipSpec, root: Path) -> str:
    if clip.source is None:
        return clip.source_name
    try:
        return str(clip.source.relative_to(root))
    except ValueError:
        return str(clip.source)


def _inputs_digest(cfg: FilsConfig) -> str:
    _listing.cache_clear()  # the fingerprint must see the dataset as it is now; plan then reuses this listing
    result = listing_for(cfg)
    root = cfg.data.source.root
    videos = sorted({c.source for c in result.clips if c.source is not None})
    return hash_value({
        "annotations": [sha256_file(p) for p in result.annotation_files],
        "videos": [file_identity(v, root if v.is_relative_to(root) else None) for v in videos],
        "missing": sorted({c.source_name for c in result.clips if c.source is None}),
    })


def _plan(ctx: StageContext) -> list[Unit]:
    by_source: dict[Path, list[ClipSpec]] = {}
    for clip in clips_for(ctx.cfg):
        if clip.source is not None:
            by_source.setdefault(clip.source, []).append(clip)
    root = ctx.cfg.data.source.root
    units = []
    for source, clips in sorted(by_source.items()):
        name = _display_path(clips[0], root)
        unit_id = "v" + hashlib.sha1(name.encode()).hexdigest()[:16]
        units.append(Unit(unit_id, {"source": str(source), "name": name, "clips": [_clip_json(c) for c in clips]},
                          size_bytes=source.stat().st_size))
    return units


def _clip_json(clip: ClipSpec) -> dict[str, Any]:
    """A unit carries its video's clips, so a worker never lists the whole dataset again."""
    return {**dataclasses.asdict(clip), "source": str(clip.source)}


def _clip_of(data: dict[str, Any]) -> ClipSpec:
    return ClipSpec(**{**data, "source": Path(data["source"]), "labels": tuple(data["labels"])})


def _requests(clips: list[ClipSpec], cfg: FilsConfig) -> list[ClipRequest]:
    requests = []
    for clip in clips:
        end = clip.end
        if cfg.shard.max_clip_s is not None and not clip.windowed:
            end = min(end, clip.start + cfg.shard.max_clip_s) if end is not None else clip.start + cfg.shard.max_clip_s
        requests.append(ClipRequest(clip.key, clip.start, end, cfg.shard.window_s if clip.windowed else None))
    return requests


def _clip_meta(spec: ClipSpec, name: str, key: str, start: float, end: float, fps: float, frames: int,
               width: int, height: int, frame_offset: int) -> dict[str, Any]:
    return {"key": key, "split": spec.split, "source_path": name, "start": round(start, 6), "end": round(end, 6),
            "fps": fps, "num_frames": frames, "frame_offset": frame_offset, "width": width, "height": height,
            "label": spec.label, "label_name": spec.label_name, "verb_class": spec.verb_class,
            "noun_class": spec.noun_class, "labels": list(spec.labels), "narration": spec.narration}


def _copy_source(source: Path, clips: list[ClipSpec], name: str, out_dir: Path
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``reencode: false``: keep the source bytes and record which frames belong to each clip."""
    info, frames = iter_frames(source, None, want=lambda t: False)
    times = [f.t for f in frames]
    metas, rejects = [], []
    for clip in clips:
        end = clip.end if clip.end is not None else float("inf")
        inside = [i for i, t in enumerate(times) if clip.start <= t < end]
        if not inside:
            rejects.append(clip_reject(name, clip, "clip is outside the decodable video"))
            continue
        (out_dir / f"{clip.key}.mp4").write_bytes(source.read_bytes())
        metas.append(_clip_meta(clip, name, clip.key, times[inside[0]], times[inside[-1]] + 1 / info.fps,
                                info.fps, len(inside), info.width, info.height, inside[0]))
    return metas, rejects


def clip_reject(name: str, clip: ClipSpec, reason: str) -> dict[str, Any]:
    return {"source_path": name, "key": clip.key, "reason": reason, "split": clip.split, "clips": 1}


def video_rejects(name: str, clips: list[ClipSpec], reason: str) -> list[dict[str, Any]]:
    """A whole video lost: one row per split of its clips, counting them."""
    per_split = Counter(c.split for c in clips)
    return [{"source_path": name, "key": None, "reason": reason, "split": split, "clips": count}
            for split, count in sorted(per_split.items())]


def process_video(ctx: StageContext, unit: Unit, out_dir: Path) -> dict[str, Any]:
    cfg = ctx.cfg
    source, name = Path(unit.payload["source"]), unit.payload["name"]
    specs = [_clip_of(c) for c in unit.payload["clips"]]
    metas: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    try:
        if cfg.shard.reencode:
            settings = EncodeSettings(cfg.shard.short_side, cfg.shard.fps, cfg.shard.gop, cfg.shard.crf,
                                      cfg.shard.preset)
            _, encoded, failures = encode_clips(source, _requests(specs, cfg), out_dir, settings, cfg.shard.min_clip_s)
            by_key = {c.key: c for c in specs}
            for clip in encoded:
                metas.append(_clip_meta(by_key[clip.request_key], name, clip.key, clip.start, clip.end, clip.fps,
                                        clip.frames, clip.width, clip.height, 0))
            rejects += [clip_reject(name, by_key[key], reason) for key, reason in failures.items()]
        else:
            metas, rejects = _copy_source(source, specs, name, out_dir)
    except VideoRejected as exc:
        for leftover in out_dir.glob("*.mp4"):
            leftover.unlink()
        metas, rejects = [], video_rejects(name, specs, exc.reason)
    (out_dir / CLIPS_JSON).write_text(json.dumps(metas))
    (out_dir / REJECTS_JSON).write_text(json.dumps(rejects))
    return {"clips": len(metas), "rejects": len(rejects)}


MAX_REJECT_LINES = 20


def _log_rejects(rejects: list[dict[str, Any]]) -> None:
    """One line per video and reason, at most MAX_REJECT_LINES of them: a dataset subset with the full annotation
    files would otherwise log a line for each of tens of thousands of missing clips (rejects.parquet has them all)."""
    groups: Counter[tuple[str, str]] = Counter()
    for reject in rejects:
        groups[reject["source_path"], reject["reason"]] += reject["clips"]
    ordered = sorted(groups.items())
    for (source, reason), clips in ordered[:MAX_REJECT_LINES]:
        log.warning("rejected %s (%d clip%s): %s", source, clips, "" if clips == 1 else "s", reason)
    if len(ordered) > MAX_REJECT_LINES:
        rest = ordered[MAX_REJECT_LINES:]
        log.warning("... and %d more clip(s) of %d more video(s) rejected; every one is in %s",
                    sum(c for _, c in rest), len({src for (src, _), _ in rest}), REJECTS_FILE)


def _finalize(ctx: StageContext, units: list[Unit]) -> StageResult:
    cfg = ctx.cfg
    root = cfg.data.source.root
    rejects = [clip_reject(_display_path(c, root), c, "video named in the annotations was not found under "
                           "data.source.root") for c in clips_for(cfg) if c.source is None]
    items: list[ShardItem] = []
    for unit in units:
        folder = ctx.unit_dir(unit.id)
        rejects += json.loads((folder / REJECTS_JSON).read_text())
        items += [ShardItem(m["key"], folder / f"{m['key']}.mp4", m) for m in json.loads((folder / CLIPS_JSON).read_text())]
    _log_rejects(rejects)
    if not items:
        raise StageError(f"shard: no usable clip left ({len(rejects)} rejected); "
                         f"first reasons: {stable_json(rejects[:3])}")
    items.sort(key=lambda item: item.key)
    shard_dir = ctx.output_dir / SHARDS_SUBDIR
    shard_dir.mkdir()
    rows, shard_count = [], 0
    for split in sorted({item.meta["split"] for item in items}):
        in_split = [i for i in items if i.meta["split"] == split]
        if split in cfg.shard.shuffle_splits:
            in_split = shuffled(in_split, cfg.shard.shuffle_seed)
        groups = plan_shards(in_split, cfg.shard.target_shard_mb * 2**20, cfg.shard.max_clips_per_shard,
                             cfg.shard.min_shards)
        for index, group in enumerate(groups):
            shard_name = f"{split}-{index:06d}.tar"
            write_shard(shard_dir / shard_name, group)
            rows += [{**{k: item.meta[k] for k in CLIP_SCHEMA.names if k != "shard"}, "shard": shard_name}
                     for item in group]
        shard_count += len(groups)
    write_table(rows, CLIP_SCHEMA, ctx.output_dir / CLIPS_FILE)
    write_table(sorted(rejects, key=lambda r: (r["source_path"], r["key"] or "", r["split"] or "")), REJECT_SCHEMA,
                ctx.output_dir / REJECTS_FILE)
    splits = {s: sum(1 for r in rows if r["split"] == s) for s in sorted({r["split"] for r in rows})}
    return StageResult(row_counts={"clips": len(rows), "rejects": len(rejects), "shards": shard_count,
                                   "videos": len(units)},
                       extra={"clips_per_split": splits})


SPEC = StageSpec(name="shard", version="2", upstream=(), config_of=_config_of, plan=_plan, process=process_video,
                 finalize=_finalize, inputs_digest=_inputs_digest, sections=("data.source", "shard"))

