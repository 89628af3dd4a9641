"""Every adapter on tiny annotation files in the exact official formats."""
import json
from pathlib import Path

import pytest

from stages.shard.adapters import AnnotationError, list_clips
from stages.shard.source_config import SourceConfig


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_labels_from_parent_and_split_folders(tmp_path):
    _touch(tmp_path / "train" / "jump" / "a.mp4")
    _touch(tmp_path / "train" / "run" / "b.MP4")
    _touch(tmp_path / "val" / "run" / "c.mp4")
    _touch(tmp_path / "long.mkv")
    _touch(tmp_path / "notes.txt")
    clips = {c.key: c for c in list_clips(SourceConfig(kind="folder", root=tmp_path)).clips}
    assert set(clips) == {"train_jump_a", "train_run_b", "val_run_c", "long"}
    assert (clips["train_jump_a"].label, clips["train_jump_a"].label_name, clips["train_jump_a"].split) == (0, "jump", "train")
    assert (clips["val_run_c"].label, clips["val_run_c"].split) == (1, "validation")
    assert clips["long"].windowed and clips["long"].label == -1


def test_csv_columns_labels_and_errors(tmp_path):
    _touch(tmp_path / "v" / "a.mp4")
    ann = tmp_path / "list.csv"
    ann.write_text("path,label,start,end,text,split\nv/a.mp4,cut,1.0,2.5,cutting bread,train\n"
                   "v/a.mp4,wash,3,4,,validation\nv/missing.mp4,,,,,\nv/a.mp4,,,,,\n")
    clips = list_clips(SourceConfig(kind="csv", root=tmp_path, annotations=ann)).clips
    assert [c.key for c in clips] == ["v_a_000001000", "v_a_000003000", "v_missing", "v_a"]
    first = clips[0]
    assert (first.start, first.end, first.label_name, first.label, first.narration) == (1.0, 2.5, "cut", 0, "cutting bread")
    assert clips[1].split == "validation" and clips[2].source is None and clips[3].windowed
    ann.write_text("video,label\nv/a.mp4,x\n")
    with pytest.raises(AnnotationError, match="missing column.*path"):
        list_clips(SourceConfig(kind="csv", root=tmp_path, annotations=ann))
    ann.write_text("path,start,end\nv/a.mp4,2,1\n")
    with pytest.raises(AnnotationError, match=r"list.csv:2: end 1.0 must be after start 2.0"):
        list_clips(SourceConfig(kind="csv", root=tmp_path, annotations=ann))


EK_HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
             "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n")


def test_ek100_official_columns_and_action_index(tmp_path):
    _touch(tmp_path / "videos" / "P01" / "videos" / "P01_01.MP4")
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "EPIC_100_train.csv").write_text(
        EK_HEADER
        + "P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,door,8,['door'],[8]\n"
        + "P01_01_1,P01,P01_01,00:00:02.629,00:00:04.00,00:00:06.50,240,390,take cup,take,0,cup,13,['cup'],[13]\n")
    (ann / "EPIC_100_validation.csv").write_text(
        EK_HEADER + "P02_01_0,P02,P02_01,00:00:01.000,00:01:00.00,00:01:02.25,3600,3735,open tap,open,3,tap,5,['tap'],[5]\n")
    clips = {c.key: c for c in list_clips(SourceConfig(kind="ek100", root=tmp_path / "videos", annotations=ann)).clips}
    a, b, v = clips["P01_01_0"], clips["P01_01_1"], clips["P02_01_0"]
    assert (a.start, a.end, a.verb_class, a.noun_class, a.narration, a.split) == (0.14, 3.37, 3, 8, "open door", "train")
    # actions are the sorted (verb, noun) pairs of train + validation: (0,13), (3,5), (3,8)
    assert (b.label, v.label, a.label) == (0, 1, 2)
    assert v.start == 60.0 and v.split == "validation" and v.source is None  # P02_01 is not on disk
    assert a.source == tmp_path / "videos" / "P01" / "videos" / "P01_01.MP4"
    (ann / "EPIC_100_validation.csv").write_text("narration_id,video_id\nx,y\n")
    with pytest.raises(AnnotationError, match="EPIC_100_validation.csv: missing column"):
        list_clips(SourceConfig(kind="ek100", root=tmp_path, annotations=ann))


def test_ssv2_labels_templates_and_ids(tmp_path):
    _touch(tmp_path / "videos" / "78687.webm")
    _touch(tmp_path / "videos" / "42326.webm")
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "labels.json").write_text(json.dumps({"Holding something": "16", "Putting something on a surface": "135"}))
    (ann / "train.json").write_text(json.dumps([{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
                                                 "template": "Holding [something]", "placeholders": ["potato"]}]))
    (ann / "validation.json").write_text(json.dumps([{"id": "42326", "label": "putting a cup on a table",
                                                      "template": "Putting [something] on a surface",
                                                      "placeholders": ["a cup"]}]))
    clips = {c.key: c for c in list_clips(SourceConfig(kind="ssv2", root=tmp_path / "videos", annotations=ann)).clips}
    assert (clips["78687"].label, clips["78687"].split, clips["78687"].label_name) == (16, "train", "Holding something")
    assert clips["78687"].narration == "holding potato next to vicks vaporub bottle"
    assert (clips["42326"].label, clips["42326"].split) == (135, "validation")
    (ann / "validation.json").write_text(json.dumps([{"id": "1", "template": "Juggling [something]"}]))
    with pytest.raises(AnnotationError, match="template 'Juggling something' is not in labels.json"):
        list_clips(SourceConfig(kind="ssv2", root=tmp_path, annotations=ann))


CHARADES_HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length,egocentric,charades_video\n"


def test_charades_ego_segments_and_video_level_test(tmp_path):
    _touch(tmp_path / "v" / "005BU.mp4")
    _touch(tmp_path / "v" / "0BNML.mp4")
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "CharadesEgo_v1_train_only1st.csv").write_text(
        CHARADES_HEADER + '005BU,P1,Kitchen,6,7,Yes,script,cup;table,A person drinks.,"c092 11.90 21.20;c147 0.00 12.60",30.0,Yes,AAA\n')
    (ann / "CharadesEgo_v1_test_only1st.csv").write_text(
        CHARADES_HEADER + '0BNML,P2,Bedroom,6,7,Yes,script,book,Reads.,c001 0.0 5.0;c010 2.0 8.0,10.0,Yes,BBB\n')
    (ann / "Charades_v1_classes.txt").write_text("c092 Drinking from a cup\nc147 Holding some food\n")
    clips = {c.key: c for c in list_clips(SourceConfig(kind="charades_ego", root=tmp_path / "v", annotations=ann)).clips}
    seg = clips["005BU_000"]
    assert (seg.start, seg.end, seg.label, seg.labels, seg.label_name) == (11.9, 21.2, 92, (92, 147), "Drinking from a cup")
    assert clips["005BU_001"].labels == (92, 147)
    test = clips["0BNML"]
    assert (test.split, test.labels, test.end) == ("test", (1, 10), None)
    (ann / "CharadesEgo_v1_test_only1st.csv").write_text(CHARADES_HEADER + "X,,,,,,,,,c999 1 2,,,\n")
    with pytest.raises(AnnotationError, match="outside c000..c156"):
        list_clips(SourceConfig(kind="charades_ego", root=tmp_path, annotations=ann))


def test_egtea_action_index_and_split_lists(tmp_path):
    name = "OP01-R01-PastaSalad-1002316-1004005-F024051-F024101"
    _touch(tmp_path / "cropped_clips" / "OP01-R01-PastaSalad" / f"{name}.mp4")
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "action_idx.txt").write_text("Open fridge 1\nTake bowl 2\n")
    (ann / "train_split1.txt").write_text(f"{name} 2 5 7\n")
    (ann / "test_split1.txt").write_text("P20-R03-BaconAndEggs-1-2-F1-F2 1 1 1\n")
    clips = {c.key: c for c in list_clips(SourceConfig(kind="egtea", root=tmp_path, annotations=ann)).clips}
    clip = clips[name]
    assert (clip.label, clip.label_name, clip.verb_class, clip.noun_class, clip.split) == (1, "Take bowl", 4, 6, "train")
    assert clip.source is not None and clips["P20-R03-BaconAndEggs-1-2-F1-F2"].split == "test"
    (ann / "test_split1.txt").write_text("clip 1 1\n")
    with pytest.raises(AnnotationError, match=r"test_split1.txt:1: expected '<clip name> <action> <verb> <noun>'"):
        list_clips(SourceConfig(kind="egtea", root=tmp_path, annotations=ann))


def test_missing_annotation_file_says_where_and_what(tmp_path):
    with pytest.raises(AnnotationError, match="EPIC_100_train.csv"):
        list_clips(SourceConfig(kind="ek100", root=tmp_path, annotations=tmp_path))


def test_splits_filter(tmp_path):
    _touch(tmp_path / "train" / "a" / "x.mp4")
    _touch(tmp_path / "test" / "a" / "y.mp4")
    clips = list_clips(SourceConfig(kind="folder", root=tmp_path, splits=["test"])).clips
    assert [c.key for c in clips] == ["test_a_y"]


def test_colliding_clip_keys_are_a_clear_error_naming_the_files(tmp_path):
    """``a.mp4`` next to ``a.mkv``, or names that differ only in characters a key cannot hold, would overwrite
    each other in the shards (duplicate tar members, every later stage failing): refused at listing time."""
    for name in ("a.mp4", "a.mkv", "é.mp4", "è.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(AnnotationError, match="2 clip key collision") as info:
        list_clips(SourceConfig(kind="folder", root=tmp_path))
    message = str(info.value)
    assert "'a.mkv' and 'a.mp4'" in message and "rename" in message
    assert "'è.mp4'" in message and "'é.mp4'" in message
