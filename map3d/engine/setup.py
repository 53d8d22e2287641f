"""Run setup shared by training, evaluation, prediction and visualisation: devices and
distributed start, precision and autocast, seeds and the stream ids of a run's generators, the
resumable batch sampler, data loaders and moving batches to the device."""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from map3d.data.base import EpochIndex
from map3d.engine.distributed import DistInfo, init_distributed

if TYPE_CHECKING:
    from map3d.engine.config import ExperimentConfig

# ----------------------------------------------------------------------------- devices, seeds


def resolve_device(name: str, dist: DistInfo | None = None) -> torch.device:
    """`auto` → CUDA if available, else CPU; under torchrun CUDA means `cuda:LOCAL_RANK`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={name!r} but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", dist.local_rank if dist else 0)
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = fp32). `auto`: bf16 on a CUDA device that supports it."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"train.precision: expected auto|fp32|bf16|fp16, got {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast_context(device: torch.device, dtype: torch.dtype | None, *, cache: bool = True):
    """A callable entering autocast to `dtype` on `device` (a no-op context for fp32).
    `cache=False` turns off autocast's weight-cast cache (needed inside a CUDA graph)."""

    def enter():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)

    return enter


@dataclass(frozen=True)
class RunEnv:
    """Where and how a run computes: this process's place among the processes, its device and
    its autocast dtype (None = fp32)."""

    dist: DistInfo
    device: torch.device
    amp_dtype: torch.dtype | None

    def autocast(self, *, cache: bool = True):
        """`autocast_context` for this device and dtype."""
        return autocast_context(self.device, self.amp_dtype, cache=cache)


def start_distributed(cfg: ExperimentConfig) -> DistInfo:
    """Join torchrun's process group (if any) with the backend `train.device` needs."""
    return init_distributed(resolve_device(cfg.train.device).type, cfg.train.dist_timeout_s)


def run_env(cfg: ExperimentConfig, dist: DistInfo) -> RunEnv:
    """`train.device` and `train.precision` resolved for process `dist`."""
    device = resolve_device(cfg.train.device, dist)
    return RunEnv(dist, device, resolve_precision(cfg.train.precision, device))


def start_run(cfg: ExperimentConfig) -> RunEnv:
    """The setup every run command starts with (train, eval): the process group, then this
    process's device and precision."""
    return run_env(cfg, start_distributed(cfg))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed for an independent stream named by integers (seed, rank, stream, ...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


# Stream ids of the generators a run owns.
AUGMENT_STREAM, MODEL_STREAM, LOADER_STREAM = 1, 2, 3


# ----------------------------------------------------------------------------- data


class EpochBatchSampler(Sampler[list[int]]):
    """This process's index batches for one epoch or several in a row, resumable at any batch.

    The epoch's order is a permutation seeded by (seed, epoch) (identity when not shuffling), cut
    into global batches of `global_batch`; process `rank` of `world_size` takes the contiguous
    slice `[rank·B, (rank+1)·B)` of each (B = global_batch / world_size), so one process with
    the same global batch sees exactly the union of what N processes see. `drop_last=False` (for
    evaluation) spreads a short final batch over the ranks without padding or duplicates.

    `set_epoch(epoch, start_batch, epochs=n)` makes one iteration run through n epochs, the
    first from `start_batch`: a DataLoader's workers then keep preparing batches across epoch
    ends instead of restarting. The indices are `EpochIndex`es, so a dataset copy inside a
    worker draws each item with its own epoch's randomness.
    """

    def __init__(
        self,
        size: int,
        global_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
    ):
        if global_batch % world_size:
            raise ValueError(
                f"data.batch_size={global_batch} must be divisible by the {world_size} processes"
            )
        self.size, self.global_batch = size, global_batch
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch, self.start_batch, self.epochs = 0, 0, 1

    def set_epoch(self, epoch: int, start_batch: int = 0, *, epochs: int = 1) -> None:
        """Iterate `epochs` epochs from batch `start_batch` of epoch `epoch`."""
        if epochs < 1:
            raise ValueError(f"epochs: expected >= 1, got {epochs}")
        self.epoch, self.start_batch, self.epochs = epoch, start_batch, epochs

    @property
    def batches_per_epoch(self) -> int:
        if self.drop_last:
            return self.size // self.global_batch
        return math.ceil(self.size / self.global_batch)

    def __len__(self) -> int:
        """Batches one iteration yields (`set_epoch` decides how many)."""
        return self.batches_per_epoch * self.epochs - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        for epoch in range(self.epoch, self.epoch + self.epochs):
            start = self.start_batch if epoch == self.epoch else 0
            yield from self._epoch_batches(epoch, start)

    def _epoch_batches(self, epoch: int, start: int) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per_rank = self.global_batch // self.world_size
        for b in range(start, self.batches_per_epoch):
            chunk = order[b * self.global_batch : (b + 1) * self.global_batch]
            if len(chunk) == self.global_batch:
                mine = chunk[self.rank * per_rank : (self.rank + 1) * per_rank]
            else:
                mine = chunk[self.rank :: self.world_size]
            if mine:
                yield [EpochIndex(i, epoch) for i in mine]


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """`obj` with `fn` applied to each tensor inside its (nested) dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch on `device` (non-blocking)."""
    return map_tensors(batch, lambda t: t.to(device, non_blocking=True))


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker init: SIGTERM and SIGINT (sent to the whole process group by Slurm and
    by Ctrl-C) are left to the main process, which finishes its step, writes a checkpoint and
    then shuts the workers down."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(
    dataset: Dataset, sampler: EpochBatchSampler, cfg: ExperimentConfig, device: torch.device
) -> DataLoader:
    """DataLoader over `sampler`'s batches; its own generator keeps the global RNG untouched."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_stop_signals if cfg.data.num_workers > 0 else None,
        generator=torch.Generator().manual_seed(derive_seed(cfg.train.seed, LOADER_STREAM)),
    )


def set_dataset_epoch(dataset: Dataset, epoch: int) -> None:
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def eval_loader(
    dataset: Dataset, cfg: ExperimentConfig, dist: DistInfo, device: torch.device
) -> DataLoader:
    """In-order loader over `dataset` for evaluation: batches of `data.eval_batch_size` (else
    `data.batch_size`) rounded down to a multiple of the process count, none dropped."""
    batch = cfg.data.eval_batch_size or cfg.data.batch_size
    batch = max(dist.world_size, batch - batch % dist.world_size)
    sampler = EpochBatchSampler(
        len(dataset),
        batch,
        rank=dist.rank,
        world_size=dist.world_size,
        shuffle=False,
        drop_last=False,
        seed=cfg.train.seed,
    )
    return make_loader(dataset, sampler, cfg, device)
