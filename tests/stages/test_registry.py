"""The stage registry: every stage package is registered under its folder name, in an order where each stage
comes after its upstream stages, owns its config sections and has its Prefect deployment."""
from __future__ import annotations

from dataclasses import replace
from importlib import import_module
from typing import get_args

import pytest
import yaml

from pipeline.registry import dag_order
from stages import registry
from stages.config import FilsConfig
from stages.packages import stage_packages
from tests.helpers import REPO

SPECS = registry()


def test_every_stage_package_is_registered_after_its_upstream_stages():
    assert sorted(SPECS) == stage_packages()
    seen: set[str] = set()
    for name, spec in SPECS.items():
        assert set(spec.upstream) <= seen, f"{name} runs before its upstream {set(spec.upstream) - seen}"
        seen.add(name)
    # the documented order: stages that could go either way keep the order pretrain lists them in
    assert list(SPECS) == ["shard", "optical_flow", "captions", "pretrain", "finetune", "evaluate"]


def test_dag_order_refuses_a_cycle_and_an_unknown_upstream():
    shard, flow = SPECS["shard"], SPECS["optical_flow"]
    with pytest.raises(ValueError, match="form a cycle"):
        dag_order([replace(shard, upstream=("optical_flow",)), flow])
    with pytest.raises(ValueError, match="unknown upstream stage"):
        dag_order([flow])
    assert [s.name for s in dag_order([flow, shard])] == ["shard", "optical_flow"]


@pytest.mark.parametrize("name", list(SPECS))
def test_a_stage_owns_the_config_sections_it_reads(name):
    owned = import_module(f"stages.{name}.config").SECTIONS
    assert set(owned) <= set(FilsConfig.model_fields)
    for path in SPECS[name].sections:  # what the fingerprint coverage test walks: sections of this stage's own
        assert path.split(".")[0] in owned, f"{name} reads {path}, a section it does not declare in its config.py"


def test_the_flow_offers_exactly_the_registered_stages():
    from flows.fils_flow import StageName

    assert sorted(get_args(StageName)) == sorted(SPECS)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_stage_has_a_deployment_that_runs_it_alone(name):
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    single = {d["name"]: d["parameters"].get("stages") for d in deployments}
    assert single.get(name.replace("_", "-")) == [name]
    for deployment in deployments:
        assert set(deployment["parameters"].get("stages") or []) <= set(SPECS), deployment["name"]
