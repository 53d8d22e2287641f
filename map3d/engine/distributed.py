"""Process-group helpers: the same code runs alone or under `torchrun --nproc_per_node=N`."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, number of processes, rank on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes (env WORLD_SIZE/RANK/LOCAL_RANK), if any.

    NCCL for CUDA, gloo otherwise. A single process (no WORLD_SIZE, or 1) starts no group.
    The group is destroyed at interpreter exit (`shutdown_distributed`, registered with
    atexit): a gloo group left alive has worker threads that can still hold tensors while the
    interpreter shuts down, which aborts the process ("terminate called without an active
    exception") after the work is done.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        atexit.register(shutdown_distributed)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def is_main_process() -> bool:
    """True alone and on global rank 0 (from torchrun's RANK environment variable)."""
    return int(os.environ.get("RANK", "0")) == 0


def shutdown_distributed() -> None:
    """Destroy the default process group, if there is one (safe to call twice)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` in place over all processes (no-op alone); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s Python object on every process (identity alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
