"""Map encoder weights between our layout (original VideoMAE / timm names) and HF ``VideoMAEModel`` names.

Ours: ``patch_embed.proj``, ``blocks.{i}.attn.qkv`` (fused) + ``q_bias``/``v_bias``, ``blocks.{i}.mlp.fc1``...
HF:   ``embeddings.patch_embeddings.projection``, ``encoder.layer.{i}.attention.attention.{query,key,value}``...
Hub checkpoints such as ``MCG-NJU/videomae-base`` store the q/v biases as ``q_bias``/``v_bias`` and may carry
a ``videomae.`` prefix (``VideoMAEForPreTraining``); both spellings are accepted on import.
"""

from __future__ import annotations

import re

import torch

HF_PREFIX = "videomae."
_LAYER = "encoder.layer.{i}."
_RENAMES = {  # ours (inside blocks.{i}.) -> HF (inside encoder.layer.{i}.)
    "norm1.weight": "layernorm_before.weight",
    "norm1.bias": "layernorm_before.bias",
    "attn.proj.weight": "attention.output.dense.weight",
    "attn.proj.bias": "attention.output.dense.bias",
    "norm2.weight": "layernorm_after.weight",
    "norm2.bias": "layernorm_after.bias",
    "mlp.fc1.weight": "intermediate.dense.weight",
    "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight",
    "mlp.fc2.bias": "output.dense.bias",
}
_TOP = {
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_QKV = "attention.attention."


def _num_layers(keys: list[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def encoder_to_hf(state: dict[str, torch.Tensor], hub_bias_names: bool = True) -> dict[str, torch.Tensor]:
    """Our encoder ``state_dict`` -> HF ``VideoMAEModel`` keys (``q_bias``/``v_bias`` spelling by default,
    which every transformers version loads)."""
    out = {hf: state[ours] for ours, hf in _TOP.items()}
    for i in range(_num_layers(list(state), r"blocks\.(\d+)\.")):
        src, dst = f"blocks.{i}.", _LAYER.format(i=i)
        for ours, hf in _RENAMES.items():
            out[dst + hf] = state[src + ours]
        query, key, value = state[src + "attn.qkv.weight"].chunk(3)
        out[dst + _QKV + "query.weight"] = query
        out[dst + _QKV + "key.weight"] = key
        out[dst + _QKV + "value.weight"] = value
        if src + "attn.q_bias" in state:
            q_name, v_name = ("q_bias", "v_bias") if hub_bias_names else ("query.bias", "value.bias")
            out[dst + _QKV + q_name] = state[src + "attn.q_bias"]
            out[dst + _QKV + v_name] = state[src + "attn.v_bias"]
    return {k: v.contiguous() for k, v in out.items()}


def hf_to_encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``VideoMAEModel`` / ``VideoMAEForPreTraining`` weights -> our encoder ``state_dict``.

    Raises ``KeyError`` naming the missing HF key when the checkpoint is not a VideoMAE encoder.
    """
    state = {k.removeprefix(HF_PREFIX): v for k, v in state.items()}
    out = {ours: state[hf] for ours, hf in _TOP.items()}
    for i in range(_num_layers(list(state), r"encoder\.layer\.(\d+)\.")):
        src, dst = _LAYER.format(i=i), f"blocks.{i}."
        for ours, hf in _RENAMES.items():
            out[dst + ours] = state[src + hf]
        out[dst + "attn.qkv.weight"] = torch.cat([state[src + _QKV + n + ".weight"] for n in ("query", "key", "value")])
        for ours, names in (("q_bias", ("q_bias", "query.bias")), ("v_bias", ("v_bias", "value.bias"))):
            present = [src + _QKV + n for n in names if src + _QKV + n in state]
            if present:
                out[dst + "attn." + ours] = state[present[0]]
    return out
