"""Shared fixtures. Prefect reads its settings at import time, so they are set here before anything
imports it: a private PREFECT_HOME, no analytics, no inherited server."""
import csv
import os
import shutil
import signal
import tempfile
import uuid

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="fils-prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.pop("PREFECT_API_URL", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pipeline.samples import SAMPLES_CSV, SampleSettings, write_samples  # noqa: E402
from stages.config import FilsConfig  # noqa: E402
from tests.helpers import REPO, make_config, marked_processes  # noqa: E402

# The longest modules first (measured serially: the end-to-end module ~10 min, the flows ~5 min, ...): `make test`
# hands whole modules to two workers in collection order, so these start at once and the two finish together.
LONGEST_FIRST = ("test_prefect_e2e", "test_flows", "test_demo", "test_flow_gpus", "test_pretrain_stage", "test_prefect_outage", "test_failure_semantics",
                 "test_learning_check", "test_optical_flow", "test_fault_injection", "test_shard_stage", "test_cli")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1] if item.module else "", len(rank)))


@pytest.fixture
def mark(monkeypatch) -> str:
    """A marker in the environment of every process the test starts, to find the survivors of a kill."""
    value = uuid.uuid4().hex
    monkeypatch.setenv("FILS_TEST_MARK", value)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    yield value
    for pid in marked_processes(value):  # never leave a stray process behind, even when a test fails
        os.kill(pid, signal.SIGKILL)


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
