"""The one way a stage starts training: ``python -m <entry> --job JOB`` for one CPU process, ``torchrun``
(``python -m torch.distributed.run``) for several processes or any GPU, always as a supervised child
(``pipeline.child_process``): its output appended to the run's log and forwarded to ours, killed with the stage,
on a stall or past its time limit, so a rerun resumes from the last checkpoint."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.child_process import run_supervised
from pipeline.config.launch import LaunchConfig

REPO = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) holding the entry modules


def nproc_of(launch: LaunchConfig) -> int:
    """Training processes on this node: ``auto`` is one per visible GPU, 1 on CPU."""
    if launch.nproc_per_node != "auto":
        return launch.nproc_per_node
    import torch

    return max(1, torch.cuda.device_count())


def gpus_of(launch: LaunchConfig) -> int:
    """GPUs a training run occupies on this node: one per process when it trains on GPUs, none on CPU."""
    import torch

    return nproc_of(launch) if torch.cuda.is_available() else 0


def launch_command(entry: str, job_path: Path, launch: LaunchConfig) -> list[str]:
    """The command that trains ``job_path`` with the module ``entry``. Without ``torchrun_args`` a torchrun uses a
    standalone rendezvous on a free port, so two runs on one machine never meet."""
    import torch

    args = ["-m", entry, "--job", str(job_path)]
    nproc = nproc_of(launch)
    if nproc == 1 and not torch.cuda.is_available() and not launch.torchrun_args:
        return [sys.executable, *args]
    rendezvous = [] if launch.torchrun_args else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc_per_node={nproc}",
            *launch.torchrun_args, *args]


def run_training(entry: str, job_path: Path, log_path: Path, launch: LaunchConfig) -> None:
    """Train ``job_path`` to completion (``ChildFailed`` otherwise), with ``launch.threads`` CPU threads per
    process."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                        "PYTHONUNBUFFERED": "1"}
    if launch.threads:
        env["OMP_NUM_THREADS"] = str(launch.threads)
    run_supervised(launch_command(entry, job_path, launch), log_path, env=env, cwd=REPO,
                   stall_s=launch.stall_timeout_s, timeout_s=launch.timeout_s)
