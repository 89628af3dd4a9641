"""Shared fixtures. Prefect reads its settings at import time, so they are set here before anything
imports it: a private PREFECT_HOME, no analytics, no inherited server."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="fils-prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.pop("PREFECT_API_URL", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from pipeline.samples import SAMPLES_CSV, SampleSettings, write_samples  # noqa: E402
from stages.config import FilsConfig, load_config  # noqa: E402

# The longest modules first (measured serially: the end-to-end module ~10 min, the flows ~5 min, ...): `make test`
# hands whole modules to two workers in collection order, so these start at once and the two finish together.
LONGEST_FIRST = ("test_prefect_e2e", "test_flows", "test_pretrain_stage", "test_prefect_outage", "test_failure_semantics",
                 "test_learning_check", "test_optical_flow", "test_fault_injection", "test_shard_stage", "test_cli")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__ if item.module else "", len(rank)))


def make_config(workdir: Path, samples: Path, overrides: list[str] | None = None, **sections: Any) -> FilsConfig:
    """A config over a `fils samples` folder, fast settings for tests; ``sections`` replace whole sections."""
    tree: dict[str, Any] = {
        "workdir": str(workdir),
        "data": {"source": {"kind": "csv", "root": str(samples), "annotations": str(samples / SAMPLES_CSV)}},
        "runtime": {"workers": 2, "progress": False},
        "shard": {"short_side": 96, "window_s": 3.0},
    }
    tree.update(sections)
    return load_config(tree=tree, overrides=overrides)


def marked_processes(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"FILS_TEST_MARK={mark}".encode() in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until_gone(mark: str, seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


@pytest.fixture
def mark(monkeypatch) -> str:
    """A marker in the environment of every process the test starts, to find the survivors of a kill."""
    value = uuid.uuid4().hex
    monkeypatch.setenv("FILS_TEST_MARK", value)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    yield value
    for pid in marked_processes(value):  # never leave a stray process behind, even when a test fails
        os.kill(pid, signal.SIGKILL)


def hold_stage_lock(workdir: Path, stage: str) -> subprocess.Popen:
    """Another process holding ``stage``'s lock, as a running `fils run` does; returns once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pathlib import Path\nfrom pipeline.locks import stage_locks\n"
        "with stage_locks(Path(sys.argv[1]), sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(600)\n"),
        str(workdir), stage], stdout=subprocess.PIPE, text=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert holder.stdout.readline().strip() == "held"
    return holder


def reseal(workdir: Path, stage: str) -> None:
    """Rewrite a committed output's marker to match its files as they are now: as if the stage had written the
    bytes a test put there (an upstream with undecodable clips, say), so they are not detected as damage."""
    from pipeline.artifacts import SUCCESS_FILE, OutputFile, SuccessRecord
    from pipeline.fingerprint import sha256_file

    root = workdir / stage
    record = SuccessRecord.model_validate_json((root / SUCCESS_FILE).read_text())
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != SUCCESS_FILE)
    record.outputs = [OutputFile(path=str(p.relative_to(root)), size=p.stat().st_size, sha256=sha256_file(p))
                      for p in files]
    (root / SUCCESS_FILE).write_text(record.model_dump_json())


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset: 2 generated clips for each of 5 motions, plus the 3 real clips."""
    out = tmp_path_factory.mktemp("samples")
    write_samples(out, SampleSettings(clips_per_class=2, frames=24))
    return out


@pytest.fixture(scope="session")
def few_samples(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path) -> Path:
    """Three generated clips of ``samples_dir``, as a dataset of their own: for tests in which every unit fails or
    times out, where more videos would only add worker restarts."""
    out = tmp_path_factory.mktemp("few-samples")
    with open(samples_dir / SAMPLES_CSV, newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row["path"].startswith("synthetic/")][:3]
    for row in rows:
        (out / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(samples_dir / row["path"], out / row["path"])
    with open(out / SAMPLES_CSV, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.fixture(scope="session")
def sharded(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path) -> FilsConfig:
    """A workdir whose shard stage has run over ``samples_dir`` (read-only for tests: copy it to modify)."""
    from pipeline.runner import run_pipeline
    from stages import registry

    cfg = make_config(tmp_path_factory.mktemp("work"), samples_dir)
    run_pipeline(registry(), cfg, ["shard"])
    return cfg


@pytest.fixture(scope="session")
def prefect_backend():
    """One temporary Prefect server (SQLite) for every in-process flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
