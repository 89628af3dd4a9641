"""Settings of the clip operations every training and evaluation stage shares: which frames form the input, the
training augmentation and the test views (the operations: ``pipeline.video.transforms`` and ``.views``)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section

DecodeBackend = Literal["auto", "decord", "pyav", "torchcodec"]  # auto: decord, PyAV where decord fails


class SamplingConfig(Section):
    """Which frames of a clip form the input (docs/method.md)."""

    mode: Literal["stride", "segment"] = Field(
        default="stride", description="`stride`: model.num_frames frames `stride` apart from a random start "
        "(SSv2 recipe); `segment`: the clip split into model.num_frames equal parts, one frame each (EK-100 recipe). "
        "A clip shorter than the stride window is sampled by segments.",
    )
    stride: int = Field(default=4, ge=1, le=64, description="Frame step in `stride` mode.")
    jitter: bool = Field(
        default=True, description="Random frame inside each stride step / segment (False: the first / the centre)."
    )


class AugmentConfig(Section):
    """RandomResizedCrop + horizontal flip, applied jointly to the frames and the action box."""

    scale: tuple[float, float] = Field(default=(0.5, 1.0), description="Crop area as a fraction of the frame.")
    ratio: tuple[float, float] = Field(default=(3 / 4, 4 / 3), description="Crop aspect ratio range (w/h).")
    flip: bool = Field(default=True, description="Horizontal flip with probability 0.5.")

    @model_validator(mode="after")
    def _ordered(self) -> "AugmentConfig":
        for name, (low, high) in (("scale", self.scale), ("ratio", self.ratio)):
            if not 0 < low <= high:
                raise ValueError(f"{name} must be 0 < low <= high, got {(low, high)}")
        if self.scale[1] > 1:
            raise ValueError(f"scale upper bound {self.scale[1]} exceeds 1 (the whole frame)")
        return self


class ViewsConfig(Section):
    """Multi-view testing (docs/method.md D16): softmax averaged over temporal clips x spatial crops."""

    temporal: int = Field(default=5, ge=1, description="Clips evenly spread over the video (EGTEA: 1).")
    spatial: int = Field(default=3, ge=1, le=3, description="Short side resized to the input size, then 1 "
                         "(centre) or 3 (left/top, centre, right/bottom) square crops along the long side.")

    @property
    def label(self) -> str:
        return f"{self.temporal}x{self.spatial}"
