"""GPU placement of unit workers on a CPU machine: simulated device lists, real spawned worker processes."""
import os
import time
from collections import defaultdict

from pipeline.gpus import PinnedPools, resolve_gpus, visible_gpus


def _where(seconds: float) -> tuple[int, str | None]:
    time.sleep(seconds)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == [3, 5] and resolve_gpus("auto") == [3, 5] and resolve_gpus([1]) == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_every_worker_sees_one_gpu_and_jobs_spread_over_all_of_them():
    with PinnedPools([0, 1, 2, 3], per_gpu=2) as pools:
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
