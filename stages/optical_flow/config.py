"""Settings of the `optical_flow` stage: the flow backend and MOFO's flow -> action-area box procedure.

Sizes in pixels (blur sigmas, border, flow bound) are given at ``reference_short_side``, the frame size the
reference (MOFO) ran at, and scaled to the flow resolution, so changing ``short_side`` keeps the boxes.
"""
from typing import Literal

from pydantic import Field

from pipeline.config.base import Section
from pipeline.plugins import Registry

# Flow backends: name -> factory taking this section and returning the flow function (stages/optical_flow/flow_fields.py).
FLOW_BACKENDS = Registry("optical_flow.backend", {
    "dis": "stages.optical_flow.flow_fields:dis_flow",
    "tvl1": "stages.optical_flow.flow_fields:tvl1_flow",
    "farneback": "stages.optical_flow.flow_fields:farneback_flow",
    "mv": "stages.optical_flow.motion_vectors:mv_flow",
}, group="fils.flow_backends")
FlowBackend = FLOW_BACKENDS.choices()
DisPreset = Literal["ultrafast", "fast", "medium"]


class BoxConfig(Section):
    """MOFO's motion-boundary box procedure (docs/method.md). Defaults are the reference values except
    `window` and `outlier_var_frac` (tuned against ground truth, see their descriptions) and the two settings
    the reference has no counterpart for (`support_frac`, `tight`)."""

    window: int = Field(
        default=4, ge=1, le=64, description="Source frames of flow summed per motion map (reference: 8, 4 for "
        "Kinetics). 4 measured better against ground truth: a long window cuts the first and last positions of a "
        "fast object, whose outline is summed over fewer frames there.",
    )
    border_px: float = Field(default=8.0, ge=0, description="Border of the motion map set to zero.")
    pre_blur_sigma_px: float = Field(default=1.0, ge=0, description="Gaussian blur before the thresholds.")
    rel_max: float = Field(default=0.4, ge=0, le=1, description="Zero motion-map pixels below this fraction of the max.")
    rel_std: float = Field(default=1.5, ge=0, description="Then zero pixels below this many standard deviations.")
    post_blur_sigma_px: float = Field(default=30.0, ge=0, description="Gaussian blur that merges motion fragments.")
    support_frac: float = Field(
        default=0.05, gt=0, lt=1,
        description="Pixels of the blurred map above this fraction of its max form the contours (the reference "
        "keeps every pixel that is non-zero after 8-bit rounding, which depends on the flow's absolute scale).",
    )
    tight: bool = Field(
        default=True, description="Box = extent of the thresholded boundary pixels inside the kept contours "
        "(False: extent of the blurred contours, as the reference, which widens the box by about the blur sigma).",
    )
    max_contours: int = Field(default=2, ge=1, description="Largest contours kept per frame.")
    split_diag_frac: float = Field(
        default=0.4, gt=0, description="Keep only the largest contour when the centroids are farther apart than "
        "this fraction of the frame diagonal.",
    )
    max_side_frac: float = Field(default=0.7, gt=0, le=1, description="Boxes wider/taller than this are replaced.")
    min_area_frac: float = Field(default=0.01, ge=0, lt=1, description="Boxes smaller than this area are replaced.")
    outlier_var_frac: float | None = Field(
        default=None, gt=0, description="A box whose squared deviation from the running mean box exceeds this "
        "fraction of its area takes the previous box (reference: 0.1). Off by default: the running mean lags "
        "behind any object that travels more than about its own size, so the rule freezes its box half-way.",
    )
    pad_below_frac: float = Field(default=0.4, ge=0, le=1, description="Boxes up to this fraction of a side are padded.")
    pad_frac: float = Field(default=0.05, ge=0, le=1, description="Padding per side, as a fraction of the box side.")
    min_motion: float = Field(
        default=0.5, ge=0,
        description="Motion score (reference px per frame) below which a clip has no motion: centre box, `fallback`.",
    )


class ContactSheetConfig(Section):
    clips: int = Field(default=8, ge=0, description="Clips shown on the contact sheets (0: no sheet).")
    frames: int = Field(default=6, ge=1, le=32, description="Frames shown per clip.")
    clips_per_sheet: int = Field(default=8, ge=1, description="Rows per PNG.")
    tile_height: int = Field(default=96, ge=16, le=512, description="Height of one frame on the sheet.")


class OpticalFlowConfig(Section):
    backend: FlowBackend = Field(
        default="dis", description="`tvl1` (cv2.optflow DualTVL1, as the reference), `dis` (fast), `farneback`, "
        "`mv` (the H.264 motion vectors of the shards, read while decoding: no pixel flow; coarser)."
    )
    dis_preset: DisPreset = Field(default="medium", description="cv2.DISOpticalFlow preset.")
    dis_finest_scale: int | None = Field(
        default=0, ge=0, le=4, description="Finest pyramid level DIS refines to (None: the preset's, 1 or 2, which "
        "blurs motion boundaries on small frames).",
    )
    short_side: int = Field(default=128, ge=16, le=2048, description="Short side of the frames flow runs on.")
    frame_step: int = Field(default=1, ge=1, le=64, description="Flow between frames i and i+step; every step-th frame.")
    reference_short_side: int = Field(
        default=256, ge=16, description="Frame size at which the pixel settings are given (MOFO's frames)."
    )
    flow_bound_px: float = Field(
        default=20.0, gt=0, description="Flow clipped to +-this per source frame (denseflow -b=20)."
    )
    boxes: BoxConfig = BoxConfig()
    contact_sheet: ContactSheetConfig = ContactSheetConfig()
    clips_per_unit: int = Field(
        default=64, ge=1, description="Clips per unit of work (a shard is split so small datasets use every worker; "
        "does not change the outputs).",
    )


SECTIONS = {"optical_flow": (OpticalFlowConfig, OpticalFlowConfig())}  # the root config's section of this stage
