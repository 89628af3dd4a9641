"""Randomly initialised VideoBLIP checkpoints (no download) for offline tests and benchmarks.

Architecture presets: tiny / tiny-t5 for unit tests (a few 10k parameters); small for a CPU benchmark with the
real token layout (224 px, patch 14 -> 257 tokens per frame, 32 queries); opt-2.7b with the sizes of
`kpyu/video-blip-opt-2.7b-ego4d` (EVA ViT-g/14, 12-layer Q-Former, OPT-2.7B). They are written as checkpoint
folders and loaded through the captioner's own local-path loader, the code real checkpoints go through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import Blip2Config, BlipImageProcessor, PreTrainedTokenizerFast

from stages.captions.videoblip import VideoBlipForConditionalGeneration

# BLIP-2 image processors normalise with the CLIP statistics.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

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


def build_random_videoblip(
    preset: PresetName, *, seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[VideoBlipForConditionalGeneration, PreTrainedTokenizerFast, BlipImageProcessor]:
    """Randomly initialised VideoBLIP with a word-level tokenizer, for offline tests and benchmarks.

    Like the published checkpoints it has no `<image>` token and no `image_token_index` (the loader's
    fix-ups apply), and the tokenizer leaves spare embedding rows, as OPT's does.
    """
    config = Blip2Config(**blip2_config_dict(preset))
    torch.manual_seed(seed)
    with torch.device(device):
        model = VideoBlipForConditionalGeneration(config).eval()
    model.to(dtype)
    model.qformer.float()  # mirror from_pretrained (`_keep_in_fp32_modules`): Q-Former and queries stay fp32
    model.query_tokens.data = model.query_tokens.data.float()
    text = config.text_config
    seq2seq = not config.use_decoder_only_language_model
    specials = ["<pad>", "</s>", "<unk>"] if seq2seq else ["<unk>", "<pad>", "</s>"]  # ids as in T5 / OPT
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), text.vocab_size - 2)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    eos = vocab["</s>"]
    template = "$A </s>" if seq2seq else "</s> $A"  # T5 appends EOS, OPT prepends </s> as BOS
    backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("</s>", eos)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        bos_token=None if seq2seq else "</s>",
    )
    size = config.vision_config.image_size
    image_processor = BlipImageProcessor(
        size={"height": size, "width": size}, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)
    )
    return model, tokenizer, image_processor


def save_random_checkpoint(folder: str | os.PathLike, preset: PresetName, *, seed: int = 0) -> Path:
    """Write `build_random_videoblip(preset)` as a checkpoint folder (weights, tokenizer, image processor)."""
    path = Path(folder)
    for part in build_random_videoblip(preset, seed=seed):
        part.save_pretrained(path)
    return path
