from pathlib import Path

import pytest

from pipeline.config import ConfigError
from stages.config import load_config
from tests.helpers import REPO

MINIMAL = {"workdir": "/tmp/w", "data": {"source": {"kind": "folder", "root": "/tmp/videos"}}}


def test_minimal_config_is_valid_and_fills_defaults():
    cfg = load_config(tree=MINIMAL)
    assert cfg.workdir == Path("/tmp/w")
    assert cfg.shard.short_side == 320 and cfg.shard.reencode is True


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("workdir: w\ndata:\n  source:\n    kind: folder\n    root: v\nshard:\n  short_side: 256\n")
    cfg = load_config(path, ["shard.short_side=128", "runtime.workers=0", "data.source.splits=[train]"])
    assert cfg.shard.short_side == 128 and cfg.runtime.workers == 0 and cfg.data.source.splits == ["train"]


@pytest.mark.parametrize("override, fragments", [
    ("shard.short_side=-5", ["`shard.short_side`", "-5", "greater than or equal to 16"]),
    ("shard.short_sid=5", ["`shard.short_sid`", "not a known setting"]),
    ("runtime.workers=two", ["`runtime.workers`", "'two'", "integer"]),
    ("data.source.kind=youtube", ["`data.source.kind`", "'youtube'", "folder"]),
])
def test_invalid_values_name_key_value_and_expectation(override, fragments):
    with pytest.raises(ConfigError) as err:
        load_config(tree=MINIMAL, overrides=[override])
    for fragment in fragments:
        assert fragment in str(err.value)


def test_missing_required_keys_and_annotations():
    with pytest.raises(ConfigError, match="`workdir` is required"):
        load_config(tree={"data": MINIMAL["data"]})
    with pytest.raises(ConfigError, match="needs data.source.annotations"):
        load_config(tree=MINIMAL, overrides=["data.source.kind=ek100"])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(tree=MINIMAL, overrides=["shard.short_side"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(tree=MINIMAL, overrides=["workdir.x=1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_configs_are_valid():
    for path in sorted(REPO.joinpath("configs").glob("*.yaml")):
        load_config(path)


def test_released_code_variant_fills_its_switches_and_what_the_user_sets_wins():
    minimal = {"workdir": "/tmp/w", "data": {"source": {"kind": "folder", "root": "/tmp/videos"}}}
    tree = minimal | {"pretrain": {"variant": "released_code", "trainer": {"total_steps": 10, "global_batch_size": 4},
                                   "loss": {"gather_negatives": True}}}
    pre = load_config(tree=tree).pretrain
    assert (pre.model.target_source, pre.model.actclip_source) == ("tube_embedding", "tube_embedding")
    assert (pre.loss.feature_pairing, pre.loss.actclip_normalize, pre.loss.actclip_fallback) == (
        "released_code", False, "released_code")
    assert pre.loss.gather_negatives is True  # set explicitly: kept
    assert (pre.optim.ema_update, pre.trainer.precision, pre.data.box_rule) == ("epoch", "fp16", "released_code")
    default = load_config(tree=minimal | {"pretrain": {"trainer": {"total_steps": 10, "global_batch_size": 4}}})
    assert default.pretrain.variant == "fils" and default.pretrain.loss.feature_pairing == "aligned"
    assert default.pretrain.optim.ema_update == "step" and default.pretrain.loss.actclip_normalize


def test_timm_floor_admits_only_releases_whose_mixup_takes_multi_label():
    """timm 1.0.30 and older: ``Mixup(multi_label=True)`` raises TypeError (checked against the released wheels)."""
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    timm = next(Requirement(d) for d in deps if Requirement(d).name == "timm")
    assert not timm.specifier.contains("1.0.30") and not timm.specifier.contains("1.0.29")
    assert timm.specifier.contains("1.0.31")


def test_a_launch_setting_a_stage_does_not_honour_is_refused():
    """Both training stages start through one launcher; stopping after N steps is the pretrain stage's alone."""
    demo = load_config("configs/demo.yaml", ["pretrain.launch.max_steps_per_attempt=3"])
    assert demo.pretrain.launch.max_steps_per_attempt == 3
    with pytest.raises(ConfigError, match="finetune.launch.max_steps_per_attempt` is not a known setting"):
        load_config("configs/demo.yaml", ["finetune.launch.max_steps_per_attempt=3"])
