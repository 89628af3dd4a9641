"""Write the README's benchmark tables from the result files, so the two never disagree.

Each table sits between two markers naming its result file; the text between them is replaced by the benchmark's
``render_markdown`` of ``benchmarks/results/<name>.json``. ``--check`` changes nothing and fails when the README
is not what the result files render to (tests/benchmarks/test_render.py runs it).

    python benchmarks/render.py [--check]
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import sys

from record import REPO, RESULTS

README = REPO / "README.md"
BENCHMARKS = {"shard": "bench_shard", "optical_flow": "bench_optical_flow", "pretrain": "bench_pretrain",
              "captions": "bench_captions", "scale": "bench_scale", "loader": "bench_loader",
              "eval": "bench_eval", "learning_check": "bench_learning_check"}


def markers(name: str) -> tuple[str, str]:
    return (f"<!-- rendered by benchmarks/render.py from benchmarks/results/{name}.json -->",
            f"<!-- end of benchmarks/results/{name}.json -->")


def render(name: str) -> str:
    doc = json.loads((RESULTS / f"{name}.json").read_text())
    return importlib.import_module(BENCHMARKS[name]).render_markdown(doc)


def rendered(readme: str) -> str:
    """``readme`` with every marked block replaced by its rendering."""
    for name in BENCHMARKS:
        begin, end = markers(name)
        if readme.count(begin) != 1 or readme.count(end) != 1:
            raise ValueError(f"README.md needs exactly one pair of markers for {name}:\n{begin}\n{end}")
        head, rest = readme.split(begin)
        _, tail = rest.split(end)
        readme = f"{head}{begin}\n{render(name)}\n{end}{tail}"
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if README.md differs from the rendering")
    args = parser.parse_args()
    current = README.read_text()
    new = rendered(current)
    if args.check:
        if new != current:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), new.splitlines(True),
                                                       "README.md", "rendered"))
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
