"""The VideoMAE pixel target (fils_model/losses/pixel.py): tube order and normalisation against HF VideoMAE's own
loss, closed-form tubes, and the MSE."""

from __future__ import annotations

import torch

from fils_model.losses.pixel import pixel_loss, tube_pixels, unnormalise
from tests.fils_model.reference import rows_where


def test_pixel_target_matches_hf_videomae() -> None:
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    cfg = VideoMAEConfig(image_size=16, patch_size=8, num_frames=4, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32, decoder_hidden_size=16,
                         decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32)
    hf = VideoMAEForPreTraining(cfg).eval()
    video = torch.randn(2, 3, 4, 16, 16)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :4] = True
    with torch.no_grad():
        out = hf(video.transpose(1, 2), bool_masked_pos=mask)
        hf_x = hf.videomae(video.transpose(1, 2), bool_masked_pos=mask).last_hidden_state
        hf_x = hf.encoder_to_decoder(hf_x)
    target = rows_where(tube_pixels(unnormalise(video), 2, 8, True), mask)
    expected_loss = torch.nn.functional.mse_loss(out.logits, target)
    torch.testing.assert_close(out.loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert hf_x.shape[1] == 4


def test_tubes_in_closed_form() -> None:
    """One tube per (time, row, column) block, flattened as (tubelet, patch, patch, channel); a tube whose
    pixels ramp 0, 1, ... normalises to the standard ramp (unbiased std), a constant tube to zeros."""
    pixels = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).reshape(1, 2, 2, 2, 2)  # (B, C, T, H, W)
    raw = tube_pixels(pixels, tubelet=2, patch=2, normalise=False)
    assert raw.shape == (1, 1, 16)
    assert raw[0, 0, :2].tolist() == [0.0, 8.0]  # pixel (t0, y0, x0): channel 0 then channel 1
    ramp = torch.arange(8, dtype=torch.float32)
    expected = (ramp - ramp.mean()) / ramp.std()
    normalised = tube_pixels(pixels, tubelet=2, patch=2).reshape(8, 2)
    torch.testing.assert_close(normalised[:, 0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(normalised[:, 1], expected, atol=1e-5, rtol=1e-5)
    flat = tube_pixels(torch.full((1, 3, 2, 4, 4), 0.3), tubelet=2, patch=2)
    assert flat.abs().max() == 0


def test_mse_over_the_masked_tubes() -> None:
    pred, target = torch.zeros(2, 3, 4), torch.full((2, 3, 4), 2.0)
    assert float(pixel_loss(pred, target)) == 4.0
    assert float(pixel_loss(target, target)) == 0.0
