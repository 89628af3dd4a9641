"""Evaluations in the language space of a checkpoint with a language projector, on its frozen-feature bank:
zero-shot classification (``zero_shot``), clip/caption retrieval against the captions stage's captions of the
split (``retrieval``), and EPIC-KITCHENS-100 multi-instance retrieval from the official files (``epic_mir``).

Text goes through the captions stage's text encoder (``captions.text_encoder``), which must be the one the
checkpoint was pre-trained against: the export records its identity, and a different one is an error, not a
silently meaningless score.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fils_model.finetune_config import HeadConfig
from fils_model.language_head import LanguageHead
from stages.captions.embeddings import load_encoder
from stages.captions.tables import STATUS_OK, read_captions, read_embeddings
from stages.captions.text_encoders import TextEncoder
from stages.config import FilsConfig
from stages.evaluate.config import RetrievalConfig, ZeroShotConfig
from stages.evaluate.epic_mir import epic_mir_metrics, epic_relevancy_from_annotations
from stages.evaluate.epic_mir_files import read_epic_retrieval_sentences, read_epic_retrieval_test
from stages.evaluate.feature_bank import Features
from stages.evaluate.prompts import class_prompts, read_epic_classes
from stages.evaluate.retrieval import grouped_retrieval_metrics
from stages.evaluate.scoring import Scored, score
from stages.evaluate.zero_shot import class_embeddings, zero_shot_scores
from stages.finetune.data import action_map
from stages.shard.adapters.base import safe_key
from stages.shard.tables import class_names

log = logging.getLogger("fils.evaluate")


def text_encoder_for(cfg: FilsConfig, head: LanguageHead) -> TextEncoder:
    """The captions stage's text encoder, checked against the space ``head`` was trained in."""
    if cfg.captions is None:
        raise ValueError("zero-shot and retrieval embed text with captions.text_encoder: add a captions section "
                         "naming the text encoder the checkpoint was pre-trained with")
    te = cfg.captions.text_encoder
    encoder = load_encoder(te.backend, te.model, te.pretrained, te.checkpoint, te.allow_pickle, None)
    trained = head.meta.get("text_encoder_id")
    if trained is not None and trained != encoder.encoder_id:
        raise ValueError(f"the checkpoint was pre-trained against text encoder {trained!r}, but "
                         f"captions.text_encoder is {encoder.encoder_id!r}: set captions.text_encoder to the one "
                         "pre-training used")
    if encoder.dim != head.text_dim:
        raise ValueError(f"captions.text_encoder embeds in {encoder.dim} dimensions, the checkpoint's language "
                         f"projector in {head.text_dim}: set captions.text_encoder to the one pre-training used")
    return encoder


def _head_classes(cfg: ZeroShotConfig, shard_dir: Path, head_cfg: HeadConfig) -> dict[str, list[str]]:
    """Class names of every head zero-shot scores: from clips.parquet, or the official EK-100 class files."""
    if head_cfg.task not in ("epic_action", "epic_verb_noun"):
        names = class_names(shard_dir)
        return {"label": names + [""] * (head_cfg.num_classes - len(names))}
    files = {"verb": cfg.verb_classes, "noun": cfg.noun_classes}
    missing = [name for name, path in files.items() if path is None]
    if missing:
        raise ValueError(f"EK-100 zero-shot needs the class names: set evaluate.zero_shot.{missing[0]}_classes to "
                         f"EPIC_100_{missing[0]}_classes.csv of the official annotations")
    return {name: read_epic_classes(path) for name, path in files.items()}


def zero_shot(cfg: FilsConfig, shard_dir: Path, features: Features, head: LanguageHead, text: TextEncoder,
              head_cfg: HeadConfig, benchmark: str) -> Scored:
    """Zero-shot metrics of the labelled clips of ``features``, through the classifier metric code."""
    zs = cfg.evaluate.zero_shot
    classes = {}
    for name, names in _head_classes(zs, shard_dir, head_cfg).items():
        prompts = class_prompts(benchmark, name, names, zs.prompts)
        classes[name] = class_embeddings(text.encode, prompts)
    verbs = nouns = None
    if head_cfg.task == "epic_action":
        verbs, nouns = action_map(shard_dir, head_cfg.num_classes)
        for name, index in (("verb", verbs), ("noun", nouns)):
            if len(index) and int(np.max(index)) >= len(classes[name]):
                raise ValueError(f"the actions name {name} class {int(np.max(index))}, but the {name} class file "
                                 f"lists {len(classes[name])}: use the class files of the annotations sharded")
    scores, targets = zero_shot_scores(features, head_cfg, classes, head.logit_scale, verbs, nouns)
    return score(head_cfg, scores, targets, verbs, nouns)


def caption_retrieval(features: Features, captions_dir: Path) -> tuple[dict[str, float], int, int]:
    """Recall@1/5/10 and median/mean rank both ways between the clips of ``features`` and their captions (clips
    without an ``ok`` caption are left out; captions repeated word for word are one gallery item, describing every
    clip they caption), the number of clips compared and of distinct captions."""
    captions = read_captions(captions_dir).select(["key", "caption", "status"]).to_pydict()
    text_of = {k: c for k, c, status in zip(captions["key"], captions["caption"], captions["status"])
               if status == STATUS_OK}
    embeddings = read_embeddings(captions_dir).select(["key", "embedding"]).to_pydict()
    embedding_of = dict(zip(embeddings["key"], embeddings["embedding"]))
    rows = [i for i, key in enumerate(features.keys) if key in text_of]
    if len(rows) < 2:
        raise ValueError(f"{len(rows)} clip(s) of the evaluated split have a caption: run the captions stage on the "
                         "split's shards or set evaluate.retrieval.enabled: false")
    first_key: dict[str, str] = {}  # distinct caption -> the first clip it captions (same text, same embedding)
    for i in rows:
        first_key.setdefault(text_of[features.keys[i]], features.keys[i])
    if len(first_key) < 2:
        raise ValueError(f"the {len(rows)} captioned clips of the split share {len(first_key)} caption: retrieval "
                         "needs at least two different captions")
    distinct = {text: n for n, text in enumerate(first_key)}
    text = torch.tensor(np.asarray([embedding_of[key] for key in first_key.values()], dtype=np.float32))
    similarity = features.clip_language()[rows] @ torch.nn.functional.normalize(text, dim=-1).t()
    caption_of_clip = np.array([distinct[text_of[features.keys[i]]] for i in rows])
    return grouped_retrieval_metrics(similarity.numpy(), caption_of_clip), len(rows), len(distinct)


def epic_retrieval(features: Features, text: TextEncoder, cfg: RetrievalConfig) -> tuple[dict[str, float], int, int]:
    """EK-100 multi-instance retrieval (mAP, nDCG both ways) over the test clips present in ``features``, the number
    of those clips and of caption queries."""
    if cfg.epic_sentences is None:
        raise ValueError("evaluate.retrieval.epic_test needs evaluate.retrieval.epic_sentences "
                         "(EPIC_100_retrieval_test_sentence.csv)")
    clips = read_epic_retrieval_test(cfg.epic_test)
    sentences = read_epic_retrieval_sentences(cfg.epic_sentences)
    row_of = {key: i for i, key in enumerate(features.keys)}
    present = [c for c in clips if safe_key(c.narration_id) in row_of]
    if not present:
        raise ValueError(f"none of the {len(clips)} clips of {cfg.epic_test} is in the evaluated split (keys are "
                         "narration ids): shard the EK-100 validation videos and evaluate that split")
    if len(present) < len(clips):
        log.warning("EK-100 retrieval on %d of %d test clips (the others were not sharded or not decodable): not "
                    "comparable with the official figure", len(present), len(clips))
    kept = {c.narration_id for c in present}
    queries = [s for s in sentences if s.narration_id in kept]
    video = features.clip_language()[[row_of[safe_key(c.narration_id)] for c in present]]
    captions = torch.from_numpy(text.encode([s.narration for s in queries]))
    relevancy = epic_relevancy_from_annotations(present, queries)
    return epic_mir_metrics((video @ captions.t()).numpy(), relevancy), len(present), len(queries)


@dataclass
class LanguageResult:
    """One language-space evaluation of a checkpoint: its protocol in the results table, metrics, clips scored
    and, for zero-shot, what the metrics were computed from (for bootstrap intervals)."""

    protocol: str
    metrics: dict[str, float]
    clips: int
    captions: int | None = None  # retrieval: distinct captions (the clip-to-caption gallery)
    scored: Scored | None = None


def language_protocols(cfg: FilsConfig, retrieval_captions: bool) -> list[str]:
    """The language-space evaluations the config asks for (``retrieval_captions``: the split's captions exist)."""
    ev = cfg.evaluate
    return [name for name, on in (("zero_shot", ev.zero_shot.enabled),
                                  ("retrieval", ev.retrieval.enabled and retrieval_captions),
                                  ("epic_mir", ev.retrieval.enabled and ev.retrieval.epic_test is not None)) if on]


# What makes one evaluation impossible without stopping the others: a missing class name or file, a text encoder
# that cannot be loaded offline.
NOT_FATAL = (ValueError, FileNotFoundError, OSError)


def language_results(cfg: FilsConfig, shard_dir: Path, captions_dir: Path | None, features: Features,
                     head: LanguageHead, head_cfg: HeadConfig, benchmark: str, protocols: list[str] | None = None
                     ) -> tuple[list[LanguageResult], dict[str, str]]:
    """The language-space evaluations ``protocols`` (default: all the config asks for) of ``features``, and the
    reason of each one that could not run: a skipped one is reported, not fatal."""
    results: list[LanguageResult] = []
    skipped: dict[str, str] = {}
    text: TextEncoder | None = None
    for protocol in protocols if protocols is not None else language_protocols(cfg, captions_dir is not None):
        try:
            if protocol == "retrieval":  # the captions' stored embeddings: no text encoder needed
                if captions_dir is None:
                    raise ValueError("no committed captions stage to compare the clips with")
                results.append(LanguageResult(protocol, *caption_retrieval(features, captions_dir)))
                continue
            text = text if text is not None else text_encoder_for(cfg, head)
            if protocol == "zero_shot":
                scored = zero_shot(cfg, shard_dir, features, head, text, head_cfg, benchmark)
                results.append(LanguageResult(protocol, scored.metrics, len(features.labelled(head_cfg)[0]),
                                              scored=scored))
            else:
                results.append(LanguageResult(protocol, *epic_retrieval(features, text, cfg.evaluate.retrieval)))
        except NOT_FATAL as exc:
            log.warning("%s not scored: %s", protocol, exc)
            skipped[protocol] = f"{type(exc).__name__}: {exc}"
    return results, skipped
