import json
import subprocess
import sys
from pathlib import Path

from pipeline.samples import read_true_boxes
from tests.helpers import REPO


def fils(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_samples_run_status_and_errors(tmp_path):
    out = tmp_path / "samples"
    made = fils("samples", str(out), "--clips-per-class", "1", "--frames", "12", "--pan", "1.5", "--no-real")
    assert made.returncode == 0, made.stderr
    lines = (out / "samples.csv").read_text().splitlines()
    assert lines[0] == "path,label,text,split" and len(lines) == 6
    truth = read_true_boxes(out / "synthetic" / "circle" / "circle_000.mp4")
    assert len(truth["boxes"]) == 12 and truth["caption"].endswith("while the camera pans")
    bad = fils("samples", str(tmp_path / "bad"), "--background-contrast", "2")
    assert bad.returncode == 2 and "background contrast must be in [0, 1], got 2.0" in bad.stderr
    assert not (tmp_path / "bad").exists()  # refused before writing anything

    config = tmp_path / "c.yaml"
    config.write_text(f"workdir: {tmp_path / 'w'}\ndata:\n  source:\n    kind: folder\n    root: {out / 'synthetic'}\n")
    ran = fils("run", "-c", str(config), "--stages", "shard", "--set", "shard.short_side=64")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split()[:2] == ["shard", "ran"] and "clips=5" in ran.stdout
    status = fils("status", "-c", str(config), "--json", "--set", "shard.short_side=64")
    states = {s["stage"]: s for s in json.loads(status.stdout)}
    assert states["shard"]["state"] == "done" and states["shard"]["row_counts"]["clips"] == 5
    stale = fils("status", "-c", str(config))
    assert stale.stdout.startswith("shard") and "stale" in stale.stdout.splitlines()[0]
    assert "(changed: settings shard.short_side)" in stale.stdout

    clips = tmp_path / "w" / "shard" / "clips.parquet"
    original = clips.read_bytes()
    clips.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size, one bit flipped
    assert fils("status", "-c", str(config), "--set", "shard.short_side=64").returncode == 0  # sizes match
    verified = fils("status", "-c", str(config), "--verify", "--set", "shard.short_side=64")
    assert verified.returncode == 1 and "corrupt" in verified.stdout and "clips.parquet: contents changed" in verified.stdout
    clips.write_bytes(original[:100])
    truncated = fils("status", "-c", str(config), "--set", "shard.short_side=64")
    assert truncated.returncode == 1 and "clips.parquet: 100 bytes, committed with" in truncated.stdout
    rebuilt = fils("run", "-c", str(config), "--stages", "shard", "--set", "shard.short_side=64")
    assert rebuilt.returncode == 0 and "committed output is corrupt" in rebuilt.stderr
    assert clips.read_bytes() == original

    bad = fils("run", "-c", str(config), "--set", "shard.crf=99")
    assert bad.returncode == 2 and "`shard.crf`: got 99" in bad.stderr
    unknown = fils("run", "-c", str(config), "--stages", "shard,flow")
    assert unknown.returncode == 2 and "unknown stage(s) flow" in unknown.stderr
    (tmp_path / "a_file").write_text("")
    unwritable = fils("run", "-c", str(config), "--set", f"workdir={tmp_path / 'a_file' / 'work'}")
    assert unwritable.returncode == 2 and "Traceback" not in unwritable.stderr
    assert f"error: Not a directory ({tmp_path / 'a_file' / 'work'}" in unwritable.stderr


def test_config_reference_and_resolved_config_round_trip(tmp_path):
    reference = fils("config", "--reference")
    assert reference.returncode == 0
    lines = reference.stdout.splitlines()
    assert any(line.startswith("shard.short_side (integer) = 320: ") for line in lines)
    assert any(line.startswith("optical_flow.backend (") for line in lines)
    assert any(line.startswith("pretrain.") for line in lines) and any(line.startswith("finetune.") for line in lines)
    resolved = fils("config", "-c", "configs/demo.yaml", "--set", "shard.crf=30")
    assert resolved.returncode == 0, resolved.stderr
    (tmp_path / "resolved.yaml").write_text(resolved.stdout)
    again = fils("config", "-c", str(tmp_path / "resolved.yaml"))
    assert again.stdout == resolved.stdout and "crf: 30" in again.stdout
