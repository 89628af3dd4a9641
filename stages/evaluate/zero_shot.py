"""Zero-shot classification in the language space: no training, no labels seen.

Each class is the mean of its prompts' unit text embeddings (CLIP's prompt ensemble; prompts from
``stages.evaluate.prompts``), renormalised; a clip view's score for a class is the softmax over classes of the
cosine with the view's language embedding times the checkpoint's learned logit scale, averaged over the views as
multi-view testing averages classifier probabilities. The scores then go through the same metric code as
classifier predictions (``stages.evaluate.scoring``). EPIC-KITCHENS-100 action scores are the product of the
verb and noun probabilities of the action's verb and noun (the two are scored independently).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fils_model.finetune_config import HeadConfig
from stages.evaluate.feature_bank import Features
from stages.evaluate.metrics import average_views

EncodeTexts = Callable[[Sequence[str]], np.ndarray]  # texts -> (N, dim) unit embeddings


def class_embeddings(encode: EncodeTexts, prompts: list[list[str]]) -> torch.Tensor:
    """``(classes, dim)`` unit vectors: each class's prompt embeddings averaged and renormalised."""
    flat = [p for class_prompts in prompts for p in class_prompts]
    if not flat or any(not class_prompts for class_prompts in prompts):
        raise ValueError("every class needs at least one prompt")
    embedded = torch.from_numpy(np.asarray(encode(flat), dtype=np.float32))
    embedded = torch.nn.functional.normalize(embedded, dim=-1)
    bounds = np.cumsum([0] + [len(p) for p in prompts])
    means = torch.stack([embedded[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
    return torch.nn.functional.normalize(means, dim=-1)


def class_probabilities(language: torch.Tensor, classes: torch.Tensor, logit_scale: float,
                        multi_label: bool = False) -> np.ndarray:
    """``(clips, classes)``: per-view softmax of ``logit_scale`` x cosine, averaged over the views; for a
    multi-label task (scored by per-class AP, which ranks clips), the cosine itself, averaged over the views: a
    softmax across classes would make a clip's score for one class depend on its others.

    ``language`` is ``(clips, views, dim)`` unit vectors, ``classes`` ``(classes, dim)`` unit vectors.
    """
    if language.shape[-1] != classes.shape[-1]:
        raise ValueError(f"the video language embeddings are {language.shape[-1]}-wide but the class embeddings "
                         f"{classes.shape[-1]}-wide: use the text encoder the encoder was pre-trained with "
                         "(captions.text_encoder)")
    cosine = language.float() @ classes.float().t()
    return cosine.mean(1).numpy() if multi_label else average_views((logit_scale * cosine).numpy())


def zero_shot_scores(features: Features, head: HeadConfig, classes: dict[str, torch.Tensor], logit_scale: float,
                     action_verbs: np.ndarray | None = None, action_nouns: np.ndarray | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Scores and targets per head of the clips labelled for ``head``'s task, in the form
    :func:`stages.evaluate.scoring.score` takes. ``classes``: head -> class embeddings; ``verb`` and ``noun``
    for the EK-100 tasks (an ``epic_action`` head also needs the action -> verb / noun map)."""
    index, targets = features.labelled(head)
    if features.language is None:
        raise ValueError("zero-shot needs language embeddings: the checkpoint has no language projector")
    language = features.language[index]
    if head.task in ("epic_action", "epic_verb_noun"):
        verb, noun = (class_probabilities(language, classes[name], logit_scale) for name in ("verb", "noun"))
        if head.task == "epic_verb_noun":
            scores = {"verb": verb, "noun": noun}
        else:
            if action_verbs is None or action_nouns is None:
                raise ValueError("epic_action zero-shot needs the action -> verb/noun map")
            scores = {"action": verb[:, np.asarray(action_verbs)] * noun[:, np.asarray(action_nouns)]}
    else:
        scores = {"label": class_probabilities(language, classes["label"], logit_scale,
                                               head.task == "multi_label")}
    return scores, Features.scoring_targets(targets)
