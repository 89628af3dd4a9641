"""Text prompts per class for zero-shot classification: each class is described by a few prompts whose text
embeddings are averaged into its class embedding (CLIP's prompt ensembles, Radford et al. 2021, section 3.1.4).

The templates below are this project's choice, in that spirit: a few short sentences per benchmark and head, worded
for how the benchmark names its classes (SSv2 and Charades-Ego name actions as gerunds, "pushing something ...";
EPIC-KITCHENS-100 verbs and EGTEA Gaze+ actions are bare verbs, "take", "cut tomato"; EPIC nouns are objects;
the demo's classes are directions). They were not tuned on any evaluation set. A benchmark not listed gets
:data:`DEFAULT_TEMPLATES`.

Class names are normalised before they fill a template (:func:`class_phrase`): underscores become spaces, SSv2's
placeholder brackets go ("[something in it]" -> "something in it"), EPIC verb keys lose their hyphens ("turn-on" ->
"turn on") and noun keys read in English order ("board:chopping" -> "chopping board").

A prompt file (CSV, header ``head,class,prompt``) replaces the templates for the classes it names, with its prompts
used as written; see :func:`read_prompt_file`. The demo dataset ships one (``class_prompts.csv``, written by
``pipeline.samples.write_samples``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.evaluate.csv_rows import CsvRow, csv_records

PROMPT_COLUMNS = ("head", "class", "prompt")
EPIC_CLASS_COLUMNS = ("id", "key")
"""Columns read from ``EPIC_100_verb_classes.csv`` / ``EPIC_100_noun_classes.csv`` (the official files also have
``instances`` and ``category``, which are not needed here)."""

ALL_HEADS = ("label", "verb", "noun", "action")  # every head a classifier has (HeadConfig.outputs)

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "epic100": {
        "verb": ("a first-person video of the action: {}.", "a video of someone's hands as they {} something.",
                 "I {} something in the kitchen."),
        "noun": ("a first-person video of hands using the {}.", "a video of the {} in a kitchen.",
                 "a close-up of the {} in someone's hands."),
        "action": ("a first-person video of the action: {}.", "a video of a person in a kitchen: {}.",
                   "I {} in the kitchen."),
    },
    "ssv2": {"label": ("a video of a person {}.", "a video of someone {}.", "a close-up video of hands {}.")},
    "charades_ego": {"label": ("a first-person video of a person {}.", "a video of someone {} at home.",
                               "a person {} in their home.")},
    "egtea": {"label": ("a first-person video of the action: {}.", "a video of a cook's hands: {}.",
                        "in a kitchen, I {}.")},
    "demo-motion": {"label": ("a video of {} motion.", "an object in {} motion.", "a shape with {} motion.")},
}
"""Benchmark -> head -> templates; ``{}`` is replaced by the class phrase (:func:`class_phrase`)."""

DEFAULT_TEMPLATES = ("a video of {}.", "a video showing {}.", "a clip of {}.")

_LOWER_CASED = ("ssv2", "charades_ego", "egtea")  # sentence-case names ("Holding some clothes") that read mid-sentence


def heads(benchmark: str) -> tuple[str, ...]:
    """The classifier heads ``benchmark`` has; any head for a benchmark not in :data:`TEMPLATES`."""
    return tuple(TEMPLATES[benchmark]) if benchmark in TEMPLATES else ALL_HEADS


def templates(benchmark: str, head: str) -> tuple[str, ...]:
    """The prompt templates of one head of ``benchmark``."""
    return TEMPLATES.get(benchmark, {}).get(head, DEFAULT_TEMPLATES)


def _epic_noun(key: str) -> str:
    """``"board:chopping"`` -> ``"chopping board"``: EPIC noun keys put the head noun first, then its modifiers."""
    return " ".join(reversed(key.split(":")))


def class_phrase(benchmark: str, head: str, name: str) -> str:
    """The class name as it fills a template: see the module docstring for the rules."""
    phrase = name.strip()
    if benchmark == "ssv2":
        phrase = phrase.replace("[", "").replace("]", "")
    if benchmark == "epic100":
        if head == "verb":
            phrase = phrase.replace("-", " ")
        elif head == "noun":
            phrase = _epic_noun(phrase)
        elif head == "action":  # "verb noun" as in clips.parquet's label_name, e.g. "turn-on tap:water"
            verb, _, noun = phrase.partition(" ")
            phrase = f"{verb.replace('-', ' ')} {_epic_noun(noun)}"
    if benchmark in _LOWER_CASED:
        phrase = phrase.lower()
    if benchmark == "charades_ego":
        phrase = phrase.removeprefix("someone is ")  # "Someone is smiling": the templates already name the person
    phrase = phrase.replace("_", " ").replace("/", " or ").replace(",", ", ")
    return " ".join(phrase.split())


def read_epic_classes(path: str | Path) -> list[str]:
    """The class keys of the official ``EPIC_100_verb_classes.csv`` or ``EPIC_100_noun_classes.csv``, by id.

    Needs the columns ``id`` and ``key`` (any order, others ignored); ids must run 0..K-1, each once. Raises
    ``ValueError`` naming the file, and the row and column where one is at fault.
    """
    path = Path(path)
    keys: dict[int, str] = {}
    rows: dict[int, int] = {}
    for row, _ in csv_records(path, EPIC_CLASS_COLUMNS):
        class_id = row.integer("id")
        if class_id < 0:
            raise row.fail("id", "a class id >= 0")
        if class_id in keys:
            raise row.fail("id", f"a class id not already used (row {rows[class_id]} has it)")
        keys[class_id], rows[class_id] = row.text("key").strip(), row.number
    if not keys:
        raise ValueError(f"{path}: no classes; expected one row per class with ids 0..K-1")
    missing = sorted(set(range(max(keys) + 1)) - set(keys))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise ValueError(f"{path}: class ids must run 0..{max(keys)} without gaps; missing {shown} "
                         f"(is this the complete official file?)")
    return [keys[i] for i in range(len(keys))]


def read_prompt_file(path: str | Path, benchmark: str, head: str, class_names: Sequence[str]) -> dict[int, list[str]]:
    """Class index -> the prompts a prompt file gives the classes of ``head``, in file order.

    The file is a CSV with the header ``head,class,prompt``, any number of rows per class. ``head`` is one of the
    benchmark's heads (:func:`heads`; rows of its other heads are skipped); ``class`` is a class name exactly as in
    ``class_names`` or, when no class has that name, an integer index into it. Raises ``ValueError`` naming the file,
    the row and the column on an unknown head, an unknown, ambiguous or out-of-range class, or an empty prompt.
    """
    path = Path(path)
    known_heads = heads(benchmark)
    indices: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        if name:
            indices.setdefault(name, []).append(i)
    prompts: dict[int, list[str]] = {}
    for row, _ in csv_records(path, PROMPT_COLUMNS):
        row_head = (row.record["head"] or "").strip()
        if row_head not in known_heads:
            raise row.fail("head", f"a head of benchmark {benchmark!r}: one of {', '.join(known_heads)}")
        if row_head != head:
            continue
        index = _class_index(row, indices, class_names, head)
        prompt = (row.record["prompt"] or "").strip()
        if not prompt:
            raise row.fail("prompt", "a non-empty prompt; write the text describing the class or delete the row")
        prompts.setdefault(index, []).append(prompt)
    return prompts


def _class_index(row: CsvRow, indices: dict[str, list[int]], class_names: Sequence[str], head: str) -> int:
    """The class a row's ``class`` cell names: a name of one class, else an integer index."""
    name = (row.record["class"] or "").strip()
    if len(indices.get(name, ())) == 1:
        return indices[name][0]
    if name in indices:
        choices = " or ".join(map(str, indices[name]))
        raise row.fail("class", f"a class name only one class of head {head!r} has, or a class index (classes "
                                f"{choices} are called so: write {choices})")
    try:
        index = int(name)
    except ValueError:
        examples = ", ".join(repr(n) for n in [n for n in class_names if n][:5])
        raise row.fail("class", f"a class name of head {head!r} as the benchmark names it (such as {examples}) "
                                f"or a class index 0..{len(class_names) - 1}") from None
    if not 0 <= index < len(class_names):
        raise row.fail("class", f"a class index of head {head!r} in 0..{len(class_names) - 1}")
    return index


def class_prompts(benchmark: str, head: str, class_names: Sequence[str],
                  user_file: str | Path | None = None) -> list[list[str]]:
    """The prompts of every class of ``head``, by class index: the prompt file's prompts for the classes it names,
    the benchmark's templates filled with the class phrase for the others.

    ``benchmark`` is ``finetune.benchmark``; ``class_names`` are the head's class names as the benchmark gives them
    (clips.parquet's ``label_name``, the keys of the EPIC class files). A class without a name and without
    prompts in ``user_file`` raises ``ValueError``.
    """
    if head not in heads(benchmark):
        raise ValueError(f"benchmark {benchmark!r} has no head {head!r}; choose from {', '.join(heads(benchmark))}")
    given = read_prompt_file(user_file, benchmark, head, class_names) if user_file is not None else {}
    out = []
    for index, name in enumerate(class_names):
        if index in given:
            out.append(given[index])
            continue
        phrase = class_phrase(benchmark, head, name)
        if not phrase:
            raise ValueError(f"class {index} of head {head!r} ({benchmark}) has no name to build prompts from: pass "
                             f"a prompt file (CSV with header head,class,prompt) with rows for class {index}")
        out.append([template.format(phrase) for template in templates(benchmark, head)])
    return out
