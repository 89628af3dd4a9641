"""The `captions` stage: one caption and one text embedding per clip, written to ``<workdir>/captions/``
(``captions.parquet``, ``embeddings.parquet``; schemas in ``stages.captions.tables``).

One unit of work is one shard, so a killed run redoes only the shards that were not sealed. Captions are
the expensive part, so they are also cached outside the stage output, under
``<workdir>/.cache/captions/<hash of caption settings + shard output_id + shard name>/`` (sealed by an atomic
rename). The stage fingerprint covers caption and text-encoder settings; when only the text encoder
changes, every shard finds its captions in the cache and only the embeddings are recomputed.

Before the commit, a caption quality report is written into the output and its gate applied
(``stages.captions.quality``): bad captions fail the stage here, not days into pre-training.

Models are loaded once per worker process. With VideoBLIP on GPUs, each worker is pinned to one GPU
(``runtime.gpus``, ``runtime.workers_per_gpu``) and the shards spread over all of them. A shard's time limit is
``captions.unit_timeout_s`` (raise it on CPU).
"""
from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.artifacts import UNIT_FILE
from pipeline.fingerprint import hash_value, path_identity, without_runtime_only
from pipeline.runner import StageError
from pipeline.sealed_cache import reap_staging, seal_folder
from pipeline.shards import shard_paths
from pipeline.stage import StageContext, StageResult, StageSpec, Unit
from stages.captions.config import CaptionsConfig, TextEncoderConfig
from stages.captions.embeddings import embed_captions
from stages.captions.quality import caption_lengths, gate_applies, measure, top_captions, violations
from stages.captions.quality_report import PLOT_FILE, QUALITY_FILE, REPORT_FILE, write_quality_report
from stages.captions.sources import caption_shard, load_caption_file
from stages.captions.tables import CAPTIONS_FILE, EMBEDDINGS_FILE, STATUS_OK, write_parquet
from stages.config import FilsConfig
from stages.shard.tables import read_clips

log = logging.getLogger("fils.captions")

VERSION = "1"
CACHE_SUBDIR = Path(".cache") / "captions"


def _caption_settings(cfg: CaptionsConfig) -> dict[str, Any]:
    """What the captions depend on (besides the shards): only the settings the chosen source uses."""
    if cfg.source == "narration":
        return {"source": "narration"}
    if cfg.source == "file":
        return {"source": "file", "file": path_identity(cfg.file)}
    return {"source": "videoblip", "model": cfg.model, "model_files": path_identity(cfg.model),
            "revision": cfg.revision, "prompt": cfg.prompt, "num_frames": cfg.num_frames,
            "image_size": cfg.image_size, "dtype": cfg.dtype, "generation": cfg.generation.model_dump(mode="json")}


# Batch sizes, the device, the time limit and allowing pickled checkpoints do not change what is computed.
RUNTIME_ONLY = ("captions.batch_size", "captions.device", "captions.unit_timeout_s", "captions.text_encoder.batch_size",
                "captions.text_encoder.allow_pickle")


def text_encoder_identity(te: TextEncoderConfig) -> dict[str, Any]:
    """What a text encoder's embeddings depend on: its settings and its local files."""
    return {**without_runtime_only(te.model_dump(mode="json"), RUNTIME_ONLY, "captions.text_encoder"),
            "files": [path_identity(v) for v in (te.model, te.pretrained, te.checkpoint)]}


def _config_of(cfg: FilsConfig) -> dict[str, Any]:
    return {"captions": _caption_settings(cfg.captions), "text_encoder": text_encoder_identity(cfg.captions.text_encoder),
            "quality": cfg.captions.quality.model_dump(mode="json")}


def _caption_cache(ctx: StageContext, shard_name: str) -> Path:
    key = hash_value({"version": VERSION, "captions": _caption_settings(ctx.cfg.captions),
                      "shard_output": ctx.upstream["shard"].output_id, "shard": shard_name})
    return ctx.workdir / CACHE_SUBDIR / key[:32]


def _plan(ctx: StageContext) -> list[Unit]:
    cfg = ctx.cfg.captions
    if cfg.source == "file":
        assert cfg.file is not None  # the config validator guarantees it
        load_caption_file(cfg.file)  # a bad file is a config error before any worker starts
    reap_staging(ctx.workdir / CACHE_SUBDIR, all_gone=True)  # the stage lock excludes other writers: killed runs
    shards = shard_paths(ctx.upstream_dir("shard"))
    if not shards:
        raise StageError(f"captions: no shards under {ctx.upstream_dir('shard')}; rerun the shard stage")
    return [Unit(path.stem, {"shard": path.name}) for path in shards]


def process_shard(ctx: StageContext, unit: Unit, out_dir: Path) -> dict[str, Any]:
    cfg = ctx.cfg.captions
    cache = _caption_cache(ctx, unit.payload["shard"])
    reused = cache.is_dir()
    if not reused:
        captions = caption_shard(cfg, ctx.upstream_dir("shard"), unit.payload["shard"])
        seal_folder(cache, lambda staging: write_parquet(captions, staging / CAPTIONS_FILE))
    shutil.copyfile(cache / CAPTIONS_FILE, out_dir / CAPTIONS_FILE)
    captions = pq.read_table(out_dir / CAPTIONS_FILE)
    write_parquet(embed_captions(cfg, captions), out_dir / EMBEDDINGS_FILE)
    ok = pc.sum(pc.equal(captions.column("status"), STATUS_OK)).as_py() or 0
    return {"clips": captions.num_rows, "ok": ok, "captions_reused": reused}


def _finalize(ctx: StageContext, units: list[Unit]) -> StageResult:
    folders = [ctx.unit_dir(u.id) for u in units]
    captions = pa.concat_tables([pq.read_table(f / CAPTIONS_FILE) for f in folders]).sort_by("key")
    embeddings = pa.concat_tables([pq.read_table(f / EMBEDDINGS_FILE) for f in folders]).sort_by("key")
    write_parquet(captions, ctx.output_dir / CAPTIONS_FILE)
    write_parquet(embeddings, ctx.output_dir / EMBEDDINGS_FILE)
    reused = {u.id: json.loads((f / UNIT_FILE).read_text())["captions_reused"] for u, f in zip(units, folders)}
    statuses = Counter(s.split(":")[0] for s in captions.column("status").to_pylist())
    ok = statuses.get(STATUS_OK, 0)
    quality = _judge_quality(ctx, captions, embeddings)
    return StageResult(
        row_counts={"clips": captions.num_rows, "captioned": ok, "without_caption": captions.num_rows - ok,
                    "shards": len(units)},
        extra={"source": ctx.cfg.captions.source, "status_counts": dict(statuses),
               "encoder_id": embeddings.column("encoder_id")[0].as_py(),
               # embeddings are computed for every shard of a run; captions come from the cache when they can
               "captions_reused_shards": sorted(k for k, v in reused.items() if v),
               "captions_generated_shards": sorted(k for k, v in reused.items() if not v),
               "report": REPORT_FILE, "images": [PLOT_FILE], "quality": quality},
    )


def _judge_quality(ctx: StageContext, captions: pa.Table, embeddings: pa.Table) -> dict[str, Any]:
    """Write the caption quality report into the output and apply its gate: a shard past a threshold fails the
    stage here, before the commit (the sealed units and the caption cache are kept)."""
    qcfg, source = ctx.cfg.captions.quality, ctx.cfg.captions.source
    clips = read_clips(ctx.upstream_dir("shard"), ["key", "source_path", "start"]).to_pylist()
    rows = measure(captions, embeddings, {c["key"]: (c["source_path"], c["start"]) for c in clips})
    gated = gate_applies(qcfg, source)
    failed = violations(rows, qcfg) if gated else []
    write_quality_report(ctx.output_dir, source, rows, caption_lengths(captions),
                         top_captions(captions, qcfg.top_captions), qcfg, gated, failed)
    if failed:
        shown = "\n".join(f"  {line}" for line in failed[:10]) + (f"\n  ... and {len(failed) - 10} more"
                                                                 if len(failed) > 10 else "")
        raise StageError(f"captions: the caption quality gate failed:\n{shown}\nthe report is "
                         f"{ctx.output_dir / REPORT_FILE}; nothing was committed and the captions are kept "
                         "(cached). Fix the captioner (model, prompt, generation settings), or accept these "
                         "captions with captions.quality.gate=never or a higher threshold")
    overall = rows[-1]
    return {"gate": "passed" if gated else "not applied", "empty_rate": round(overall.empty_rate, 4),
            "top_caption_share": round(overall.top_caption_share, 4), "distinct_2": round(overall.distinct_2, 4)}


def _unit_timeout_s(cfg: FilsConfig) -> float:
    return cfg.captions.unit_timeout_s


def _units_on_gpu(cfg: FilsConfig) -> bool:
    """VideoBLIP on a GPU: each unit worker is pinned to one and loads its captioner once (an explicit `cuda:N`
    is the user's own placement)."""
    return cfg.captions.source == "videoblip" and cfg.captions.device in ("auto", "cuda")


SPEC = StageSpec(name="captions", version=VERSION, upstream=("shard",), config_of=_config_of, plan=_plan,
                 process=process_shard, finalize=_finalize, unit_timeout_s=_unit_timeout_s, sections=("captions",),
                 runtime_only=RUNTIME_ONLY, units_on_gpu=_units_on_gpu,
                 # The quality report judges the output; a new threshold must not make pre-training stale.
                 log_files=(QUALITY_FILE, REPORT_FILE, PLOT_FILE))
