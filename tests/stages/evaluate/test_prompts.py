"""Class prompts for zero-shot evaluation: templates, class-name normalisation, the EPIC class files, prompt files
and the demo dataset's own prompt file."""
import csv
from pathlib import Path

import pytest

from pipeline.samples import CLASS_PROMPTS_CSV, SAMPLES_CSV, SampleSettings, write_samples
from pipeline.samples.captions import PARAPHRASES
from pipeline.samples.synthetic import MOTIONS
from stages.evaluate.prompts import (
    DEFAULT_TEMPLATES,
    TEMPLATES,
    class_phrase,
    class_prompts,
    read_epic_classes,
    read_prompt_file,
)

DEMO = ["left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top", "circle"]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_every_template_formats_once():
    for benchmark, by_head in TEMPLATES.items():
        for head, templates in by_head.items():
            assert len(templates) >= 3, (benchmark, head)
            for template in (*templates, *DEFAULT_TEMPLATES):
                assert template.count("{}") == 1 and "XYZ" in template.format("XYZ"), (benchmark, head, template)
    prompts = class_prompts("kinetics", "label", ["playing guitar"])
    assert prompts == [[t.format("playing guitar") for t in DEFAULT_TEMPLATES]]


@pytest.mark.parametrize(("benchmark", "head", "name", "phrase"), [
    ("ssv2", "label", "Pushing [something] from left to right", "pushing something from left to right"),
    ("ssv2", "label", "Putting [something in it] onto [something]", "putting something in it onto something"),
    ("ssv2", "label", "Pushing something from left to right", "pushing something from left to right"),  # adapter's
    ("epic100", "verb", "turn-on", "turn on"),
    ("epic100", "noun", "board:chopping", "chopping board"),
    ("epic100", "noun", "tap", "tap"),
    ("epic100", "action", "turn-on tap:water", "turn on water tap"),
    ("charades_ego", "label", "Holding some clothes", "holding some clothes"),
    ("charades_ego", "label", "Someone is smiling", "smiling"),
    ("charades_ego", "label", "Working on paper/notebook", "working on paper or notebook"),
    ("egtea", "label", "Put eating_utensil", "put eating utensil"),
    ("demo-motion", "label", "left_to_right", "left to right"),
    ("kinetics", "label", " Playing  guitar ", "Playing guitar"),
])
def test_class_phrase(benchmark, head, name, phrase):
    assert class_phrase(benchmark, head, name) == phrase


def test_ssv2_prompts_keep_the_bracketed_words():
    (prompts,) = class_prompts("ssv2", "label", ["Pushing [something] from left to right"])
    assert prompts[0] == "a video of a person pushing something from left to right."
    assert not any("[" in p or "]" in p or "Pushing" in p for p in prompts)


def test_read_official_epic_class_files(tmp_path):
    verbs = write_csv(tmp_path / "EPIC_100_verb_classes.csv", [
        ["id", "key", "instances", "category"],
        ["0", "take", "['take', 'grab', 'pick-up']", "retrieve"],
        ["2", "turn-on", "['switch-on', 'turn-on']", "access"],
        ["1", "put", "['put-down', 'place']", "leave"],
    ])
    assert read_epic_classes(verbs) == ["take", "put", "turn-on"]
    assert class_prompts("epic100", "verb", read_epic_classes(verbs))[2][2] == "I turn on something in the kitchen."
    nouns = tmp_path / "EPIC_100_noun_classes.csv"  # the official noun file quotes every cell
    nouns.write_text('"id","key","instances","category"\n0,"tap","[\'tap\', \'tap:water\']","appliances"\n'
                     '1,"board:chopping","[\'board:chopping\', \'board\']","utensils"\n')
    assert read_epic_classes(nouns) == ["tap", "board:chopping"]
    assert class_prompts("epic100", "noun", read_epic_classes(nouns))[1][1] == "a video of the chopping board in a kitchen."


@pytest.mark.parametrize(("rows", "message"), [
    ([["id", "verb"], ["0", "take"]], "missing column(s) ['key']"),
    ([["id", "key"], ["0", "take"], ["0", "put"]], "row 2 (line 3), column 'id': expected a class id not already "
                                                   "used (row 1 has it), got '0'"),
    ([["id", "key"], ["0", "take"], ["2", "put"]], "class ids must run 0..2 without gaps; missing 1"),
    ([["id", "key"], ["-1", "take"]], "row 1 (line 2), column 'id': expected a class id >= 0, got '-1'"),
    ([["id", "key"], ["zero", "take"]], "row 1 (line 2), column 'id': expected an integer, got 'zero'"),
    ([["id", "key"], ["0", " "]], "row 1 (line 2), column 'key': expected a non-empty value"),
    ([["id", "key"]], "no classes"),
])
def test_bad_epic_class_files(tmp_path, rows, message):
    path = write_csv(tmp_path / "EPIC_100_verb_classes.csv", rows)
    with pytest.raises(ValueError) as info:
        read_epic_classes(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_prompt_file_replaces_templates_of_the_classes_it_names(tmp_path):
    path = write_csv(tmp_path / "prompts.csv", [
        ["head", "class", "prompt"],
        ["noun", "board:chopping", "a wooden chopping board"],
        ["verb", "take", "hands picking something up"],  # another head of the benchmark: skipped
        ["noun", "0", " water running from a tap "],
        ["noun", "board:chopping", "cutting on a board"],
    ])
    prompts = class_prompts("epic100", "noun", ["tap", "board:chopping", "pan"], path)
    assert prompts == [["water running from a tap"], ["a wooden chopping board", "cutting on a board"],
                       class_prompts("epic100", "noun", ["pan"])[0]]
    assert class_prompts("epic100", "verb", ["take"], path) == [["hands picking something up"]]


def test_prompt_file_names_a_class_without_a_name(tmp_path):
    with pytest.raises(ValueError, match="class 1 of head 'label' .* has no name .* pass a prompt file"):
        class_prompts("egtea", "label", ["Take bowl", ""])
    path = write_csv(tmp_path / "prompts.csv", [["head", "class", "prompt"], ["label", "1", "someone cutting a tomato"]])
    assert class_prompts("egtea", "label", ["Take bowl", ""], path)[1] == ["someone cutting a tomato"]


@pytest.mark.parametrize(("rows", "message"), [
    ([["head", "cls", "prompt"]], "missing column(s) ['class']"),
    ([["head", "class", "prompt"], ["verb", "circle", "a loop"]],
     "row 1 (line 2), column 'head': expected a head of benchmark 'demo-motion': one of label, got 'verb'"),
    ([["head", "class", "prompt"], ["label", "square", "a loop"]],
     "row 1 (line 2), column 'class': expected a class name of head 'label' as the benchmark names it (such as "
     "'left_to_right', 'right_to_left', 'top_to_bottom', 'bottom_to_top', 'circle') or a class index 0..4, got 'square'"),
    ([["head", "class", "prompt"], ["label", "circle", "a loop"], ["label", "5", "a loop"]],
     "row 2 (line 3), column 'class': expected a class index of head 'label' in 0..4, got '5'"),
    ([["head", "class", "prompt"], ["label", "circle", "  "]],
     "row 1 (line 2), column 'prompt': expected a non-empty prompt; write the text describing the class or delete "
     "the row, got '  '"),
])
def test_bad_prompt_files(tmp_path, rows, message):
    path = write_csv(tmp_path / "prompts.csv", rows)
    with pytest.raises(ValueError) as info:
        class_prompts("demo-motion", "label", DEMO, path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_prompt_file_class_name_shared_by_two_classes(tmp_path):
    path = write_csv(tmp_path / "prompts.csv", [["head", "class", "prompt"], ["action", "take plate", "x"]])
    with pytest.raises(ValueError, match=r"column 'class': .*classes 0 or 2 are called so: write 0 or 2"):
        read_prompt_file(path, "epic100", "action", ["take plate", "put plate", "take plate"])


def test_unknown_head():
    with pytest.raises(ValueError, match="benchmark 'ssv2' has no head 'verb'; choose from label"):
        class_prompts("ssv2", "verb", ["Pushing [something]"])


def test_demo_samples_ship_their_class_prompts(tmp_path):
    classes = ("left_to_right", "circle")
    write_samples(tmp_path, SampleSettings(clips_per_class=1, classes=classes, width=16, height=16, frames=2,
                                           real=False))
    assert {p.name for p in tmp_path.iterdir()} == {"synthetic", SAMPLES_CSV, CLASS_PROMPTS_CSV}
    prompts = class_prompts("demo-motion", "label", list(classes), tmp_path / CLASS_PROMPTS_CSV)
    assert prompts == [["an object drifting east", "something drifting east", "a shape drifting east"],
                       ["an object orbiting around in a loop", "something orbiting around in a loop",
                        "a shape orbiting around in a loop"]]
    for motion, texts in zip(classes, prompts):  # the canonical description only, none of the other paraphrases
        assert all(MOTIONS[motion] in t and not any(p in t for p in PARAPHRASES[motion][1:]) for t in texts)
