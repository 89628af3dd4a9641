"""The order stages run in: upstream before downstream; stages that could go in either order go in the order a
downstream stage lists them in its ``upstream`` (then by name), so the order is the same on every machine."""
from __future__ import annotations

from typing import Iterable

from pipeline.stage import StageSpec


def dag_order(specs: Iterable[StageSpec]) -> list[StageSpec]:
    """``specs`` sorted so that every stage comes after all of its ``upstream`` stages; refuses an upstream that is
    not among ``specs`` and a cycle, naming the stages."""
    by_name = {spec.name: spec for spec in specs}
    for spec in by_name.values():
        unknown = sorted(set(spec.upstream) - set(by_name))
        if unknown:
            raise ValueError(f"stage {spec.name!r} declares unknown upstream stage(s) {unknown}")
    listed_at = {name: min((s.upstream.index(name) for s in by_name.values() if name in s.upstream), default=0)
                 for name in by_name}
    ordered: list[StageSpec] = []
    placed: set[str] = set()
    while len(ordered) < len(by_name):
        ready = sorted((n for n, s in by_name.items() if n not in placed and set(s.upstream) <= placed),
                       key=lambda n: (listed_at[n], n))
        if not ready:
            raise ValueError(f"the upstream declarations of {sorted(set(by_name) - placed)} form a cycle")
        ordered.append(by_name[ready[0]])
        placed.add(ready[0])
    return ordered
