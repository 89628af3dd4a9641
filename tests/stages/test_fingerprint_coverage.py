"""Every setting a stage reads reaches its fingerprint, unless the stage declares it runtime-only.

For each registered stage the test walks every leaf setting under the stage's ``sections``, in several base
configs (a setting may matter only in one mode: VideoBLIP's prompt only when captions come from VideoBLIP), changes
it to another valid value and recomputes the fingerprint's inputs (the stage's settings and the upstream stages it
reads). A setting must change them in at least one base config; a runtime-only one must change them in none.
"""
from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from pipeline.fingerprint import hash_value, is_runtime_only
from pipeline.stage import StageSpec
from stages import registry
from stages.config import FilsConfig
from tests.helpers import REPO

# Paths identified by the content they point to, not by their value: the shard stage's inputs digest (a moved
# dataset keeps its cache; tests/stages/shard/test_shard_stage.py checks it) and the caption file (checked below).
CONTENT_IDENTIFIED = ("data.source.root", "data.source.annotations", "captions.file")


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _get(tree: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        tree = tree[key]
    return tree


def _demo() -> dict[str, Any]:
    return yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())


def _variant(**changes: Any) -> dict[str, Any]:
    tree = _demo()
    for path, value in changes.items():
        _set(tree, path.replace("__", "."), value)
    return tree


BASES = {
    "demo": _demo(),
    "videoblip": _variant(captions__source="videoblip", captions__model="/models/video-blip", captions__revision="abc"),
    "caption-file": _variant(captions__source="file", captions__file="/data/captions.csv"),
    "open-clip": _variant(captions__text_encoder={"backend": "open_clip", "model": "ViT-B-16", "pretrained": "openai",
                                                  "checkpoint": "/models/vificlip.pt"}),
    "full-finetune-random": _variant(finetune__mode="full", finetune__init="random", finetune__random_init_baseline=False,
                                     finetune__model={"size": "tiny", "img_size": 64, "num_frames": 8},
                                     finetune__mix={"mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1},
                                     finetune__warmup_epochs=None, finetune__warmup_steps=2),
    "finetune-steps": _variant(finetune__epochs=None, finetune__total_steps=50, finetune__init="/models/videomae"),
    "pretrain-steps": _variant(pretrain__epochs=None, pretrain__warmup_epochs=None,
                               pretrain__trainer={"global_batch_size": 8, "total_steps": 40},
                               pretrain__optim={"base_lr": 1e-3, "warmup_steps": 4}),
}


def _leaves(tree: Any, prefix: str) -> Iterator[str]:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}")
    else:
        yield prefix


def _annotation(path: str) -> Any:
    """The type annotation of the setting at ``path`` (dotted, from the root)."""
    model: Any = FilsConfig
    annotation: Any = None
    for key in path.split("."):
        annotation = model.model_fields[key].annotation
        model = next((a for a in _flatten(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return annotation


def _flatten(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    return [annotation]


def _candidates(value: Any, annotation: Any) -> list[Any]:
    """Other values a setting of this type may take, most natural first."""
    options: list[Any] = []
    for kind in _flatten(annotation):
        if typing.get_origin(kind) is typing.Literal:
            options += [choice for choice in typing.get_args(kind) if choice != value]
    if isinstance(value, bool):
        return options + [not value]
    if isinstance(value, int):
        return options + [value + 1, value * 2, value - 1, 1, 2]
    if isinstance(value, float):
        return options + [value * 1.5, value + 0.1, value / 2, 0.5, 0.1, 1.0]
    if isinstance(value, str):
        return options + [f"{value}-other", "other"]
    if isinstance(value, list):
        shifted = [v * 0.9 if isinstance(v, float) else v for v in value]
        return options + [shifted, value[:-1], [*value, value[-1]] if value else ["--other"]]
    if value is None:
        for kind in _flatten(annotation):
            origin = typing.get_origin(kind) or kind
            options += {int: [1, 2, 10], float: [0.5, 1.0, 10.0], str: ["other"], Path: ["/other"],
                        bool: [True], list: [["other"]], tuple: [(0.5, 1.0)]}.get(origin, [])
    return options


def _with(tree: dict[str, Any], path: str, value: Any) -> FilsConfig | None:
    changed = copy.deepcopy(tree)
    _set(changed, path, value)
    try:
        return FilsConfig.model_validate(changed)
    except ValidationError:
        return None


def _inputs(spec: StageSpec, cfg: FilsConfig) -> str:
    return hash_value({"config": spec.config_of(cfg), "upstream": spec.upstream_for(cfg)})


@pytest.mark.parametrize("name", list(registry()))
def test_every_setting_reaches_the_fingerprint_or_is_runtime_only(name, tmp_path):
    spec = registry()[name]
    assert spec.sections, f"stage {name} declares no config sections"
    changes: dict[str, bool] = {}  # setting -> changed the fingerprint in some base config
    for base in BASES.values():
        tree = copy.deepcopy(base) | {"workdir": str(tmp_path)}
        cfg = FilsConfig.model_validate(tree)
        dumped = cfg.model_dump(mode="json")
        reference = _inputs(spec, cfg)
        for section in spec.sections:
            for path in _leaves(_get(dumped, section), section):
                if path in CONTENT_IDENTIFIED:
                    continue
                value = _get(dumped, path)
                for candidate in _candidates(value, _annotation(path)):
                    changed = _with(dumped, path, candidate)
                    if changed is not None and changed.model_dump(mode="json") != dumped:
                        changes[path] = changes.get(path, False) or _inputs(spec, changed) != reference
                        break
    assert changes, f"no setting of stage {name} could be varied"
    missing = sorted(p for p, changed in changes.items() if not changed and not is_runtime_only(p, spec.runtime_only))
    assert not missing, f"stage {name}: these settings never change its fingerprint; put them in config_of or " \
                        f"declare them runtime_only: {missing}"
    leaking = sorted(p for p, changed in changes.items() if changed and is_runtime_only(p, spec.runtime_only))
    assert not leaking, f"stage {name}: settings declared runtime_only change its fingerprint: {leaking}"


def test_a_changed_caption_file_changes_the_captions_fingerprint(tmp_path):
    spec = registry()["captions"]
    captions = tmp_path / "captions.csv"
    captions.write_text("key,caption\na,a hand opens a drawer\n")
    tree = _variant(captions__source="file", captions__file=str(captions)) | {"workdir": str(tmp_path)}
    before = _inputs(spec, FilsConfig.model_validate(tree))
    captions.write_text("key,caption\na,a hand closes a drawer slowly\n")
    assert _inputs(spec, FilsConfig.model_validate(tree)) != before
