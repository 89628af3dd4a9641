"""Encoder equals HF ``transformers`` VideoMAE on shared weights; position table and layout round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import VideoMAEConfig, VideoMAEModel
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

from fils_model.config import ModelConfig
from fils_model.encoder import VideoEncoder
from fils_model.masking import tube_mask
from fils_model.position import sincos_table
from fils_model.token_index import split_tokens
from fils_model.videomae_layout import HF_PREFIX, encoder_to_hf, hf_to_encoder

CFG = ModelConfig(size="tiny", img_size=32, num_frames=4, patch_size=8, embed_dim=48, depth=2, num_heads=3)


def hf_model(qkv_bias: bool = True) -> VideoMAEModel:
    config = VideoMAEConfig(
        image_size=CFG.img_size,
        patch_size=CFG.patch_size,
        num_frames=CFG.num_frames,
        tubelet_size=CFG.tubelet_size,
        hidden_size=CFG.embed_dim,
        num_hidden_layers=CFG.depth,
        num_attention_heads=CFG.num_heads,
        intermediate_size=4 * CFG.embed_dim,
        layer_norm_eps=CFG.norm_eps,
        qkv_bias=qkv_bias,
        use_mean_pooling=False,
    )
    torch.manual_seed(0)
    model = VideoMAEModel(config).eval()
    with torch.no_grad():  # HF initialises biases and LN to constants; randomise everything
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_sincos_table_matches_hf() -> None:
    torch.testing.assert_close(sincos_table(37, 24), get_sinusoid_encoding_table(37, 24), rtol=0, atol=1e-6)


@pytest.mark.parametrize("qkv_bias", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_encoder_equals_hf_videomae(qkv_bias: bool, masked: bool) -> None:
    hf = hf_model(qkv_bias)
    ours = VideoEncoder(CFG.model_copy(update={"qkv_bias": qkv_bias})).eval()
    ours.load_state_dict(hf_to_encoder({HF_PREFIX + k: v for k, v in hf.state_dict().items()}))
    video = torch.randn(2, 3, CFG.num_frames, CFG.img_size, CFG.img_size)
    mask = tube_mask(2, CFG.grid, 0.75, np.random.default_rng(0)) if masked else None
    visible = None if mask is None else split_tokens(mask, int(mask[0].sum())).visible
    with torch.no_grad():
        expected = hf(video.transpose(1, 2), bool_masked_pos=mask).last_hidden_state
        got = ours(video, visible)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4


def test_layout_round_trip() -> None:
    state = VideoEncoder(CFG).state_dict()
    for hub_names in (True, False):
        back = hf_to_encoder(encoder_to_hf(state, hub_bias_names=hub_names))
        assert back.keys() == state.keys()
        assert all(torch.equal(back[k], state[k]) for k in state)
    assert set(encoder_to_hf(state, hub_bias_names=False)) == set(hf_model().state_dict())
