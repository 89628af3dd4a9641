"""Process-group helpers for ``torchrun`` (NCCL on GPU, gloo on CPU); everything degrades to one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistEnv:
    """Initialise the default process group from the ``torchrun`` environment (no-op without it)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistEnv(rank, world_size, local_rank, dev)


def current_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherLocalGrad(torch.autograd.Function):
    """All-gather whose backward keeps only this rank's slice of the gradient, scaled by the world size.

    Every rank computes the same global loss from the gathered tensor; DDP then *averages* the parameter
    gradients, so scaling the local slice by ``world_size`` yields exactly the single-process gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = current_world()
        ctx.rank, ctx.world, ctx.rows = rank, world, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows] * ctx.world


def gather_with_local_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (identity in a single process)."""
    if current_world()[1] == 1:
        return x
    return _GatherLocalGrad.apply(x)


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Rank means of scalar tensors, for logging: one all-reduce and one device-to-host copy for all of them."""
    if not values:
        return {}
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    if current_world()[1] > 1:
        dist.all_reduce(stacked)
        stacked /= current_world()[1]
    return dict(zip(values, stacked.tolist()))


def barrier() -> None:
    if current_world()[1] > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
