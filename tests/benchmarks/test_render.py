"""The README's benchmark tables are what the committed result files render to, and the result format keeps
what a reader needs to judge a figure (machine, commit, repeats, spread)."""
from __future__ import annotations

import json

import pytest

from tests.helpers import BENCHMARKS, REPO, benchmark_module

RESULTS = BENCHMARKS / "results"


def test_readme_tables_match_the_result_files():
    render = benchmark_module("render")
    readme = (REPO / "README.md").read_text()
    assert render.rendered(readme) == readme, "README is stale: run `python benchmarks/render.py`"


@pytest.mark.parametrize("name", ["shard", "optical_flow", "pretrain", "captions", "scale", "loader", "eval"])
def test_every_speed_result_says_where_when_and_how_often(name):
    doc = json.loads((RESULTS / f"{name}.json").read_text())
    assert {"date", "commit", "machine", "settings", "figures"} <= set(doc)
    assert {"cpu", "cores", "usable_cores"} <= set(doc["machine"])
    assert doc["settings"]["repeats"] >= 3
    spreads = []

    def collect(node):
        if isinstance(node, dict):
            if set(node) == {"median", "min", "max", "n"}:
                spreads.append(node)
            else:
                for value in node.values():
                    collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(doc["figures"])
    assert spreads and all(s["min"] <= s["median"] <= s["max"] and s["n"] >= 3 for s in spreads)


def test_spread_and_cells():
    record = benchmark_module("record")
    assert record.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    assert record.spread([1 / 3]) == {"median": 0.3333, "min": 0.3333, "max": 0.3333, "n": 1}
    assert record.cell({"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}) == "2.50 (1.00–10.0)"
    assert [record.significant(x) for x in (1234.5, 0.01234, 12.0, 0.0)] == ["1234", "0.0123", "12.0", "0"]
    assert record.cell({"median": 0.3333, "min": 0.3333, "max": 0.3333, "n": 1}, "{:.2f}") == "0.33"
    with pytest.raises(ValueError, match="no measurement"):
        record.spread([])
