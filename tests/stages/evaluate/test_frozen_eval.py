"""Frozen-encoder evaluation: the language head's export, the feature bank (decode once, reuse, seal), probe
settings chosen on held-out training clips, zero-shot scoring, and the nightly sweep reading it all from the bank
(decodes counted) with its trend plots and drop alert."""
import shutil
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import stages.finetune.data as finetune_data
from fils_model.export import export_checkpoint
from fils_model.finetune_config import FinetuneRecipe, HeadConfig
from fils_model.language_head import PROJECTOR_META, PROJECTOR_WEIGHTS, load_language_head
from fils_model.probe_sweep import ProbeSetting
from pipeline.shards import shard_paths
from pipeline.video.clip_config import SamplingConfig, ViewsConfig
from stages.captions.tables import CAPTION_SCHEMA, CAPTIONS_FILE, EMBEDDING_SCHEMA, EMBEDDINGS_FILE, write_parquet
from stages.evaluate.feature_bank import BankSettings, Features, FrozenEncoder, bank_dir, bank_features
from stages.evaluate.language_eval import caption_retrieval
from stages.evaluate.probes import held_out, probe_sweep
from stages.evaluate.results import RESULT_SCHEMA, read_results, record_results
from stages.evaluate.retrieval import grouped_retrieval_metrics
from stages.evaluate.sweep import metric_drops, run_sweep
from stages.evaluate.zero_shot import class_embeddings, zero_shot_scores
from tests.builders.finetune_set import build_workdir, finetune_section, with_sections
from tests.builders.killed_writer import killed_writer
from tests.builders.pretrain_checkpoint import save_random_pretrain_checkpoint

MINILM = {"backend": "hf", "model": "sentence-transformers/all-MiniLM-L6-v2"}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Shards of 5 generated motions (30 training, 10 validation clips), a linear-probe finetune section, MiniLM
    as the captions' text encoder and the samples' class prompts for zero-shot."""
    root = tmp_path_factory.mktemp("frozen")
    cfg = build_workdir(root)
    evaluate = cfg.evaluate.model_dump(mode="json") | {
        "zero_shot": {"prompts": str(root / "samples" / "class_prompts.csv")},
        "sweep": {"checkpoints": ["pretrain/checkpoints/*.pt"],
                  "probes": {"lrs": [1e-3, 1e-1], "epochs": 10, "holdout": 0.3}}}
    return with_sections(cfg, cfg.workdir, finetune=finetune_section(mode="linear_probe"),
                         captions={"source": "narration", "text_encoder": MINILM}, evaluate=evaluate)


def test_the_export_carries_the_language_head_and_both_forms_load_alike(tmp_path):
    checkpoint = save_random_pretrain_checkpoint(tmp_path / "step_7.pt", seed=0, step=7)
    folder = export_checkpoint(checkpoint, tmp_path / "encoder", language={"text_encoder_id": "minilm@abc"})
    from_folder, from_file = load_language_head(folder), load_language_head(checkpoint)
    tokens = torch.randn(3, 11, 64)
    torch.testing.assert_close(from_folder(tokens), from_file(tokens), rtol=0, atol=0)
    assert torch.allclose(from_file(tokens).norm(dim=-1), torch.ones(3))
    state = torch.load(checkpoint, weights_only=True)
    assert from_folder.logit_scale == pytest.approx(float(state["model"]["actclip.logit_scale"].exp()))
    assert from_folder.meta["step"] == 7 and from_folder.meta["text_encoder_id"] == "minilm@abc"
    assert from_file.meta.get("text_encoder_id") is None

    pixel_only = save_random_pretrain_checkpoint(tmp_path / "mae.pt", seed=0, pixel_weight=1.0, feature_weight=0.0,
                                                 actclip_weight=0.0)
    exported = export_checkpoint(pixel_only, tmp_path / "mae")
    assert not (exported / PROJECTOR_WEIGHTS).exists() and not (exported / PROJECTOR_META).exists()
    assert load_language_head(exported) is None and load_language_head(pixel_only) is None


def test_the_bank_decodes_a_shard_once_and_seals_it(sharded, tmp_path):
    checkpoint = save_random_pretrain_checkpoint(tmp_path / "c.pt", seed=1)
    encoder = FrozenEncoder(checkpoint, torch.device("cpu"))
    shards = shard_paths(sharded.workdir / "shard", "validation")
    settings = BankSettings(ViewsConfig(temporal=2, spatial=1), SamplingConfig(stride=2, jitter=False))
    folder = bank_dir(sharded.workdir, encoder, settings)
    leftover = killed_writer(folder / "someshard")  # a writer killed before its rename

    first = bank_features(sharded.workdir, encoder, shards, settings)
    assert first.decoded == len(first.keys) == 10 and not leftover.exists()
    assert first.pooled.shape == (10, 2, 64) and first.language.shape == (10, 2, 384)
    assert torch.allclose(first.language.norm(dim=-1), torch.ones(10, 2))
    again = bank_features(sharded.workdir, encoder, shards, settings)
    assert again.decoded == 0 and again.keys == first.keys and again.clips == first.clips
    assert torch.equal(again.pooled, first.pooled) and torch.equal(again.language, first.language)
    assert not list(folder.glob(".tmp-*"))

    one_view = BankSettings(ViewsConfig(temporal=1, spatial=1), settings.sampling, tokens=True)
    other = bank_features(sharded.workdir, encoder, shards, one_view)
    assert other.decoded == 10 and other.tokens.shape == (10, 1, 64, 64)  # other views: other features
    torch.testing.assert_close(other.tokens.float().mean(2), other.pooled, atol=2e-3, rtol=0)


def _features(keys, labels, pooled):
    return Features(keys, [{"label": int(y)} for y in labels], pooled.float()[:, None])


def test_the_probe_setting_is_chosen_on_held_out_training_clips_only():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    centres = 3 * torch.randn(4, 16, generator=generator)
    train = _features([f"train_{i}" for i in range(200)], labels, centres[labels] + torch.randn(200, 16, generator=generator))
    test_labels = torch.arange(80) % 4
    test = _features([f"test_{i}" for i in range(80)], test_labels,
                     centres[test_labels] + torch.randn(80, 16, generator=generator))
    head = HeadConfig(num_classes=4)
    recipe = FinetuneRecipe(head=head, global_batch_size=32, total_steps=150, warmup_steps=10,
                            optim={"min_lr": 0.0, "warmup_start_lr": 0.0})
    settings = [ProbeSetting(1e-9, 0.0), ProbeSetting(0.5, 0.0)]
    outcome = probe_sweep(train, test, head, lambda clips: recipe, settings, holdout=0.25)
    assert outcome.chosen == settings[1] and outcome.held_out["lr=1e-09,wd=0"] < 0.5 < outcome.held_out["lr=0.5,wd=0"]
    assert outcome.scored.metrics["top1"] > 0.9 and outcome.train_clips == 200
    # The test split chooses nothing: scrambling its labels changes its score, not the choice.
    scrambled = _features(test.keys, test_labels.roll(1), test.pooled[:, 0])
    again = probe_sweep(train, scrambled, head, lambda clips: recipe, settings, holdout=0.25)
    assert again.chosen == outcome.chosen and again.held_out == outcome.held_out
    assert again.scored.metrics["top1"] < 0.3
    split = held_out([f"train_{i}" for i in range(200)], 0.25)
    assert 30 < split.sum() < 70 and np.array_equal(split, held_out([f"train_{i}" for i in range(200)], 0.25))
    # Clips of one video are held out together: one video per class, 50 clips each, is a split by whole videos.
    by_video = Features(train.keys, [{"label": int(y), "source_path": f"video_{int(y)}.mp4"} for y in labels],
                        train.pooled)
    with pytest.raises(ValueError, match="cannot be split into a fit and a held-out part"):
        probe_sweep(by_video, test, head, lambda clips: recipe, settings, holdout=0.01)


def test_zero_shot_averages_prompts_and_multiplies_verb_and_noun_for_actions():
    vectors = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [0.6, 0.8, 0.0], "d": [0.0, 0.0, 1.0]}
    embed = lambda texts: np.array([vectors[t] for t in texts], dtype=np.float32)  # noqa: E731
    classes = class_embeddings(embed, [["a", "b"], ["d"]])
    torch.testing.assert_close(classes, torch.tensor([[0.5 ** 0.5, 0.5 ** 0.5, 0.0], [0.0, 0.0, 1.0]]))

    verbs = torch.eye(3)[:2]  # 2 verbs, 2 nouns in a 3-d space: clip i sees verb i and noun 1 - i
    nouns = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    language = torch.nn.functional.normalize(torch.stack([verbs[0] + nouns[1], verbs[1] + nouns[0]]), dim=-1)
    features = Features(["x", "y"], [{"label": 1}, {"label": 2}], language=language[:, None])
    head = HeadConfig(task="epic_action", num_classes=4, num_verbs=2, num_nouns=2)
    action_verbs, action_nouns = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    scores, targets = zero_shot_scores(features, head, {"verb": verbs, "noun": nouns}, 10.0, action_verbs, action_nouns)
    assert scores["action"].argmax(1).tolist() == [1, 2] and targets["action"].tolist() == [1, 2]
    verb = torch.softmax(10.0 * language @ verbs.t(), -1).numpy()
    noun = torch.softmax(10.0 * language @ nouns.t(), -1).numpy()
    np.testing.assert_allclose(scores["action"][0, 1], verb[0, 0] * noun[0, 1], rtol=1e-6)


def _row(checkpoint, value, metric="top1", protocol="linear_probe"):
    return {"benchmark": "b", "checkpoint": checkpoint, "checkpoint_path": f"/ck/{checkpoint}", "protocol": protocol,
            "views": "2x1", "metric": metric, "value": value, "timestamp": datetime.now(timezone.utc)}


def test_a_drop_below_the_best_earlier_checkpoint_is_reported():
    table = [_row("a", 0.50), _row("b", 0.60), _row("c", 0.57), _row("c", 0.10, metric="mean_class_accuracy"),
             _row("c", 0.30, protocol="zero_shot")]
    assert metric_drops(table, {"c"}, margin=0.05) == []  # within the margin; an unwatched metric; a new protocol
    (drop,) = metric_drops(table, {"c"}, margin=0.02)
    assert "linear_probe top1 of /ck/c: 57.00 is 3.00 points below the best earlier checkpoint (60.00" in drop
    assert metric_drops(table, {"b"}, margin=0.0) == []  # later rows do not count against an earlier checkpoint


def test_the_sweep_decodes_each_clip_once_per_checkpoint_and_a_second_sweep_does_nothing(sharded, tmp_path,
                                                                                        monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(sharded.workdir, work)
    cfg = with_sections(sharded, work)
    for n, seed in enumerate((3, 4, 5)):
        save_random_pretrain_checkpoint(work / "pretrain" / "checkpoints" / f"step_{n}.pt", seed, step=100 * (n + 1))
    decodes = []
    real = finetune_data.decode_frames
    monkeypatch.setattr(finetune_data, "decode_frames", lambda *a, **k: decodes.append(a[0]) or real(*a, **k))

    first = run_sweep(cfg, None)
    assert not first.failed and len(first.evaluated) == 3
    # 30 training clips (one view) and 10 validation clips (two views) per checkpoint, each decoded once, not once
    # per probe setting (2), per probe kind or for zero-shot.
    assert len(decodes) == 3 * (30 + 10)
    assert list(first.decoded.values()) == [{"train": 30, "validation": 10}] * 3
    rows = read_results(work / "results" / "results.parquet")
    assert {r["protocol"] for r in rows} == {"linear_probe_sweep", "zero_shot"}
    assert {r["step"] for r in rows} == {100, 200, 300}
    assert {r["metric"] for r in rows} == {"top1", "mean_class_accuracy"}
    assert sorted(p.name for p in first.plots) == ["motion_mean_class_accuracy.png", "motion_top1.png"]
    assert all("chose lr=" in notes[0] for notes in first.notes.values())

    decodes.clear()
    second = run_sweep(cfg, None)
    assert second.evaluated == [] and len(second.skipped) == 3 and decodes == []
    assert len(read_results(work / "results" / "results.parquet")) == len(rows)


def test_the_bank_is_keyed_by_the_projector_and_a_feature_only_projector_scores(sharded, tmp_path):
    folder = export_checkpoint(save_random_pretrain_checkpoint(tmp_path / "a.pt", seed=0), tmp_path / "encoder")
    settings = BankSettings(ViewsConfig(temporal=1, spatial=1), SamplingConfig(stride=2, jitter=False))
    before = bank_dir(sharded.workdir, FrozenEncoder(folder, torch.device("cpu")), settings)
    assert bank_dir(sharded.workdir, FrozenEncoder(folder / "model.safetensors", torch.device("cpu")), settings) \
        == before  # the weights file names the same encoder and projector as its folder
    other = export_checkpoint(save_random_pretrain_checkpoint(tmp_path / "b.pt", seed=1), tmp_path / "other")
    shutil.copy(other / PROJECTOR_WEIGHTS, folder / PROJECTOR_WEIGHTS)  # same encoder, another projector
    assert bank_dir(sharded.workdir, FrozenEncoder(folder, torch.device("cpu")), settings) != before

    feature_only = save_random_pretrain_checkpoint(tmp_path / "f.pt", seed=0, actclip_weight=0.0)
    head = load_language_head(feature_only)
    assert head.meta["logit_scale"] is None and head.logit_scale == 100.0


def test_retrieval_reads_the_captions_and_groups_repeated_ones(tmp_path):
    keys = ["a", "b", "c", "d", "e"]
    captions = ["left", "right", "left", "", "up"]  # "d" has no caption; "a" and "c" share one
    status = ["ok", "ok", "ok", "missing: no narration", "ok"]
    write_parquet(pa.Table.from_pylist(
        [{"key": k, "shard": "s", "caption": c, "status": st, "source": "narration"}
         for k, c, st in zip(keys, captions, status)], schema=CAPTION_SCHEMA), tmp_path / CAPTIONS_FILE)
    vectors = {"left": [1.0, 0.0, 0.0], "right": [0.0, 1.0, 0.0], "up": [0.0, 0.0, 1.0], "": [0.0, 0.0, 0.0]}
    write_parquet(pa.Table.from_pylist(
        [{"key": k, "embedding": vectors[c], "encoder_id": "t", "dim": 3} for k, c in zip(keys, captions)],
        schema=EMBEDDING_SCHEMA), tmp_path / EMBEDDINGS_FILE)
    language = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0.2, 0.0], [0.1, 1.0, 0.0], [0.0, 1.0, 0.3], [1.0, 1.0, 1.0], [0.0, 0.2, 1.0]]), dim=-1)
    features = Features(keys, [{} for _ in keys], language=language[:, None])
    metrics, clips, distinct = caption_retrieval(features, tmp_path)
    assert (clips, distinct) == (4, 3)  # "d" is left out; "a" and "c" share a caption
    similarity = (language[[0, 1, 2, 4]] @ torch.eye(3)).numpy()  # distinct captions: left, right, up
    assert metrics == grouped_retrieval_metrics(similarity, np.array([0, 1, 0, 2]))
    assert metrics["v2t_r1"] == 0.75  # "c" (captioned left) looks right
    assert metrics["t2v_r1"] == 1.0  # "left" finds "a", one of the two clips it describes
    one_caption = Features(["a", "c"], [{}, {}], language=language[[0, 2], None])
    with pytest.raises(ValueError, match="needs at least two different captions"):
        caption_retrieval(one_caption, tmp_path)


def test_a_results_table_without_the_step_column_takes_new_rows(tmp_path):
    old_schema = pa.schema([f for f in RESULT_SCHEMA if f.name != "step"])
    table = tmp_path / "results.parquet"
    old = _row("old", 0.5) | {"clips": 1, "excluded": 0}
    pq.write_table(pa.Table.from_pylist([old], schema=old_schema), table)
    record_results(table, [_row("new", 0.6) | {"clips": 1, "excluded": 0, "step": 300}])
    assert [(r["checkpoint"], r["step"]) for r in read_results(table)] == [("old", None), ("new", 300)]


def test_the_sweep_retries_what_it_could_not_score_without_decoding(sharded, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(sharded.workdir, work)
    save_random_pretrain_checkpoint(work / "pretrain" / "checkpoints" / "step_1.pt", 7, step=100)
    broken = sharded.evaluate.model_dump(mode="json")
    broken["zero_shot"]["prompts"] = str(tmp_path / "missing_prompts.csv")
    first = run_sweep(with_sections(sharded, work, evaluate=broken), None)
    rows = read_results(work / "results" / "results.parquet")
    assert {r["protocol"] for r in rows} == {"linear_probe_sweep"}
    assert any("zero_shot not scored" in note and "missing_prompts.csv" in note
               for note in next(iter(first.notes.values())))

    decodes = []
    real = finetune_data.decode_frames
    monkeypatch.setattr(finetune_data, "decode_frames", lambda *a, **k: decodes.append(a[0]) or real(*a, **k))
    still = run_sweep(with_sections(sharded, work, evaluate=broken), None)  # retried from the bank, still missing
    assert still.evaluated == [] and len(still.unscored) == 1 and decodes == []
    fixed = run_sweep(with_sections(sharded, work), None)  # the prompt file is back: only zero-shot is missing
    assert len(fixed.evaluated) == 1 and decodes == []
    assert {r["protocol"] for r in fixed.rows} == {"zero_shot"}
    assert run_sweep(with_sections(sharded, work), None).evaluated == []
