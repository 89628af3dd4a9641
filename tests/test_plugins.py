"""The extension points: a registry names each implementation once, the config offers exactly its names, and
every registered flow backend and dataset adapter keeps its contract."""
from __future__ import annotations

from typing import get_args

import cv2
import numpy as np
import pytest

from pipeline.plugins import Registry
from stages.config import FilsConfig
from stages.optical_flow.config import FLOW_BACKENDS, OpticalFlowConfig
from stages.optical_flow.flow_fields import make_flow
from stages.shard.adapters import AnnotationError, list_clips
from stages.shard.source_config import ADAPTERS, KINDS_NEEDING_ANNOTATIONS, SourceConfig


def test_an_unknown_name_is_refused_naming_the_setting_and_the_choices():
    registry = Registry("a.setting", {"one": "json:dumps", "two": "json:loads"})
    assert registry.load("two")("[1]") == [1] and get_args(registry.choices()) == ("one", "two")
    with pytest.raises(ValueError, match=r"a.setting='three' is unknown; choose from one, two"):
        registry.load("three")
    with pytest.raises(ValueError, match="module:attribute"):
        Registry("a.setting", {"one": "json.dumps"})


@pytest.mark.parametrize("registry, field", [
    (FLOW_BACKENDS, FilsConfig.model_fields["optical_flow"].annotation.model_fields["backend"]),
    (ADAPTERS, SourceConfig.model_fields["kind"]),
])
def test_the_config_offers_exactly_the_registered_names(registry, field):
    assert get_args(field.annotation) == registry.names()


_RNG = np.random.default_rng(0)
TEXTURE = cv2.GaussianBlur(_RNG.uniform(0, 255, (16, 16)), (0, 0), 1.0)
BACKGROUND = cv2.GaussianBlur(_RNG.uniform(0, 80, (64, 64)), (0, 0), 1.0)


def _square(shift: int) -> np.ndarray:
    """A textured square ``shift`` pixels to the right on a static textured background."""
    frame = BACKGROUND.copy()
    frame[24:40, 20 + shift:36 + shift] = 100 + TEXTURE * 0.6
    return frame.astype(np.uint8)


@pytest.mark.parametrize("backend", FLOW_BACKENDS.names())
def test_every_flow_backend_finds_a_square_moving_right(backend):
    flow = make_flow(OpticalFlowConfig(backend=backend))
    field = flow(_square(0), _square(2))
    assert field.shape == (64, 64, 2) and field.dtype == np.float32
    u, v = field[26:38, 24:34, 0].mean(), field[26:38, 24:34, 1].mean()
    assert 1.0 < u < 3.0 and abs(v) < 0.5, (u, v)
    assert np.abs(field[:8, :8]).max() < 0.5  # the static background


@pytest.mark.parametrize("kind", ADAPTERS.names())
def test_every_adapter_refuses_missing_annotations_naming_the_path(tmp_path, kind):
    """The shard stage's first check of a dataset: an adapter given a root without its annotation files says
    which file it looked for (folder sources have none: an empty root lists no clips)."""
    if kind not in KINDS_NEEDING_ANNOTATIONS:
        assert list_clips(SourceConfig(kind=kind, root=tmp_path)).clips == []
        return
    with pytest.raises(AnnotationError, match=str(tmp_path)):
        list_clips(SourceConfig(kind=kind, root=tmp_path, annotations=tmp_path / "annotations"))
