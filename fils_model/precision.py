"""Autocast for inference: bf16 on CUDA (flash attention, half the activation memory on 15-view tests), fp32 on
the CPU, where bf16 matmuls are slower and would change the demo's numbers. For the encoder only: classification
heads run on its fp32 features outside it (bf16 logits would tie close scores)."""
from __future__ import annotations

import contextlib

import torch


def inference_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)
