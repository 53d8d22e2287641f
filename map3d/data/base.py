"""What every map3d point dataset shares: seeded per-item randomness, transforms, bad-sample policy.

Randomness. Every random choice a dataset makes for item `index` (point subsampling, point-order
shuffling, transforms) draws from one `torch.Generator` seeded from `(seed, epoch, index)` through
`numpy.random.SeedSequence`. The sample therefore depends only on those three numbers: not on the
number of DataLoader workers, on which worker serves the item, nor on what was loaded before, so a
run resumed at epoch `e` sees exactly the samples an uninterrupted run would have seen. Call
`set_epoch(epoch)` at the start of every epoch (as with `DistributedSampler.set_epoch`) to draw
fresh randomness. DataLoader workers hold their own copies of the dataset, which a `set_epoch` in
the main process no longer reaches once they run: a sampler that feeds workers across epochs
passes `EpochIndex`es instead, indices that carry their epoch (`__getitem__` switches to it).

Bad samples. By default a damaged or missing sample raises `DatasetFormatError` /
`FileNotFoundError` naming the file. With `skip_bad=True`, in-memory datasets drop bad samples at
construction with one warning that counts them; per-file datasets substitute the next good item
at `__getitem__` time (the length cannot change once a DataLoader holds it) and warn with a
running count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from map3d.data.errors import DatasetFormatError

log = logging.getLogger(__name__)

Sample = dict[str, Any]
Transform = Callable[[Sample, torch.Generator], Sample]


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from `(seed, epoch, index)`; independent streams for distinct triples."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


MIN_POINTS = 16  # fewest points a cloud may have (a 1-point shape is not a shape)
MAX_POINTS = 1 << 20  # most points one cloud may have (the datasets hold 2,048 to 10,000)


def pc_normalize(points: np.ndarray, path="points", where=None) -> np.ndarray:
    """Centre xyz on their mean and scale to the unit sphere (reference `pc_norm`).

    points (N,C) with xyz in the first 3 columns; returns a float32 copy, other columns
    untouched. Computed in float64, so every finite float32 cloud normalizes (coordinates of
    1e30 do not overflow, 1e-30 do not underflow). A cloud whose points all coincide cannot be
    scaled: `DatasetFormatError` naming `path` / `where`.
    """
    out = np.array(points, dtype=np.float32, copy=True)
    xyz = out[:, :3].astype(np.float64)
    xyz -= xyz.mean(axis=0)
    radius = np.sqrt((xyz**2).sum(axis=1)).max()
    if not radius > 0:
        raise DatasetFormatError(
            path, f"all {len(xyz)} points coincide: cannot scale to the unit sphere", where
        )
    out[:, :3] = xyz / radius
    return out


def check_point_array(
    points: np.ndarray,
    path,
    *,
    where=None,
    columns=(3,),
    min_points: int = MIN_POINTS,
    max_points: int = MAX_POINTS,
) -> np.ndarray:
    """Validate a (N,C) float point array read from `path`; return it as float32.

    Raises `DatasetFormatError` naming `path`/`where` for a wrong rank, column count, dtype,
    fewer than `min_points` or more than `max_points` points, or non-finite values. Every
    loader and `python -m map3d.data.check` validate through this function.
    """
    if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[1] not in columns:
        shape = getattr(points, "shape", type(points).__name__)
        raise DatasetFormatError(
            path, f"expected a (N,{'|'.join(map(str, columns))}) point array, got {shape}", where
        )
    if not np.issubdtype(points.dtype, np.floating):
        raise DatasetFormatError(
            path, f"expected float coordinates, got dtype {points.dtype}", where
        )
    count = points.shape[0]
    if min_points == max_points and count != min_points:
        raise DatasetFormatError(path, f"expected exactly {min_points} points, got {count}", where)
    if count < min_points:
        raise DatasetFormatError(path, f"expected at least {min_points} points, got {count}", where)
    if count > max_points:
        raise DatasetFormatError(path, f"expected at most {max_points} points, got {count}", where)
    points = points.astype(np.float32, copy=False)
    if not np.isfinite(points).all():
        row = int(np.nonzero(~np.isfinite(points).all(axis=1))[0][0])
        raise DatasetFormatError(path, f"non-finite coordinate (NaN/inf) in point row {row}", where)
    return points


def check_label(label, num_classes: int, path, where=None) -> int:
    """Validate one class label (Python/numpy int or a size-1 array) in [0, num_classes)."""
    value = np.asarray(label)
    if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
        raise DatasetFormatError(
            path, f"expected an integer label, got {value.dtype} of shape {value.shape}", where
        )
    value = int(value.reshape(()))
    if not 0 <= value < num_classes:
        raise DatasetFormatError(path, f"label {value} out of range [0, {num_classes})", where)
    return value


class EpochIndex(int):
    """A dataset index that carries the epoch it is drawn for: `EpochIndex(7, epoch=3)` is item 7
    with epoch 3's randomness, whatever epoch the process holding the dataset was last set to."""

    epoch: int

    def __new__(cls, index: int, epoch: int):
        value = super().__new__(cls, index)
        value.epoch = int(epoch)
        return value

    def __reduce__(self):
        return EpochIndex, (int(self), self.epoch)

    def __repr__(self) -> str:
        return f"EpochIndex({int(self)}, epoch={self.epoch})"


class PointDataset(Dataset):
    """Base class: seeded per-item generators, optional transforms, `skip_bad` bookkeeping.

    Subclasses implement `__len__` and `load(index, generator) -> Sample`; `__getitem__` adds the
    transforms. `load` raises `DatasetFormatError`/`OSError` for a bad sample.
    """

    def __init__(self, *, seed: int = 0, transforms: Transform | None = None, skip_bad=False):
        self.seed = int(seed)
        self.epoch = 0
        self.transforms = transforms
        self.skip_bad = bool(skip_bad)
        self._bad: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose randomness `__getitem__` draws (see module docstring)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The generator item `index` draws from in the current epoch."""
        return item_generator(self.seed, self.epoch, index)

    def load(self, index: int, generator: torch.Generator) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if isinstance(index, EpochIndex):
            self.set_epoch(index.epoch)
            index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {len(self)}")
        generator = self.generator(index)
        sample = self._load_or_skip(index, generator)
        if self.transforms is not None:
            sample = self.transforms(sample, generator)
        return sample

    def _load_or_skip(self, index: int, generator: torch.Generator) -> Sample:
        if not self.skip_bad:
            return self.load(index, generator)
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self._bad:
                continue
            try:
                return self.load(candidate, generator)
            except (DatasetFormatError, OSError) as error:
                self._bad.add(candidate)
                log.warning(
                    "skip_bad: skipped a bad sample (%d bad so far in this process): %s",
                    len(self._bad),
                    error,
                )
        raise DatasetFormatError(type(self).__name__, f"all {len(self)} samples are bad")


def warn_skipped(dataset: str, errors: list[Exception]) -> None:
    """Report, once, how many samples an in-memory dataset dropped under `skip_bad=True`."""
    if errors:
        log.warning(
            "%s: skip_bad dropped %d bad sample(s); first: %s", dataset, len(errors), errors[0]
        )
