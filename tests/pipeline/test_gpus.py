"""GPU placement of unit workers on a CPU machine: simulated device lists, real spawned worker processes."""
import os
import tempfile
import threading
import time
from collections import defaultdict

import pytest

from pipeline.config.runtime import RuntimeConfig
from pipeline.gpus import PinnedPools, claim_gpu, resolve_gpus, visible_gpus


def _where(seconds: float) -> tuple[int, str | None]:
    time.sleep(seconds)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"] and resolve_gpus("auto") == ["3", "5"] and resolve_gpus([1]) == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f1e,MIG-2a7c")  # kept as named: an index would be another GPU
    assert visible_gpus() == ["GPU-8f1e", "MIG-2a7c"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_a_gpu_listed_twice_is_a_config_error():
    with pytest.raises(ValueError, match="lists a GPU twice"):
        RuntimeConfig(gpus=[0, 1, 0])


def test_every_worker_sees_one_gpu_and_jobs_spread_over_all_of_them():
    with PinnedPools(["0", "1", "2", "3"], per_gpu=2) as pools:
        futures = [pools.schedule(_where, args=(0.3,), timeout=120) for _ in range(16)]
        seen = [f.result() for f in futures]
    devices_of: dict[int, set[str | None]] = defaultdict(set)
    workers_of: dict[str | None, set[int]] = defaultdict(set)
    for pid, device in seen:
        devices_of[pid].add(device)
        workers_of[device].add(pid)
    assert all(len(devices) == 1 for devices in devices_of.values())  # a worker is pinned to one GPU
    assert set(workers_of) == {"0", "1", "2", "3"}  # every GPU got jobs
    assert all(len(pids) <= 2 for pids in workers_of.values())  # at most workers_per_gpu workers on one GPU


def test_jobs_go_to_the_gpu_that_is_free_not_a_fixed_share():
    """Two GPUs, one worker each: while the first job holds its GPU for 3 s, every other job runs on the other."""
    with PinnedPools(["0", "1"], per_gpu=1) as pools:
        futures = [pools.schedule(_where, args=(3.0 if i == 0 else 0.05,), timeout=120) for i in range(6)]
        seen = [f.result() for f in futures]
    assert {device for _, device in seen[1:]} == {seen[1][1]} != {seen[0][1]}


def test_claimed_gpu_slots_are_exclusive_on_the_node(tmp_path, monkeypatch):
    """A batch's GPU slot (process and Dask runners): two holders get the two GPUs, a third waits for a release."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    got: list[tuple[str, float]] = []

    def third() -> None:
        with claim_gpu(["a", "b"], per_gpu=1, poll_s=0.05) as gpu:
            got.append((gpu, time.monotonic()))

    with claim_gpu(["a", "b"], per_gpu=1) as first, claim_gpu(["a", "b"], per_gpu=1) as second:
        assert {first, second} == {"a", "b"}
        waiter = threading.Thread(target=third)
        waiter.start()
        time.sleep(0.5)
        assert not got  # both slots held: the third waits
        released = time.monotonic()
    waiter.join(10)
    assert got and got[0][1] >= released
