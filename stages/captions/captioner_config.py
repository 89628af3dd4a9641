"""Captioner configuration: generation settings, checkpoint identity, and VideoBLIP architecture presets.

The presets let offline tests and benchmarks build randomly initialised VideoBLIP checkpoints (no download)
that go through exactly the same loading code as the published ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

# Prompt used by video2dataset's VideoBLIP caption stage (see peers.md); the stage may override it.
DEFAULT_PROMPT = "Question: Can you give a detailed description of what is happening in this video? Answer:"

# BLIP-2 image processors normalise with the CLIP statistics.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings for `VideoCaptioner.caption`.

    Deterministic by default (greedy, no sampling). Sampling parameters are only passed to `generate`
    when `do_sample=True`; the RNG is then seeded with `seed` for every call.
    """

    max_new_tokens: int = 40
    min_new_tokens: int = 1  # VideoBLIP can emit an empty caption (EOS first) without this
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            msg
            for bad, msg in (
                (self.max_new_tokens < 1, "max_new_tokens must be >= 1"),
                (not 0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must be in [0, max_new_tokens]"),
                (self.num_beams < 1, "num_beams must be >= 1"),
                (self.temperature <= 0, "temperature must be > 0"),
                (not 0 < self.top_p <= 1, "top_p must be in (0, 1]"),
                (self.top_k < 0, "top_k must be >= 0"),
                (self.repetition_penalty <= 0, "repetition_penalty must be > 0"),
            )
            if bad
        ]
        if problems:
            raise ValueError(f"invalid GenerationSettings: {'; '.join(problems)}")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `transformers` `generate` (every setting explicit, so the checkpoint's
        own generation_config cannot silently switch on sampling)."""
        kwargs = asdict(self)
        kwargs.pop("seed")
        if not self.do_sample:
            for name in ("temperature", "top_p", "top_k"):
                kwargs.pop(name)
        return kwargs


def content_hash(files: Iterable[Path]) -> str:
    """sha256 over the names and bytes of `files` (sorted by name): the revision of a local checkpoint."""
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


PresetName = Literal["tiny", "tiny-t5", "small", "opt-2.7b"]


def blip2_config_dict(preset: PresetName) -> dict[str, Any]:
    """`Blip2Config` keyword arguments for a preset.

    tiny / tiny-t5: unit tests (a few 10k parameters). small: CPU benchmark with the real token layout
    (224 px, patch 14 -> 257 tokens per frame, 32 queries). opt-2.7b: the sizes of
    `kpyu/video-blip-opt-2.7b-ego4d` (EVA ViT-g/14, 12-layer Q-Former, OPT-2.7B).
    """
    if preset in ("tiny", "tiny-t5"):
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      image_size=32, patch_size=16)
        qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        num_query_tokens = 4
        if preset == "tiny":
            text = dict(model_type="opt", vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                        num_attention_heads=4, word_embed_proj_dim=32, max_position_embeddings=128,
                        pad_token_id=1, bos_token_id=2, eos_token_id=2)
        else:
            text = dict(model_type="t5", vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                        num_decoder_layers=1, num_heads=4, pad_token_id=0, eos_token_id=1,
                        decoder_start_token_id=0)
    elif preset == "small":
        vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      image_size=224, patch_size=14)
        qformer = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
        num_query_tokens = 32
        text = dict(model_type="opt", vocab_size=1024, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                    num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=256,
                    pad_token_id=1, bos_token_id=2, eos_token_id=2)
    elif preset == "opt-2.7b":
        vision = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                      image_size=224, patch_size=14, qkv_bias=True, layer_norm_eps=1e-6)
        qformer = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       cross_attention_frequency=2)
        num_query_tokens = 32
        text = dict(model_type="opt", vocab_size=50272, hidden_size=2560, ffn_dim=10240, num_hidden_layers=32,
                    num_attention_heads=32, word_embed_proj_dim=2560, max_position_embeddings=2048,
                    pad_token_id=1, bos_token_id=2, eos_token_id=2)
    else:
        raise ValueError(f"unknown VideoBLIP preset {preset!r}; choose tiny, tiny-t5, small or opt-2.7b")
    return dict(vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=num_query_tokens)

