"""Captioner configuration: generation settings and checkpoint identity."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Prompt used by video2dataset's VideoBLIP caption stage (see peers.md); the stage may override it.
DEFAULT_PROMPT = "Question: Can you give a detailed description of what is happening in this video? Answer:"



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
