"""benchmarks/gpu_check.py runs once on a lent GPU, so its code paths are exercised here on the CPU (``--smoke``:
tiny shapes): every part reports figures, a failing part is recorded without stopping the others, the time budget
skips what it cannot fit, and the JSON is also written to ``$OUT``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BENCHMARKS

SCRIPT = BENCHMARKS / "gpu_check.py"


def run_check(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = tmp_path / "g.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *args], capture_output=True,
                          text=True, timeout=240, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert json.loads(proc.stdout) == doc  # the printed object is the file's
    return doc


@pytest.mark.slow
def test_smoke_run_measures_every_part(tmp_path):
    doc = run_check(tmp_path, env={"OUT": str(tmp_path / "device-out")})
    assert json.loads((tmp_path / "device-out" / "gpu_check.json").read_text()) == doc
    assert {"torch", "cores", "commit"} <= set(doc["environment"])
    sections = doc["sections"]
    assert set(sections) == {"fils_step", "hf_videomae", "loader", "videoblip"}
    for part in (sections["fils_step"]["eager"], sections["fils_step"]["compiled"], sections["hf_videomae"]):
        assert part["clips_per_s"] > 0 and part["batch"] == 4, part
    assert sections["fils_step"]["eager"]["gflops_per_clip"] > 0
    assert sections["hf_videomae"]["gflops_per_clip"] > 0
    assert sections["fils_step"]["compiled"]["compile_s"] > 0
    assert [b["batch"] for b in sections["videoblip"]["batches"]] == [1, 2]
    assert all(b["clips_per_s"] > 0 for b in sections["videoblip"]["batches"]), sections["videoblip"]
    loader = sections["loader"]  # bench_loader.py is written alongside; until it exists, its ImportError is recorded
    assert loader.get("samples_per_s", 0) > 0 or isinstance(loader.get("error"), str), loader


def test_a_failing_part_is_recorded_and_the_next_one_runs(tmp_path):
    doc = run_check(tmp_path, "--sections", "hf_videomae", "videoblip", "--fail-section", "hf_videomae")
    assert doc["sections"]["hf_videomae"]["error"] == "RuntimeError: injected failure (--fail-section hf_videomae)"
    assert all(b["clips_per_s"] > 0 for b in doc["sections"]["videoblip"]["batches"])
    assert "fils_step" not in doc["sections"]


def test_a_spent_budget_skips_every_part_with_its_reason(tmp_path):
    doc = run_check(tmp_path, "--budget-s", "0")
    parts = [doc["sections"]["fils_step"]["eager"], doc["sections"]["fils_step"]["compiled"],
             *(doc["sections"][name] for name in ("hf_videomae", "loader", "videoblip"))]
    assert all(part["skipped"].startswith("time budget spent") for part in parts), parts
