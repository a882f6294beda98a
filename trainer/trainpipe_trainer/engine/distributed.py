"""Where this process sits in the job: rank, world size, device. The same
loop runs as one process (world size 1) and as a DDP worker."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current_context(use_gpu: bool) -> DistContext:
    """Read the context from an initialised process group (DDP) or assume one
    process. ``use_gpu`` picks CUDA when it is there."""
    rank, world, local = 0, 1, 0
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = rank % max(torch.cuda.device_count(), 1)
    if use_gpu and torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device)


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum ``values`` over all ranks (identity for one process)."""
    if not ctx.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is true on any: ranks must stop at the
    same step or DDP's collectives hang."""
    if not ctx.distributed:
        return flag
    return all_reduce_sum([1.0 if flag else 0.0], ctx)[0] > 0


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sums(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Sum named values over all ranks; a name one rank lacks counts as 0
    there (a rank with no batch this epoch reports no task sums)."""
    if not ctx.distributed:
        return dict(values)
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, sorted(values))
    names = sorted(set().union(*gathered))
    summed = all_reduce_sum([float(values.get(n, 0.0)) for n in names], ctx)
    return dict(zip(names, summed, strict=True))


def all_gather_int(value: int, ctx: DistContext) -> list[int]:
    """``value`` from every rank, in rank order (``[value]`` for one process)."""
    if not ctx.distributed:
        return [int(value)]
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, int(value))
    return [int(v) for v in gathered]
