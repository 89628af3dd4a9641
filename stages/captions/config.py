"""Settings of the `captions` stage: where captions come from (VideoBLIP, the dataset's narrations or a
user file) and the frozen text encoder that embeds them.

Defaults of the generation settings are those of `stages.captions.captioner_config.GenerationSettings`
(deterministic: greedy decoding, no sampling unless asked, seeded).
"""
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section
from pipeline.plugins import Registry

# Text encoder backends: name -> ``load`` of the backend's module (see stages/captions/text_encoders.py).
TEXT_ENCODERS = Registry("captions.text_encoder.backend", {
    "hf": "stages.captions.text_hf:load",
    "open_clip": "stages.captions.text_openclip:load",
}, group="fils.text_encoders")
from stages.captions.captioner_config import DEFAULT_PROMPT, GenerationSettings

CaptionSource = Literal["videoblip", "narration", "file"]
CAPTION_FILE_SUFFIXES = (".parquet", ".csv")
_GEN = GenerationSettings()  # the defaults, kept in one place


class GenerationConfig(Section):
    """Mirrors `GenerationSettings` field by field (`to_settings` builds it)."""

    max_new_tokens: int = Field(default=_GEN.max_new_tokens, ge=1)
    min_new_tokens: int = Field(default=_GEN.min_new_tokens, ge=0)
    num_beams: int = Field(default=_GEN.num_beams, ge=1)
    do_sample: bool = Field(default=_GEN.do_sample, description="Sample instead of greedy/beam search.")
    temperature: float = Field(default=_GEN.temperature, gt=0, description="Only used when do_sample is true.")
    top_p: float = Field(default=_GEN.top_p, gt=0, le=1, description="Only used when do_sample is true.")
    top_k: int = Field(default=_GEN.top_k, ge=0, description="Only used when do_sample is true.")
    repetition_penalty: float = Field(default=_GEN.repetition_penalty, gt=0)
    length_penalty: float = Field(default=_GEN.length_penalty)
    no_repeat_ngram_size: int = Field(default=_GEN.no_repeat_ngram_size, ge=0)
    seed: int = Field(default=_GEN.seed, description="RNG seed set before every batch (matters with sampling).")

    @model_validator(mode="after")
    def _consistent(self) -> "GenerationConfig":
        self.to_settings()  # cross-field checks (min_new_tokens <= max_new_tokens) live in the dataclass
        return self

    def to_settings(self) -> GenerationSettings:
        return GenerationSettings(**self.model_dump())


class TextEncoderConfig(Section):
    backend: TEXT_ENCODERS.choices() = Field(
        default="hf", description="`hf`: sentence encoder with mean pooling; `open_clip`: a CLIP text tower."
    )
    model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="hf: hub id or local folder (MiniLM resolves to the packaged offline copy); "
        "open_clip: architecture name, e.g. ViT-B-16-quickgelu.",
    )
    pretrained: str | None = Field(
        default=None, description="open_clip only: pretrained tag (openai) or local checkpoint file."
    )
    checkpoint: str | None = Field(
        default=None, description="open_clip only: local file whose text tower overrides `pretrained` (ViFi-CLIP)."
    )
    allow_pickle: bool = Field(
        default=False, description="open_clip only: allow checkpoints that pickle non-tensor objects (trusted files)."
    )
    batch_size: int = Field(default=256, ge=1, description="Captions per text-encoder forward pass.")

    @model_validator(mode="after")
    def _backend_options(self) -> "TextEncoderConfig":
        if self.backend == "hf" and (self.pretrained is not None or self.checkpoint is not None):
            raise ValueError(
                "captions.text_encoder.pretrained/checkpoint are open_clip options; with backend: hf put the "
                "hub id or local folder in captions.text_encoder.model"
            )
        if self.backend == "open_clip" and self.pretrained is None:
            raise ValueError(
                "captions.text_encoder.backend=open_clip needs captions.text_encoder.pretrained (an open_clip tag "
                "such as 'openai', or a local checkpoint file); without it the text tower is random"
            )
        return self


class CaptionQualityConfig(Section):
    """The caption quality report (always written) and its gate (stages/captions/quality.py): a shard past a
    threshold fails the stage before pre-training consumes its captions; captions stay cached."""

    gate: Literal["generated", "always", "never"] = Field(
        default="generated", description="Which captions the thresholds judge: `generated` (VideoBLIP's only; a "
        "dataset's narrations or a user's file are what they are), `always`, or `never` (report only; not `off`, which YAML reads as false).",
    )
    min_clips: int = Field(default=10, ge=1, description="Shards with fewer clips are reported, not judged.")
    max_empty_rate: float | None = Field(
        default=0.5, ge=0, le=1, description="Most clips of a shard without a usable caption (None: no limit).")
    max_top_caption_share: float | None = Field(
        default=0.5, ge=0, le=1, description="Largest share of a shard's captioned clips that one caption may have "
        "(one caption for a whole shard: 1.0).")
    max_neighbour_cosine: float | None = Field(
        default=0.98, ge=-1, le=1, description="Highest mean cosine between the embeddings of consecutive "
        "captioned clips of a video, over a shard (a video captioned with one sentence: 1.0).")
    top_captions: int = Field(default=10, ge=1, le=100, description="Most frequent captions listed in the report.")


class CaptionsConfig(Section):
    source: CaptionSource = Field(
        default="videoblip",
        description="`videoblip`: generate captions from the frames; `narration`: the text the dataset adapter "
        "found (clips.parquet `narration`); `file`: a Parquet/CSV with columns key, caption.",
    )
    model: str = Field(
        default="kpyu/video-blip-opt-2.7b-ego4d", description="VideoBLIP/BLIP-2 hub id or local checkpoint folder."
    )
    revision: str | None = Field(default=None, description="Hub revision (pin a commit for reproducible runs).")
    prompt: str = Field(default=DEFAULT_PROMPT, description="Text after the image tokens; the caption continues it.")
    num_frames: int = Field(default=8, ge=1, le=64, description="Frames sampled uniformly from each clip.")
    image_size: int = Field(
        default=224, ge=16, le=1024,
        description="Frames are resized to this short side before the checkpoint's image processor.",
    )
    batch_size: int = Field(default=8, ge=1, description="Clips per generate call (does not change the captions).")
    unit_timeout_s: float = Field(
        default=3600.0, gt=0, description="Time limit of one shard (replaces runtime.unit_timeout_s for this stage: "
        "captioning a shard takes far longer than cutting it; raise it for VideoBLIP on CPU).",
    )
    device: str = Field(default="auto", description="auto (cuda when available), cpu, cuda or cuda:N.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: bf16 (fp16 without bf16 support) on GPU, float32 on CPU."
    )
    generation: GenerationConfig = GenerationConfig()
    file: Path | None = Field(default=None, description="source=file: Parquet or CSV with columns key, caption.")
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    quality: CaptionQualityConfig = CaptionQualityConfig()

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"captions.device {value!r} is not one of auto, cpu, cuda, cuda:N")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if "<image>" in value:
            raise ValueError("captions.prompt must not contain <image>: the captioner inserts the image tokens")
        return value

    @model_validator(mode="after")
    def _file(self) -> "CaptionsConfig":
        if self.source == "file":
            if self.file is None:
                raise ValueError("captions.source=file needs captions.file (a Parquet or CSV with key, caption)")
            if self.file.suffix.lower() not in CAPTION_FILE_SUFFIXES:
                raise ValueError(f"captions.file {self.file} must end in .parquet or .csv")
        return self

    def torch_device(self) -> str | None:
        return None if self.device == "auto" else self.device

    def torch_dtype(self) -> str | None:
        return None if self.dtype == "auto" else self.dtype


SECTIONS = {"captions": (CaptionsConfig, CaptionsConfig())}  # the root config's section of this stage
