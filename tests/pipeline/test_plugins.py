"""The extension points: a registry names each implementation once, the config offers exactly its names, and
every registered flow backend and dataset adapter keeps its contract."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import cv2
import numpy as np
import pytest

from pipeline.artifacts import SUCCESS_FILE
from pipeline.plugins import Registry
from pipeline.video.encode import H264Writer
from stages.config import FilsConfig
from stages.optical_flow.config import FLOW_BACKENDS, OpticalFlowConfig
from stages.optical_flow.flow_fields import ClipFlow, FlowFn, make_flow
from stages.optical_flow.tables import read_action_areas
from stages.shard.adapters import AnnotationError, list_clips
from stages.shard.source_config import ADAPTERS, KINDS_NEEDING_ANNOTATIONS, SourceConfig
from tests.helpers import REPO, make_config


def test_an_unknown_name_is_refused_naming_the_setting_and_the_choices():
    registry = Registry("a.setting", {"one": "json:dumps", "two": "json:loads"}, group="fils.test_nothing")
    assert registry.load("two")("[1]") == [1] and get_args(registry.choices()) == ("one", "two")
    with pytest.raises(ValueError, match=r"a.setting='three' is unknown; choose from one, two"):
        registry.load("three")
    with pytest.raises(ValueError, match="module:attribute"):
        Registry("a.setting", {"one": "json.dumps"}, group="fils.test_nothing")


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


def _field(flow: FlowFn | ClipFlow, tmp_path: Path) -> np.ndarray:
    """The flow of the square moving 2 px: from the frame pair, or from the clip encoded as the shard stage does."""
    if not isinstance(flow, ClipFlow):
        return flow(_square(0), _square(2))
    writer = H264Writer(tmp_path / "square.mp4", 64, 64, fps=10, gop=16, crf=18, preset="veryfast")
    for shift in (0, 2, 4):
        writer.write(np.repeat(_square(shift)[..., None], 3, axis=2))
    writer.close()
    return flow.clip_flows((tmp_path / "square.mp4").read_bytes(), [0, 1, 2])[1]  # frame 0 is the key frame


@pytest.mark.parametrize("backend", FLOW_BACKENDS.names())
def test_every_flow_backend_finds_a_square_moving_right(backend, tmp_path):
    field = _field(make_flow(OpticalFlowConfig(backend=backend)), tmp_path)
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


PLUGIN = '''
import os

import cv2


def make(cfg):
    """A throw-away flow backend (Farneback with a wider window) that notes each process it runs in."""
    def flow(prev, nxt):
        with open(os.environ["DEMO_FLOW_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 21, 3, 5, 1.2, 0)
    return flow
'''


def install_plugin(site: Path) -> None:
    """What ``pip install`` of a package declaring a ``fils.flow_backends`` entry point leaves in site-packages."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "fils_demo_flow.py").write_text(PLUGIN)
    info = site / "fils_demo_flow-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fils-demo-flow\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fils.flow_backends]\ndemo = fils_demo_flow:make\n"
                                           "dis = fils_demo_flow:make\nbroken = fils_demo_flow\n")  # both ignored


def test_an_installed_package_adds_a_flow_backend_that_the_stage_runs(tmp_path, few_samples):
    """A backend from outside the repository: one module plus its entry point. The config offers it, the contract
    test passes on it, and the optical_flow stage computes its action areas with it in the unit workers. Entries
    that reuse a built-in name or name no attribute are left out with a warning, not fatal."""
    site, log = tmp_path / "site", tmp_path / "flow-calls.log"
    install_plugin(site)
    env = os.environ | {"PYTHONPATH": f"{site}{os.pathsep}{REPO}", "DEMO_FLOW_LOG": str(log)}
    contract = subprocess.run([sys.executable, "-c", (
        "from stages.optical_flow.config import FLOW_BACKENDS, FlowBackend\n"
        "from typing import get_args\n"
        "assert get_args(FlowBackend) == ('dis', 'tvl1', 'farneback', 'mv', 'demo'), get_args(FlowBackend)\n"
        "from tests.pipeline.test_plugins import test_every_flow_backend_finds_a_square_moving_right as check\n"
        "import sys, pathlib\ncheck('demo', pathlib.Path(sys.argv[1]))\n"), str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert contract.returncode == 0, contract.stderr
    assert "'dis' = 'fils_demo_flow:make'" in contract.stderr and "'broken' = 'fils_demo_flow'" in contract.stderr
    log.unlink()

    config = tmp_path / "c.yaml"
    config.write_text(make_config(tmp_path / "w", few_samples).model_dump_json())  # JSON is YAML
    cli = subprocess.Popen([sys.executable, "-m", "stages.cli", "run", "-c", str(config), "--stages",
                            "shard,optical_flow", "--set", "optical_flow.backend=demo"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = cli.communicate(timeout=600)
    assert cli.returncode == 0, stderr
    areas = read_action_areas(tmp_path / "w" / "optical_flow", ["status"]).column("status").to_pylist()
    assert areas == ["ok"] * 3
    workers = {int(pid) for pid in log.read_text().split()}
    assert workers and cli.pid not in workers  # the unit workers found the entry point themselves
    record = json.loads((tmp_path / "w" / "optical_flow" / SUCCESS_FILE).read_text())
    assert '"demo"' in json.dumps(record)
