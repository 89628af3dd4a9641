"""VideoBLIP captioner on tiny random BLIP-2 checkpoints written to disk (no downloads)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Blip2ForConditionalGeneration

from stages.captions.captioner_config import GenerationSettings
from stages.captions.videoblip import (
    CheckpointMismatchError,
    VideoCaptioner,
    load_videoblip,
)
from tests.builders.videoblip import build_random_videoblip, save_random_checkpoint
from tests.helpers import REPO

PROMPT = "Question: w5 w6 ? Answer:"


@pytest.fixture(scope="module")
def opt_checkpoint(tmp_path_factory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("videoblip_opt"), "tiny")


@pytest.fixture(scope="module")
def captioner(opt_checkpoint) -> VideoCaptioner:
    return VideoCaptioner.from_pretrained(opt_checkpoint)


def clips(seed: int, n: int = 2, frames: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (frames, 40, 48, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("preset", ["tiny", "tiny-t5"])
def test_saved_checkpoint_loads_with_every_weight_used(tmp_path, preset):
    folder = save_random_checkpoint(tmp_path, preset, seed=3)
    reference = build_random_videoblip(preset, seed=3)[0].state_dict()
    model = load_videoblip(str(folder))  # raises CheckpointMismatchError on any missing/unexpected key
    loaded = model.state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    captioner = VideoCaptioner.from_pretrained(folder)
    captions = captioner.caption(clips(0), PROMPT, GenerationSettings(max_new_tokens=4))
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert captioner.model_id == str(folder) and len(captioner.revision) == 64


def test_missing_and_unexpected_weights_are_an_error_naming_them(tmp_path, opt_checkpoint):
    for name in os.listdir(opt_checkpoint):
        (tmp_path / name).write_bytes((opt_checkpoint / name).read_bytes())
    weights = load_file(tmp_path / "model.safetensors")
    del weights["language_projection.bias"]
    weights["qformer.extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError) as err:
        load_videoblip(str(tmp_path))
    assert "language_projection.bias" in str(err.value) and "qformer.extra.weight" in str(err.value)


def test_legacy_checkpoint_gets_image_token_fixups(tmp_path):
    # Like kpyu/video-blip-*: no <image> token, no image_token_index, and here no spare embedding row.
    model, tokenizer, image_processor = build_random_videoblip("tiny")
    model.resize_token_embeddings(len(tokenizer))
    for part in (model, tokenizer, image_processor):
        part.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()).get("image_token_index") is None
    captioner = VideoCaptioner.from_pretrained(tmp_path)
    assert captioner.image_token_id == len(tokenizer) == captioner.model.config.image_token_index
    assert captioner.model.get_input_embeddings().num_embeddings == len(tokenizer) + 1
    ids = captioner.prepare_inputs(clips(0), PROMPT)["input_ids"]
    assert ((ids == captioner.image_token_id).sum(dim=1) == captioner.num_query_tokens).all()
    # A checkpoint re-saved after the fix-ups (config + tokenizer carry the token) loads unchanged.
    captioner.model.save_pretrained(tmp_path / "fixed")
    captioner.tokenizer.save_pretrained(tmp_path / "fixed")
    image_processor.save_pretrained(tmp_path / "fixed")
    again = VideoCaptioner.from_pretrained(tmp_path / "fixed")
    assert again.image_token_id == captioner.image_token_id
    assert again.model.get_input_embeddings().num_embeddings == len(tokenizer) + 1


def test_one_frame_matches_blip2(captioner, opt_checkpoint):
    blip2 = Blip2ForConditionalGeneration.from_pretrained(opt_checkpoint).eval()
    pixels = captioner.prepare_inputs(clips(1, frames=1), PROMPT)["pixel_values"]  # (B, C, 1, H, W)
    with torch.inference_mode():
        video = captioner.model.get_image_features(pixels)
        image = blip2.get_image_features(pixels[:, :, 0])
    torch.testing.assert_close(video.last_hidden_state, image.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(video.pooler_output, image.pooler_output, rtol=0, atol=0)


def test_frames_are_concatenated_along_the_sequence(captioner):
    pixels = captioner.prepare_inputs(clips(2, frames=3), PROMPT)["pixel_values"]
    vision = captioner.model.vision_model
    with torch.inference_mode():
        out = vision(pixels)
        per_frame = [vision(pixels[:, :, t]).last_hidden_state for t in range(3)]
    torch.testing.assert_close(out.last_hidden_state, torch.cat(per_frame, dim=1))
    assert out.pooler_output.shape[:2] == (2, 3)


def test_output_depends_on_the_video_and_is_deterministic(captioner):
    a, b = clips(3, n=1), clips(4, n=1)
    with torch.inference_mode():
        logits_a = captioner.model(**captioner.prepare_inputs(a, PROMPT)).logits
        logits_b = captioner.model(**captioner.prepare_inputs(b, PROMPT)).logits
    assert not torch.allclose(logits_a, logits_b)
    settings = GenerationSettings(max_new_tokens=5, num_beams=2)
    assert captioner.caption(a + b, PROMPT, settings) == captioner.caption(a + b, PROMPT, settings)
    sampled = GenerationSettings(max_new_tokens=5, do_sample=True, top_p=0.9, seed=7)
    assert captioner.caption(a + b, PROMPT, sampled) == captioner.caption(a + b, PROMPT, sampled)


def test_bad_inputs_are_rejected(captioner, tmp_path):
    with pytest.raises(ValueError, match="image placeholder"):
        captioner.prepare_inputs(clips(0), "describe <image> please")
    with pytest.raises(ValueError, match="same, non-zero number of frames"):
        captioner.caption(clips(0, n=1, frames=2) + clips(0, n=1, frames=3))
    with pytest.raises(ValueError, match="uint8"):
        captioner.caption([np.zeros((2, 8, 8, 3), dtype=np.float32)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoCaptioner.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        VideoCaptioner.from_pretrained("nobody/not-a-cached-model")
    with pytest.raises(ValueError, match="num_beams"):
        GenerationSettings(num_beams=0)
    assert "temperature" not in GenerationSettings().generate_kwargs()
    assert captioner.caption([]) == []


def test_hub_id_resolves_from_cache_with_commit_revision(tmp_path, opt_checkpoint):
    """Hub ids go through the same loader; the revision is the snapshot's commit (subprocess: the hub cache
    location is read when huggingface_hub is imported)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--tiny-videoblip"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in os.listdir(opt_checkpoint):
        (repo / "snapshots" / commit / name).write_bytes((opt_checkpoint / name).read_bytes())
    code = ("from stages.captions.videoblip import VideoCaptioner as V; "
            "print(V.from_pretrained('org/tiny-videoblip').revision)")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == commit
