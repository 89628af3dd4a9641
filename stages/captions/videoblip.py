"""VideoBLIP captioner on top of HF transformers' BLIP-2.

VideoBLIP (yukw777/VideoBLIP) runs the unchanged BLIP-2 ViT on every frame of a clip and concatenates the
frames' patch tokens along the sequence axis before the Q-Former; parameter names are BLIP-2's, so the
published `kpyu/video-blip-*` checkpoints and plain BLIP-2 checkpoints load into the same class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AddedToken,
    AutoImageProcessor,
    AutoTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2VisionModel,
    BlipImageProcessor,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import cached_file
from transformers.utils.hub import extract_commit_hash

from stages.captions.captioner_config import (
    DEFAULT_PROMPT,
    GenerationSettings,
    content_hash,
)

IMAGE_TOKEN = "<image>"


class VideoBlipVisionModel(Blip2VisionModel):
    """BLIP-2 ViT applied frame by frame.

    `pixel_values` (B, C, T, H, W) -> `last_hidden_state` (B, T*S, D) (all frames' tokens concatenated),
    `pooler_output` (B, T, D). 4-D input (B, C, H, W) behaves exactly like `Blip2VisionModel`.
    """

    def forward(
        self, pixel_values: torch.Tensor | None = None, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        if pixel_values is None or pixel_values.dim() != 5:
            return super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        b, c, t, h, w = pixel_values.shape
        frames = pixel_values.transpose(1, 2).reshape(b * t, c, h, w)
        kwargs["return_dict"] = True
        out = super().forward(frames, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        s = out.last_hidden_state.shape[1]
        hidden = out.hidden_states
        return BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state.reshape(b, t * s, -1),
            pooler_output=out.pooler_output.reshape(b, t, -1),
            hidden_states=None if hidden is None else tuple(x.reshape(b, t * s, -1) for x in hidden),
            attentions=None if out.attentions is None else tuple(a.reshape(b, t, *a.shape[1:]) for a in out.attentions),
        )


class VideoBlipForConditionalGeneration(Blip2ForConditionalGeneration):
    """BLIP-2 whose vision tower takes videos (B, C, T, H, W); same parameters and state-dict keys as BLIP-2."""

    def __init__(self, config: Blip2Config) -> None:
        super().__init__(config)
        # Only `forward` differs, so swap the class rather than building a second (≈1 B-parameter) ViT.
        self.vision_model.__class__ = VideoBlipVisionModel


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not match the VideoBLIP/BLIP-2 architecture built from its config."""


def load_videoblip(
    source: str, *, revision: str | None = None, dtype: torch.dtype = torch.float32
) -> VideoBlipForConditionalGeneration:
    """Load a VideoBLIP or BLIP-2 checkpoint (hub id or folder); every weight must be used and present."""
    model, info = VideoBlipForConditionalGeneration.from_pretrained(
        source, revision=revision, dtype=dtype, output_loading_info=True
    )
    problems = [f"{name} ({len(keys)}): {sorted(map(str, keys))}" for name, keys in info.items() if keys]
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {source!r} does not match the BLIP-2 architecture in its config.json:\n  "
            + "\n  ".join(problems)
            + "\nIs it a BLIP-2 / VideoBLIP checkpoint saved by transformers (Blip2ForConditionalGeneration)?"
        )
    return model.eval()


def ensure_image_token(model: Blip2ForConditionalGeneration, tokenizer: PreTrainedTokenizerBase) -> int:
    """Return the image placeholder token id, applying the fix-ups older checkpoints need.

    Checkpoints saved before transformers added image placeholders to BLIP-2 (e.g. `kpyu/video-blip-*`) have
    no `<image>` token in the tokenizer and no `image_token_index` in the config. Without placeholders in the
    prompt, BLIP-2 silently ignores the visual input, so: add the token, record its id in the config, and
    grow the LM embeddings if the id falls outside them.
    """
    token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
    if token not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(token, normalized=False, special=True)], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(token)
    configured = model.config.image_token_index
    if configured is None:
        model.config.image_token_index = token_id
    elif configured != token_id:
        raise ValueError(
            f"config.image_token_index={configured} but the tokenizer maps {token!r} to {token_id}; "
            "the checkpoint's tokenizer and config disagree (load both from the same revision)"
        )
    if token_id >= model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(token_id + 1)
    return token_id


def resolve_device_dtype(
    device: str | torch.device | None, dtype: str | torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """Defaults: CUDA when present with bf16 (fp16 where bf16 is unsupported), else CPU float32."""
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(dtype, str):
        parsed = getattr(torch, dtype, None)
        if not isinstance(parsed, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
        dtype = parsed
    if dtype is None:
        if dev.type != "cuda":
            dtype = torch.float32
        else:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, dtype


def _local_folder(model_id_or_path: str | os.PathLike) -> Path | None:
    """The checkpoint folder, None for a hub id; a clear error for a path that does not exist."""
    text = os.fspath(model_id_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"checkpoint folder {path} has no config.json; pass a folder written by save_pretrained"
            )
        return path
    looks_like_path = path.exists() or path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
    if looks_like_path:
        raise FileNotFoundError(
            f"checkpoint folder {path} does not exist (or is not a folder); pass an existing folder "
            "or a Hugging Face hub id such as 'kpyu/video-blip-opt-2.7b-ego4d'"
        )
    return None


def checkpoint_revision(model_id_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """Commit hash for a hub checkpoint, sha256 of the folder's files for a local one."""
    folder = _local_folder(model_id_or_path)
    if folder is not None:
        return content_hash(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    try:
        resolved = cached_file(os.fspath(model_id_or_path), "config.json", revision=revision)
    except OSError as err:
        raise FileNotFoundError(
            f"{model_id_or_path!r} is not a local folder and could not be fetched from the Hugging Face hub "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). Download it where there is network "
            f"(`hf download {model_id_or_path}`) and pass the folder. Cause: {err}"
        ) from err
    return extract_commit_hash(resolved, None) or revision or "unknown"


class VideoCaptioner:
    """Captions clips (T, H, W, 3) uint8 with a VideoBLIP/BLIP-2 checkpoint.

    `model_id` and `revision` identify the checkpoint for the output table.
    """

    def __init__(
        self,
        model: Blip2ForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: BlipImageProcessor,
        *,
        model_id: str,
        revision: str,
    ) -> None:
        if not isinstance(model.vision_model, VideoBlipVisionModel):
            raise TypeError("model must be a VideoBlipForConditionalGeneration (use load_videoblip)")
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_id = model_id
        self.revision = revision
        self.image_token_id = ensure_image_token(model, tokenizer)
        patch_weight = model.vision_model.embeddings.patch_embedding.weight
        self.device, self.dtype = patch_weight.device, patch_weight.dtype

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
    ) -> VideoCaptioner:
        """Load model, tokenizer and image processor from a hub id (optionally pinned `revision`) or a folder."""
        resolved_revision = checkpoint_revision(model_id_or_path, revision)
        dev, dt = resolve_device_dtype(device, dtype)
        source = os.fspath(model_id_or_path)
        model = load_videoblip(source, revision=revision, dtype=dt).to(dev)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        image_processor = AutoImageProcessor.from_pretrained(source, revision=revision)
        return cls(model, tokenizer, image_processor, model_id=source, revision=resolved_revision)

    @property
    def num_query_tokens(self) -> int:
        return self.model.config.num_query_tokens

    def prompt_ids(self, prompt: str) -> list[int]:
        """`num_query_tokens` image placeholders followed by the tokenised prompt (as Blip2Processor does)."""
        text_ids = self.tokenizer(prompt)["input_ids"]
        ids = [self.image_token_id] * self.num_query_tokens + text_ids
        if ids.count(self.image_token_id) != self.num_query_tokens:
            raise ValueError(
                f"prompt {prompt!r} contains the image placeholder {IMAGE_TOKEN!r}; the captioner inserts "
                f"the {self.num_query_tokens} placeholders itself, remove it from the prompt"
            )
        return ids

    def prepare_inputs(self, clips: Sequence[np.ndarray], prompt: str = DEFAULT_PROMPT) -> dict[str, torch.Tensor]:
        """Model inputs for a batch: pixel_values (B, C, T, H, W), input_ids and attention_mask (B, L)."""
        num_frames = _check_clips(clips)
        frames = [frame for clip in clips for frame in clip]
        processed = self.image_processor(images=frames, input_data_format="channels_last", return_tensors="pt")
        pixels = processed["pixel_values"]
        pixels = pixels.reshape(len(clips), num_frames, *pixels.shape[1:]).transpose(1, 2)
        input_ids = torch.tensor([self.prompt_ids(prompt)] * len(clips), device=self.device)
        return {
            "pixel_values": pixels.to(self.device, self.dtype),
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
        }

    def caption(
        self,
        clips: Sequence[np.ndarray],
        prompt: str = DEFAULT_PROMPT,
        generation: GenerationSettings | None = None,
    ) -> list[str]:
        """One caption per clip (default settings: greedy); all clips of a call need the same frame count."""
        generation = generation or GenerationSettings()
        if not clips:
            return []
        inputs = self.prepare_inputs(clips, prompt)
        cuda_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda_devices, device_type=self.device.type):
            torch.manual_seed(generation.seed)
            out = self.model.generate(
                **inputs, **generation.generate_kwargs(), pad_token_id=self.model.config.text_config.pad_token_id
            )
        if self.model.config.use_decoder_only_language_model:  # decoder-only LMs return prompt + continuation
            out = out[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def _check_clips(clips: Sequence[np.ndarray]) -> int:
    """Validate a batch of clips and return their common frame count."""
    for i, clip in enumerate(clips):
        if not isinstance(clip, np.ndarray) or clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
            desc = f"{type(clip).__name__} {getattr(clip, 'shape', '')} {getattr(clip, 'dtype', '')}"
            raise ValueError(f"clip {i} must be a uint8 array (T, H, W, 3), got {desc}")
    counts = {clip.shape[0] for clip in clips}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"all clips in a batch need the same, non-zero number of frames; got {sorted(counts)}")
    return counts.pop()
