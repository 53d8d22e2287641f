"""Process-group helpers: the same code runs alone or under `torchrun --nproc_per_node=N`."""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from map3d.errors import UserError


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


# A CPU (gloo) group for the small per-step agreements (`max_over_processes`): no GPU sync.
_CPU_GROUP = None
# The collective timeout the group was started with (seconds), for error messages.
_TIMEOUT_S: float | None = None


class DistributedTimeoutError(UserError, RuntimeError):
    """A collective operation waited longer than `train.dist_timeout_s` (or a peer died); the
    message is one line (`map3d` ends with it and exit status 2, not a traceback)."""


def init_distributed(device_kind: str, timeout_s: float | None = None) -> DistInfo:
    """Join the process group torchrun describes (env WORLD_SIZE/RANK/LOCAL_RANK), if any.

    NCCL for CUDA, gloo otherwise, with a collective timeout of `timeout_s` seconds (None:
    PyTorch's default): a process that stops answering ends the others with an error instead
    of a hang. A single process (no WORLD_SIZE, or 1) starts no group. The group is destroyed
    at interpreter exit (`shutdown_distributed`, registered with atexit): a gloo group left
    alive has worker threads that can still hold tensors while the interpreter shuts down,
    which aborts the process ("terminate called without an active exception") after the work
    is done.
    """
    global _CPU_GROUP, _TIMEOUT_S
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local_rank)
        timeout = timedelta(seconds=timeout_s) if timeout_s is not None else None
        dist.init_process_group(backend=backend, timeout=timeout)
        _CPU_GROUP = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
        _TIMEOUT_S = timeout_s
        atexit.register(shutdown_distributed)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def max_over_processes(value: int) -> int:
    """The largest of every process's `value` (a CPU all-reduce; `value` alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    flag = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_CPU_GROUP)
    return int(flag.item())


def is_timeout(err: BaseException) -> bool:
    """Whether `err` is a collective that timed out or lost its peer (gloo and NCCL wording)."""
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        s in text for s in ("timed out", "timeout", "connection closed", "connection reset")
    )


def timeout_error(err: BaseException, rank: int) -> DistributedTimeoutError:
    """A one-line `DistributedTimeoutError` for a timed-out collective `err` on `rank`."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DistributedTimeoutError(
        f"process {rank}: another process stopped answering (no reply within "
        f"train.dist_timeout_s={_TIMEOUT_S} s, or it died); see the other processes' logs "
        f"and resume from the last checkpoint ({first})"
    )


def is_main_process() -> bool:
    """True alone and on global rank 0 (from torchrun's RANK environment variable)."""
    return int(os.environ.get("RANK", "0")) == 0


def shutdown_distributed() -> None:
    """Destroy every process group, if there is one (safe to call twice).

    Objects that still hold a group (a finished run's DistributedDataParallel and its reducer,
    kept alive by reference cycles) are collected first, so that the group itself is freed and
    its gloo threads joined now, not during interpreter teardown.
    """
    global _CPU_GROUP
    _CPU_GROUP = None
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


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


class GradientAverager:
    """What DistributedDataParallel does for one step, in a form a CUDA graph can capture.

    DDP's reducer (autograd hooks, buckets filled during backward) cannot be captured, but
    NCCL collectives on the current stream can. So a CUDA-graph step under torchrun leaves the
    model unwrapped and calls `broadcast_buffers` before its forward (rank 0's BatchNorm
    statistics everywhere, as DDP's `broadcast_buffers=True`) and `average` after its backward:
    one all-reduce of all gradients, flattened per dtype, divided by the process count. The
    all-reduce starts when the backward ends (DDP overlaps it with the backward); on NVLink it is
    a fraction of a millisecond for the paper-size model.
    """

    def __init__(self, model: torch.nn.Module, world_size: int):
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.buffers = [b for b in model.buffers() if b.numel()]
        self.world_size = world_size

    def sync_initial_state(self) -> None:
        """Rank 0's parameters and buffers on every process (DDP does this when it wraps)."""
        with torch.no_grad():
            for _, p in self.named:
                dist.broadcast(p, src=0)
        self.broadcast_buffers()

    def broadcast_buffers(self) -> None:
        for buffer in self.buffers:
            dist.broadcast(buffer, src=0)

    def average(self) -> None:
        missing = [n for n, p in self.named if p.grad is None]
        if missing:
            raise RuntimeError(
                f"parameters without a gradient in this step: {', '.join(missing[:5])}; "
                "every trained parameter must take part in the loss (freeze the others)"
            )
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for _, p in self.named:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat.div_(self.world_size)
            parts = flat.split([g.numel() for g in grads])
            torch._foreach_copy_(grads, [part.view_as(g) for part, g in zip(parts, grads)])
