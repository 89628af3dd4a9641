"""The `optical_flow` stage: optical flow of every clip -> its action area (MOFO boxes), written to
``action_areas.parquet`` with contact sheets for a visual check.

One unit of work is a run of up to ``clips_per_unit`` clips of one shard, so a small dataset still uses every
worker and a unit's time limit stays bounded. A clip that cannot be decoded gets a `failed` row, never a
failed unit; a unit that fails as a whole (worker killed, unreadable shard) turns its clips into `failed` rows.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.errors import ENVIRONMENT_ERRORS
from pipeline.fingerprint import stable_json, without_runtime_only
from pipeline.runner import StageError
from pipeline.shards import SHARDS_SUBDIR, ShardSample, iter_shard
from pipeline.stage import StageContext, StageResult, StageSpec, Unit
from pipeline.video.decode import decode_frames
from stages.config import FilsConfig
from stages.optical_flow.boxes import ActionArea, action_area
from stages.optical_flow.config import OpticalFlowConfig
from stages.optical_flow.contact_sheet import render_tile, write_sheets
from stages.optical_flow.flow_fields import ClipFlow, FlowFn, clip_flows, make_flow, pixel_flows
from stages.optical_flow.tables import ACTION_AREAS_FILE, write_action_areas
from stages.shard.tables import read_clips

log = logging.getLogger("fils.optical_flow")

ROWS_JSON = "rows.json"
SHEETS_SUBDIR = "contact_sheets"
STATUSES = ("ok", "fallback", "failed")


RUNTIME_ONLY = ("optical_flow.clips_per_unit",)  # how the work is split, not what it computes


def _config_of(cfg: FilsConfig) -> dict[str, Any]:
    return without_runtime_only(cfg.optical_flow.model_dump(mode="json"), RUNTIME_ONLY, "optical_flow")


def _sheet_keys(keys: list[str], count: int) -> list[str]:
    """``count`` clips spread evenly over the sorted keys (deterministic, so reruns show the same clips)."""
    count = min(count, len(keys))
    return [keys[int((i + 0.5) * len(keys) / count)] for i in range(count)]


def _plan(ctx: StageContext) -> list[Unit]:
    ocfg = ctx.cfg.optical_flow
    if isinstance(make_flow(ocfg), ClipFlow):
        _check_encoding_for_motion_vectors(ocfg.backend, ctx.upstream["shard"].config["shard"])
    clips = read_clips(ctx.upstream_dir("shard"), columns=["key", "shard"]).to_pylist()
    by_shard: dict[str, list[str]] = {}
    for clip in clips:
        by_shard.setdefault(clip["shard"], []).append(clip["key"])
    sheet = set(_sheet_keys(sorted(c["key"] for c in clips), ocfg.contact_sheet.clips))
    units = []
    for shard, keys in sorted(by_shard.items()):
        keys.sort()
        for n, start in enumerate(range(0, len(keys), ocfg.clips_per_unit)):
            chunk = keys[start:start + ocfg.clips_per_unit]
            units.append(Unit(f"{Path(shard).stem}-{n:04d}",
                              {"shard": shard, "keys": chunk, "sheet_keys": [k for k in chunk if k in sheet]}))
    return units


ONE_REFERENCE_PRESETS = ("ultrafast", "superfast", "veryfast")  # x264 presets with ref=1


def _check_encoding_for_motion_vectors(backend: str, shard: dict[str, Any]) -> None:
    """The motion vectors are one frame of motion only if the shards were re-encoded with one reference frame."""
    if not shard["reencode"]:
        raise StageError(f"optical_flow.backend={backend} reads the H.264 motion vectors of re-encoded shards, and "
                         "these shards keep the source bytes (shard.reencode: false), which may have none: choose "
                         "backend dis, or re-encode the shards")
    if shard["preset"] not in ONE_REFERENCE_PRESETS:
        raise StageError(f"optical_flow.backend={backend} needs shards encoded with one reference frame, and these "
                         f"used x264 preset {shard['preset']!r}, whose blocks may predict from 2 or more frames back "
                         "(the exported vectors do not say how far): choose backend dis, or shard.preset one of "
                         f"{', '.join(ONE_REFERENCE_PRESETS)}")


def _row(key: str, backend: str, area: ActionArea | None, indices: list[int], reason: str = "") -> dict[str, Any]:
    if area is None:
        return {"key": key, "status": "failed", "reason": reason, "backend": backend,
                "x1": None, "y1": None, "x2": None, "y2": None, "motion": None, "frame_indices": [], "frame_boxes": []}
    x1, y1, x2, y2 = area.box
    return {"key": key, "status": area.status, "reason": area.reason or None, "backend": backend,
            "x1": x1, "y1": y1, "x2": x2, "y2": y2, "motion": area.motion, "frame_indices": indices,
            "frame_boxes": area.frame_boxes.tolist()}


def clip_area(sample: ShardSample, ocfg: OpticalFlowConfig, flow: FlowFn | ClipFlow
              ) -> tuple[list[int], np.ndarray | None, np.ndarray, ActionArea]:
    """Flow over every ``frame_step``-th frame of a clip and its action area: (indices, the decoded frames or None
    when the backend needed none, flows, area)."""
    indices = list(range(0, int(sample.meta["num_frames"]), ocfg.frame_step))
    rgb, flows = clip_flows(sample.mp4, _stored(sample, indices), ocfg, flow)
    return indices, rgb, flows, area_of(flows, ocfg)


def _stored(sample: ShardSample, indices: list[int]) -> list[int]:
    """Clip frame indices as frames of the stored video (a copied source starts at ``frame_offset``)."""
    offset = int(sample.meta.get("frame_offset") or 0)
    return [i + offset for i in indices]


def area_of(flows: np.ndarray, ocfg: OpticalFlowConfig) -> ActionArea:
    return action_area(flows, ocfg.boxes, min(flows.shape[1:3]) / ocfg.reference_short_side, ocfg.frame_step)


def frames_area(rgb: np.ndarray, ocfg: OpticalFlowConfig, flow: FlowFn) -> tuple[np.ndarray, ActionArea]:
    """Flow and action area of decoded frames ``(T, H, W, 3)`` taken every ``frame_step``-th frame of a clip."""
    flows = pixel_flows(rgb, ocfg, flow)
    return flows, area_of(flows, ocfg)


def process_unit(ctx: StageContext, unit: Unit, out_dir: Path) -> dict[str, Any]:
    ocfg = ctx.cfg.optical_flow
    cv2.setNumThreads(1)  # parallelism is across workers (also when run inline)
    flow = make_flow(ocfg)
    wanted, sheet = set(unit.payload["keys"]), set(unit.payload["sheet_keys"])
    rows: dict[str, dict[str, Any]] = {}
    shard = ctx.upstream_dir("shard") / SHARDS_SUBDIR / unit.payload["shard"]
    try:
        for sample in iter_shard(shard):
            if sample.key not in wanted or sample.key in rows:
                continue
            try:
                indices, rgb, flows, area = clip_area(sample, ocfg, flow)
            except ENVIRONMENT_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad clip never stops the unit
                rows[sample.key] = _row(sample.key, ocfg.backend, None, [], f"{type(exc).__name__}: {exc}")
                log.warning("clip %s failed: %s", sample.key, rows[sample.key]["reason"])
                continue
            rows[sample.key] = _row(sample.key, ocfg.backend, area, indices)
            if sample.key in sheet:
                rgb = rgb if rgb is not None else decode_frames(sample.mp4, _stored(sample, indices))
                tile = render_tile(sample.key, rgb, flows, area, ocfg.contact_sheet.frames,
                                   ocfg.contact_sheet.tile_height)
                cv2.imwrite(str(out_dir / f"{sample.key}.png"), cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
        missing_reason = f"clip not found in shard {unit.payload['shard']}"
    except ENVIRONMENT_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreadable shard fails its remaining clips, not the stage
        missing_reason = f"shard {unit.payload['shard']} unreadable: {type(exc).__name__}: {exc}"
    for key in wanted - rows.keys():
        rows[key] = _row(key, ocfg.backend, None, [], missing_reason)
    (out_dir / ROWS_JSON).write_text(json.dumps([rows[k] for k in sorted(rows)]))
    return {s: sum(1 for r in rows.values() if r["status"] == s) for s in STATUSES}


def _finalize(ctx: StageContext, units: list[Unit]) -> StageResult:
    ocfg = ctx.cfg.optical_flow
    rows: list[dict[str, Any]] = []
    tiles: dict[str, np.ndarray] = {}
    for unit in units:
        folder = ctx.unit_dir(unit.id)
        rows += json.loads((folder / ROWS_JSON).read_text())
        for key in unit.payload["sheet_keys"]:
            if (folder / f"{key}.png").is_file():
                tiles[key] = cv2.cvtColor(cv2.imread(str(folder / f"{key}.png")), cv2.COLOR_BGR2RGB)
    rows.sort(key=lambda r: r["key"])
    failed = [r for r in rows if r["status"] == "failed"]
    for row in failed:
        log.warning("clip %s failed: %s", row["key"], row["reason"])
    if rows and len(failed) == len(rows):
        raise StageError(f"optical_flow: all {len(rows)} clips failed; first reasons: "
                         f"{stable_json([r['reason'] for r in failed[:3]])}")
    write_action_areas(rows, ctx.output_dir / ACTION_AREAS_FILE)
    sheets = write_sheets([tiles[k] for k in sorted(tiles)], ctx.output_dir / SHEETS_SUBDIR,
                          ocfg.contact_sheet.clips_per_sheet)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    return StageResult(row_counts={"clips": len(rows), **counts},
                       extra={"images": [str(p.relative_to(ctx.output_dir)) for p in sheets],
                              "backend": ocfg.backend})


SPEC = StageSpec(name="optical_flow", version="1", upstream=("shard",), config_of=_config_of, plan=_plan,
                 process=process_unit, finalize=_finalize, sections=("optical_flow",), runtime_only=RUNTIME_ONLY)
