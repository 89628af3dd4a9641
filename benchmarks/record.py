"""What every speed benchmark records, so its figures can be regenerated and compared: the machine it ran on, the
date and commit, its settings, and each figure's spread over repeated measurements (median, min, max).

One JSON per benchmark under ``benchmarks/results/``; ``benchmarks/render.py`` writes the README's tables from
those files. A ratio between two implementations is computed within each repeat (both measured back to back on
the same machine state) and then summarised, never as the ratio of two medians.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def spread(values: Sequence[float], digits: int = 4) -> dict[str, float | int]:
    """Median, min and max of repeated measurements, to ``digits`` significant digits."""
    if not values:
        raise ValueError("no measurement to summarise")

    def round_sig(x: float) -> float:
        return float(f"{x:.{digits}g}")

    return {"median": round_sig(statistics.median(values)), "min": round_sig(min(values)),
            "max": round_sig(max(values)), "n": len(values)}


def significant(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits without an exponent (1234.5 -> 1235, 0.01234 -> 0.0123)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def cell(figure: dict[str, float | int], fmt: str | None = None) -> str:
    """A figure in a README table: ``median (min–max)``, or the value alone when it was measured once; ``fmt``
    (a format string) instead of three significant digits."""
    def show(x: float) -> str:
        return fmt.format(x) if fmt else significant(x)

    if figure["n"] == 1 or figure["min"] == figure["max"]:
        return show(figure["median"])
    return f"{show(figure['median'])} ({show(figure['min'])}–{show(figure['max'])})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(**extra: Any) -> dict[str, Any]:
    """CPU model, cores (all, and usable by this process), Python and library versions, plus ``extra``."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
                            "python": platform.python_version(), "system": platform.platform(terse=True)}
    try:
        import torch

        info |= {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    except ImportError:
        pass
    return info | extra


def commit() -> str:
    """HEAD of the repository, with ``-dirty`` when tracked code outside ``benchmarks/results`` is modified."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
               if "benchmarks/results/" not in line]
    return head + ("-dirty" if changed else "")


def save(name: str, settings: dict[str, Any], figures: dict[str, Any], out: Path | None = None,
         **machine_extra: Any) -> dict[str, Any]:
    """Write ``results/<name>.json`` (or ``out``), print it, and return it."""
    doc = {"benchmark": name, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "commit": commit(), "machine": machine(**machine_extra), "settings": settings, "figures": figures}
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return doc


def describe_machine(doc: dict[str, Any]) -> str:
    """One line for the README: where and when the figures were measured."""
    m = doc["machine"]
    threads = (f", {m['opencv_threads']} OpenCV thread(s)" if "opencv_threads" in m
               else f", {m['torch_threads']} torch threads" if "torch_threads" in m else "")
    return (f"measured {doc['date'][:10]} at commit `{doc['commit']}` on {m['cpu']} ({m['usable_cores']} of "
            f"{m['cores']} cores usable{threads}); median (min–max) of {doc['settings'].get('repeats', 1)} repeats")
