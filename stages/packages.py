"""Which stages exist: every sub-package of ``stages`` is one, named by its folder (the name of its workdir folder,
its config section and its CLI and Prefect name). Adding a stage is adding a package."""
from __future__ import annotations

import pkgutil
from pathlib import Path


def stage_packages() -> list[str]:
    """The stage package names, sorted (the DAG order comes from the specs: ``stages.registry``)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.ispkg)
