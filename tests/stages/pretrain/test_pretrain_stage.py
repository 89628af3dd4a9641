"""The pretrain stage end to end on the `sharded` fixture with the real captions stage: export loadable by
transformers, resume after a stop with identical parameters, caching semantics, torchrun, the shard-count check,
recipes."""
from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.artifacts import ArtifactStore
from pipeline.runner import StageError, pipeline_status, run_pipeline, run_stage
from pipeline.shards import SHARDS_SUBDIR, iter_shard, shard_paths
from stages import registry
from stages.captions.stage import SPEC as CAPTIONS
from stages.config import load_config
from stages.optical_flow.stage import SPEC as FLOW
from stages.pretrain.stage import SPEC
from stages.shard.stage import SPEC as SHARD
from stages.shard.tables import CLIPS_FILE, read_clips
from tests.builders.shards import write_tar
from tests.helpers import REPO, make_config, marked_processes, reseal, wait_until_gone

CAPTION_SETTINGS = {"source": "narration",
                    "text_encoder": {"backend": "hf", "model": "sentence-transformers/all-MiniLM-L6-v2"}}
TINY = {
    "model": {"size": "tiny", "img_size": 32, "num_frames": 4, "patch_size": 8, "text_dim": 384, "mask_ratio": 0.5},
    "trainer": {"global_batch_size": 4, "checkpoint_every": 2, "log_every": 1, "tensorboard": False},
    "epochs": 1.5,  # 17 clips / batch 4 -> 7 steps
    "warmup_epochs": 0.5,
    "loader": {"workers": 1},
    "launch": {"threads": 1},
}


def config_for(sharded, workdir: Path, overrides: list[str] | None = None, **pretrain):
    return make_config(workdir, Path(sharded.data.source.root), overrides, runtime={"workers": 0, "progress": False},
                       captions=CAPTION_SETTINGS, pretrain=TINY | pretrain)


@pytest.fixture(scope="module")
def upstream(sharded, tmp_path_factory) -> Path:
    """shard (fixture) + captions (narrations embedded by MiniLM) + optical_flow; the last is written directly
    while its stage is not in the tree."""
    work = tmp_path_factory.mktemp("upstream") / "work"
    shutil.copytree(sharded.workdir, work)
    cfg, store = config_for(sharded, work), ArtifactStore(work)
    run_stage(CAPTIONS, cfg, store)
    run_stage(FLOW, cfg, store)
    return work


def reshard(shard_dir: Path, parts: int) -> None:
    """Split the train shard into ``parts`` shards, keeping clips.parquet consistent."""
    (old,) = shard_paths(shard_dir, "train")
    samples = list(iter_shard(old))
    old.unlink()
    names = {}
    for i in range(parts):
        name = f"train-{i:06d}.tar"
        write_tar(shard_dir / SHARDS_SUBDIR / name, samples[i::parts])
        names |= {s.key: name for s in samples[i::parts]}
    clips = read_clips(shard_dir)
    shards = pa.array([names[k] for k in clips.column("key").to_pylist()])
    pq.write_table(clips.set_column(clips.schema.get_field_index("shard"), clips.schema.field("shard"), shards),
                   shard_dir / CLIPS_FILE)
    reseal(shard_dir.parent, "shard")


def make_workdir(sharded, upstream: Path, dest: Path, shards: int = 1, **pretrain):
    shutil.copytree(upstream, dest)
    if shards > 1:
        reshard(dest / "shard", shards)
    return config_for(sharded, dest, **pretrain), ArtifactStore(dest)


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def trained(sharded, upstream, tmp_path_factory):
    """One uninterrupted run (the reference for the resume test)."""
    cfg, store = make_workdir(sharded, upstream, tmp_path_factory.mktemp("pretrain") / "work",
                              trainer=TINY["trainer"] | {"tensorboard": True})
    return cfg, store, run_stage(SPEC, cfg, store)


def test_stage_exports_a_videomae_encoder(trained):
    from transformers import VideoMAEModel

    cfg, store, outcome = trained
    out = cfg.workdir / "pretrain"
    assert outcome.action == "ran"
    assert outcome.record.row_counts == {"steps": 7, "clips": 17, "skipped_samples": 0}
    for name in ("encoder/model.safetensors", "encoder/config.json", "checkpoint.pt", "metrics.csv", "train.log",
                 "pretrain_config.json"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    assert '"warmup_steps": 2' in (out / "pretrain_config.json").read_text()
    assert "7,loss," in (out / "metrics.csv").read_text()
    model = VideoMAEModel.from_pretrained(out / "encoder").eval()
    video = torch.randn(1, 4, 3, 32, 32)  # HF layout (B, T, C, H, W)
    assert model(pixel_values=video).last_hidden_state.shape == (1, 2 * 4 * 4, 64)


def test_resume_after_a_stop_gives_the_same_parameters(trained, sharded, upstream, tmp_path):
    ref_cfg, _, _ = trained
    cfg, store = make_workdir(sharded, upstream, tmp_path / "work", launch={"threads": 1, "max_steps_per_attempt": 3})
    with pytest.raises(StageError, match="stopped at step 3 of 7"):
        run_stage(SPEC, cfg, store)
    assert store.success("pretrain") is None
    outcome = run_stage(SPEC, config_for(sharded, cfg.workdir), store)  # same fingerprint: launch is not in it
    assert outcome.action == "ran"
    log = (cfg.workdir / "pretrain/train.log").read_text()
    assert log.count("=== ") == 2  # two attempts, one log
    reference = _params(ref_cfg.workdir / "pretrain/checkpoint.pt")
    resumed = _params(cfg.workdir / "pretrain/checkpoint.pt")
    assert reference.keys() == resumed.keys()
    for name, value in reference.items():
        assert torch.equal(value, resumed[name]), name


def _kill_trainer_after_step(run_dir: Path, step: int, killed: list[int]) -> None:
    """Watch the run's metrics and SIGKILL the training process (as the OOM killer would) once ``step`` is logged."""
    deadline = time.monotonic() + 300
    metrics = run_dir / "metrics.csv"
    while time.monotonic() < deadline:
        rows = metrics.read_text().splitlines() if metrics.is_file() else []
        if any(row.startswith(f"{step},") for row in rows):
            for pid in marked_processes(os.environ["FILS_TEST_MARK"]):
                if "stages.pretrain.stage" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
        time.sleep(0.02)


@pytest.mark.skipif(sys.platform != "linux", reason="finds the trainer through /proc")
def test_resume_after_the_trainer_is_killed_gives_the_same_parameters(trained, sharded, upstream, tmp_path, mark):
    """SIGKILL between checkpoints (step drawn at random, printed): the stage fails at once, no process of the
    attempt survives, and the rerun resumes from the last checkpoint to the uninterrupted run's exact weights."""
    ref_cfg, _, _ = trained
    step = random.Random().randint(1, 6)
    print(f"killing the trainer after step {step}")
    cfg, store = make_workdir(sharded, upstream, tmp_path / "work")
    killed: list[int] = []
    watcher = threading.Thread(target=lambda: _kill_trainer_after_step(_run_dir(cfg.workdir / ".staging"), step,
                                                                       killed), daemon=True)
    watcher.start()
    with pytest.raises(StageError, match="exited with code -9"):
        run_stage(SPEC, cfg, store)
    watcher.join()
    assert killed and wait_until_gone(mark) == []
    assert run_stage(SPEC, cfg, store).action == "ran"
    reference = _params(ref_cfg.workdir / "pretrain/checkpoint.pt")
    resumed = _params(cfg.workdir / "pretrain/checkpoint.pt")
    for name, value in reference.items():
        assert torch.equal(value, resumed[name]), name
    assert _logged(cfg.workdir) == _logged(ref_cfg.workdir)  # each step once, same values


def _logged(workdir: Path) -> list[str]:
    """metrics.csv without the throughput rows (wall-clock)."""
    return [row for row in (workdir / "pretrain/metrics.csv").read_text().splitlines() if ",clips_per_s," not in row]


def _run_dir(staging: Path) -> Path:
    """The training run directory of the one pretrain fingerprint (waits for the stage to create it)."""
    deadline = time.monotonic() + 120
    while not (found := list(staging.glob("pretrain/*/run"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found[0]


def test_finetune_and_evaluate_follow_the_pretrain_output_they_read(trained, sharded, tmp_path):
    """finetune (init: upstream) declares pretrain upstream: `fils status` shows it stale once pretrain is, and the
    evaluation report plots the pre-training losses only of the run the evaluated encoder came from."""
    cfg, _, _ = trained
    work = tmp_path / "work"
    shutil.copytree(cfg.workdir, work)
    probe = {"benchmark": "motion", "init": "upstream", "mode": "linear_probe", "head": {"num_classes": 5},
             "epochs": 5, "global_batch_size": 4, "model_ema": False,
             "mix": {"mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0}, "loader": {"workers": 0}}

    def configured(overrides: list[str] | None = None):
        return make_config(work, Path(sharded.data.source.root), overrides, runtime={"workers": 0, "progress": False},
                           captions=CAPTION_SETTINGS, pretrain=TINY | {"trainer": TINY["trainer"] | {"tensorboard": True}},
                           finetune=probe, evaluate={"split": "train", "views": {"temporal": 1, "spatial": 1}})

    tuned, store = configured(), ArtifactStore(work)
    run_pipeline(registry(), tuned, ["pretrain", "finetune", "evaluate"])
    assert (work / "evaluate" / "plots" / "pretrain_losses.png").is_file()
    assert {s.stage: s.state for s in pipeline_status(registry(), tuned, store)}["finetune"] == "done"

    changed = configured(["pretrain.optim.base_lr=3e-4"])
    states = {s.stage: s for s in pipeline_status(registry(), changed, store)}
    assert states["pretrain"].state == "stale"
    assert states["finetune"].state == "stale" and states["finetune"].reason == "upstream pretrain not up to date"
    assert states["evaluate"].state == "stale"
    run_pipeline(registry(), changed, ["pretrain"])
    assert "new output of pretrain" in {s.stage: s for s in pipeline_status(registry(), changed, store)}["finetune"].reason
    assert run_pipeline(registry(), changed, ["evaluate"])[0].action == "ran"  # the classifier is still the old one
    assert not (work / "evaluate" / "plots" / "pretrain_losses.png").exists()


def test_changing_pretrain_settings_reruns_only_pretrain(trained, sharded):
    cfg, store, first = trained
    before = {s: store.success(s).output_id for s in ("shard", "optical_flow", "captions")}
    same = config_for(sharded, cfg.workdir, trainer=TINY["trainer"] | {"tensorboard": True},
                      loader={"workers": 1, "prefetch_factor": 4}, launch={"threads": 2})
    assert run_stage(SPEC, same, store).action == "skipped"  # loader / launch settings are not in the fingerprint
    assert run_stage(SHARD, same, store).action == run_stage(CAPTIONS, same, store).action == "skipped"
    changed = config_for(sharded, cfg.workdir, ["pretrain.optim.base_lr=3e-4"],
                         trainer=TINY["trainer"] | {"tensorboard": True})
    assert run_stage(SHARD, changed, store).action == run_stage(CAPTIONS, changed, store).action == "skipped"
    rerun = run_stage(SPEC, changed, store)
    assert rerun.action == "ran" and rerun.record.output_id != first.record.output_id
    assert {s: store.success(s).output_id for s in before} == before


def test_two_ranks_under_torchrun(sharded, upstream, tmp_path):
    """nproc_per_node > 1 launches `python -m torch.distributed.run` (gloo on CPU); each rank reads its shard."""
    cfg, store = make_workdir(sharded, upstream, tmp_path / "work", shards=2, loader={"workers": 0},
                              launch={"nproc_per_node": 2, "threads": 1})
    outcome = run_stage(SPEC, cfg, store)
    assert outcome.record.row_counts["steps"] == 7
    assert "torch.distributed.run" in (cfg.workdir / "pretrain/train.log").read_text()
    assert (cfg.workdir / "pretrain/encoder/model.safetensors").is_file()


def test_too_few_shards_for_ranks_times_workers(sharded, upstream, tmp_path):
    cfg, store = make_workdir(sharded, upstream, tmp_path / "work", loader={"workers": 2})
    with pytest.raises(StageError, match=r"1 shard\(s\).*shard.min_shards: 2"):
        run_stage(SPEC, cfg, store)
    assert not list(tmp_path.glob("work/.staging/pretrain/*/run/checkpoints"))


def test_repeated_views_must_divide_a_ranks_batch(sharded, upstream, tmp_path):
    cfg, store = make_workdir(sharded, upstream, tmp_path / "work", data={"repeated_views": 3})
    with pytest.raises(StageError, match=r"batch of 4 samples .* not a multiple of pretrain.data.repeated_views 3"):
        run_stage(SPEC, cfg, store)
    assert not list(tmp_path.glob("work/.staging/pretrain/*/run/checkpoints"))


@pytest.mark.parametrize("recipe, clips, steps, warmup", [
    ("pretrain_ek100_vitb.yaml", 67217, 224057, 5601),
    ("pretrain_ssv2_vitb.yaml", 168913, 563044, 14076),
])
def test_paper_recipes_resolve_epochs_to_steps(recipe, clips, steps, warmup):
    cfg = load_config(REPO / "configs" / recipe)
    train = cfg.pretrain.resolve(clips)
    assert (train.trainer.total_steps, train.optim.warmup_steps) == (steps, warmup)
    assert train.trainer.global_batch_size == 240 and train.model.size == "base" and train.model.text_dim == 512
    assert train.optim.base_lr == 1.5e-4 and train.optim.betas == (0.9, 0.95) and train.optim.weight_decay == 0.05


def test_demo_config_has_a_tiny_pretrain_block():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.pretrain is not None and cfg.pretrain.model.size == "tiny"
