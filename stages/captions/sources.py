"""Where captions come from, one shard at a time: VideoBLIP on uniformly sampled frames, the narrations the
dataset adapter found, or a file the user supplies. Every source gives one row per clip of the shard
(``CAPTION_SCHEMA``); a clip without a caption gets ``""`` and a status saying why, never a missing row.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.config import ConfigError
from pipeline.fingerprint import sha256_file, stable_json
from pipeline.shards import SHARDS_SUBDIR, ShardSample, iter_shard
from pipeline.video.decode import DecodeError, decode_frames, resize_frames, uniform_indices
from stages.captions.config import CaptionsConfig
from stages.captions.tables import CAPTION_SCHEMA, STATUS_OK
from stages.shard.tables import read_clips

if TYPE_CHECKING:
    from stages.captions.videoblip import VideoCaptioner

log = logging.getLogger("fils.captions")

Result = tuple[str, str]  # (caption, status)
NO_NARRATION = "missing: the dataset annotations have no narration for this clip"
EMPTY_GENERATION = "empty: the captioner generated no text"
NOT_IN_SHARD = "failed: clip listed in clips.parquet but not found in its shard"


def _status(caption: str | None, missing: str) -> Result:
    text = (caption or "").strip()
    return (text, STATUS_OK) if text else ("", missing)


def load_caption_file(path: Path) -> tuple[dict[str, str], str]:
    """``{key: caption}`` of a user caption file (Parquet or CSV with columns key, caption) and its sha256."""
    if not path.is_file():
        raise ConfigError(f"captions.file {path} does not exist; pass a Parquet or CSV file with columns key, caption")
    try:
        if path.suffix.lower() == ".csv":
            as_text = pacsv.ConvertOptions(column_types={"key": pa.string(), "caption": pa.string()},
                                           strings_can_be_null=False)
            table = pacsv.read_csv(path, convert_options=as_text)
        else:
            table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"captions.file {path} could not be read as {path.suffix[1:]}: {exc}") from None
    missing = [c for c in ("key", "caption") if c not in table.column_names]
    if missing:
        raise ConfigError(f"captions.file {path} lacks column(s) {', '.join(missing)}: it needs key and caption, "
                          f"found {', '.join(table.column_names) or 'no columns'}")
    keys = table.column("key").cast(pa.string()).to_pylist()
    captions = table.column("caption").cast(pa.string()).to_pylist()
    counts = pc.value_counts(pa.array(keys))
    duplicates = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
    if duplicates:
        raise ConfigError(f"captions.file {path} has {len(duplicates)} duplicated key(s), e.g. {duplicates[:3]}; "
                          "give each clip one caption")
    return {k: c or "" for k, c in zip(keys, captions) if k is not None}, sha256_file(path)


@lru_cache(maxsize=1)
def load_captioner(model: str, revision: str | None, device: str | None, dtype: str | None) -> VideoCaptioner:
    """Loaded once per worker process and reused for its next shards (maxsize 1 frees a replaced model)."""
    from stages.captions.videoblip import VideoCaptioner  # heavy: only when captions are generated

    log.info("loading captioner %s (revision %s)", model, revision or "default")
    return VideoCaptioner.from_pretrained(model, device=device, dtype=dtype, revision=revision)


def clip_frames(sample: ShardSample, num_frames: int, image_size: int) -> np.ndarray:
    """``num_frames`` frames spread uniformly over the clip, short side resized to ``image_size``."""
    meta = sample.meta
    indices = [meta["frame_offset"] + i for i in uniform_indices(meta["num_frames"], num_frames)]
    return resize_frames(decode_frames(sample.mp4, indices), image_size)


def _videoblip(cfg: CaptionsConfig, shard_path: Path) -> tuple[dict[str, Result], dict[str, Any]]:
    captioner = load_captioner(cfg.model, cfg.revision, cfg.torch_device(), cfg.torch_dtype())
    settings = cfg.generation.to_settings()
    results: dict[str, Result] = {}
    batch: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        texts = captioner.caption([frames for _, frames in batch], cfg.prompt, settings)
        results.update({key: _status(text, EMPTY_GENERATION) for (key, _), text in zip(batch, texts)})
        batch.clear()

    for sample in iter_shard(shard_path):
        try:
            batch.append((sample.key, clip_frames(sample, cfg.num_frames, cfg.image_size)))
        except DecodeError as exc:
            results[sample.key] = ("", f"failed: could not decode the clip: {exc}")
            log.warning("clip %s: %s", sample.key, exc)
        if len(batch) == cfg.batch_size:
            flush()
    if batch:
        flush()
    provenance = {"model_id": captioner.model_id, "model_revision": captioner.revision, "prompt": cfg.prompt,
                  "generation": stable_json(cfg.generation.model_dump(mode="json"))}
    return results, provenance


def caption_shard(cfg: CaptionsConfig, shard_dir: Path, shard_name: str) -> pa.Table:
    """Caption every clip that clips.parquet lists in ``shard_name``, in key order."""
    clips = read_clips(shard_dir, ["key", "shard", "narration"]).filter(pc.field("shard") == shard_name)
    keys = clips.column("key").to_pylist()
    provenance: dict[str, Any] = {"model_id": None, "model_revision": None, "prompt": None, "generation": None}
    if cfg.source == "narration":
        results = {k: _status(n, NO_NARRATION) for k, n in zip(keys, clips.column("narration").to_pylist())}
    elif cfg.source == "file":
        assert cfg.file is not None  # the config validator guarantees it
        captions, digest = load_caption_file(cfg.file)
        missing = f"missing: no caption for this key in {cfg.file}"
        results = {k: _status(captions.get(k), missing) for k in keys}
        provenance.update(model_id=str(cfg.file), model_revision=digest)
    else:
        results, provenance = _videoblip(cfg, shard_dir / SHARDS_SUBDIR / shard_name)
    rows = []
    for key in sorted(keys):
        caption, status = results.get(key, ("", NOT_IN_SHARD))
        rows.append({"key": key, "shard": shard_name, "caption": caption, "status": status, "source": cfg.source,
                     **provenance})
    return pa.Table.from_pylist(rows, schema=CAPTION_SCHEMA)
