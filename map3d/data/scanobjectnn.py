"""ScanObjectNN, official h5 release (root = the folder holding `main_split/`, `main_split_nobg/`).

    obj_bg:    main_split/{training,test}_objectdataset.h5
    obj_only:  main_split_nobg/{training,test}_objectdataset.h5
    pb_t50_rs: main_split/{training,test}_objectdataset_augmentedrot_scale75.h5

Keys `data` (N,2048,3) float32, `label` (N,) int and `mask` (N,2048) (-1 = background; not
used). Points are NOT normalized (as the reference); the train split shuffles point order.
Items: `points` (2048,3), `label` int in [0,15). Validation is eager (in memory).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from map3d.data.base import (
    MAX_POINTS,
    MIN_POINTS,
    PointDataset,
    Sample,
    Transform,
    check_label,
    warn_skipped,
)
from map3d.data.errors import DatasetFormatError
from map3d.data.files import require_dir, require_file
from map3d.errors import OptionError

CLASS_NAMES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip
VARIANTS = {
    "obj_bg": ("main_split", ""),
    "obj_only": ("main_split_nobg", ""),
    "pb_t50_rs": ("main_split", "_augmentedrot_scale75"),
}
SPLIT_PREFIX = {"train": "training", "test": "test"}


def variant_file(root: str | os.PathLike, variant: str, split: str) -> str:
    """Path of the h5 file of `variant` and `split` under `root`."""
    folder, suffix = VARIANTS[variant]
    return os.path.join(root, folder, f"{SPLIT_PREFIX[split]}_objectdataset{suffix}.h5")


# An h5 key may expand (compression) to at most this many times the file's size, + 1 MiB.
MAX_H5_EXPANSION = 64


def read_h5(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read `keys` of an h5 file into memory; unreadable file, missing key, or a key larger
    than MAX_H5_EXPANSION x the file size (checked before reading) -> named error."""
    import h5py

    path = require_file(path, "ScanObjectNN h5 file")
    limit = MAX_H5_EXPANSION * path.stat().st_size + (1 << 20)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise DatasetFormatError(path, f"missing key(s) {missing}; has {sorted(f.keys())}")
            for k in keys:
                size = getattr(f[k], "nbytes", None)
                if size is None or size > limit:
                    raise DatasetFormatError(
                        path, f"key {k!r}: {f[k]!r} would take {size} bytes in memory; "
                        f"refused before reading (limit {MAX_H5_EXPANSION}x the file size)",
                    )  # fmt: skip
            return {k: np.asarray(f[k]) for k in keys}
    except OSError as error:
        raise DatasetFormatError(path, f"unreadable HDF5 (truncated or not h5): {error}") from None


class ScanObjectNN(PointDataset):
    """variant: obj_bg / obj_only (2,309 train / 581 test) or pb_t50_rs (11,416 / 2,882)."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        variant: str = "obj_bg",
        seed: int = 0,
        transforms: Transform | None = None,
        skip_bad: bool = False,
    ):
        super().__init__(seed=seed, transforms=transforms, skip_bad=skip_bad)
        if variant not in VARIANTS:
            raise OptionError(
                f"scanobjectnn: variant must be one of {list(VARIANTS)}, got {variant!r}"
            )
        if split not in SPLIT_PREFIX:
            raise OptionError(
                f"scanobjectnn: split must be one of {list(SPLIT_PREFIX)}, got {split!r}"
            )
        self.root = require_dir(root, "ScanObjectNN (holding main_split/)")
        self.split, self.variant = split, variant
        self.path = variant_file(self.root, variant, split)
        arrays = read_h5(self.path, ("data", "label"))
        data, labels = arrays["data"], arrays["label"]
        if data.ndim != 3 or data.shape[2] != 3 or not np.issubdtype(data.dtype, np.floating):
            raise DatasetFormatError(
                self.path, f"key 'data': expected float (N,P,3), got {data.dtype} {data.shape}"
            )
        if len(data) == 0:
            raise DatasetFormatError(self.path, "key 'data' holds no samples")
        if not MIN_POINTS <= data.shape[1] <= MAX_POINTS:
            raise DatasetFormatError(
                self.path, f"key 'data': {data.shape[1]} points per sample, expected "
                f"{MIN_POINTS} to {MAX_POINTS}",
            )  # fmt: skip
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.shape != (len(data),):
            raise DatasetFormatError(
                self.path, f"key 'label': expected shape ({len(data)},), got {labels.shape}"
            )
        keep, errors = [], []
        finite = np.isfinite(data).all(axis=(1, 2))
        for i in range(len(data)):
            try:
                if not finite[i]:
                    raise DatasetFormatError(
                        self.path, "non-finite coordinate (NaN/inf)", f"key 'data', sample {i}"
                    )
                check_label(labels[i], self.num_classes, self.path, f"key 'label', sample {i}")
            except DatasetFormatError as error:
                if not skip_bad:
                    raise
                errors.append(error)
                continue
            keep.append(i)
        warn_skipped(f"scanobjectnn {self.path}", errors)
        self.points = data[keep].astype(np.float32, copy=False)
        self.labels = labels[keep].astype(np.int64)

    def __len__(self) -> int:
        return len(self.points)

    def load(self, index: int, generator: torch.Generator) -> Sample:
        points = self.points[index]
        if self.split == "train":
            points = points[torch.randperm(len(points), generator=generator).numpy()]
        return {"points": torch.from_numpy(np.array(points)), "label": int(self.labels[index])}
