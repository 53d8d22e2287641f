"""`shape_folder`: your own folder of meshes and point clouds, labelled by subfolder or not.

Layouts (root = the folder you pass; hidden files and folders are ignored):

    root/<class>/.../<shape>.<ext>             labelled; seeded train/test split
    root/{train,test}/<class>/.../<shape>      labelled, your own split
    root/.../<shape>.<ext>                     unlabelled (pretraining); seeded split
    root/{train,test}/.../<shape>               unlabelled, your own split

Formats: see `map3d.data.shapes` (.ply, .obj, .off, .stl, .pcd, .xyz, .txt, .npy, .npz). Files
with other extensions are ignored (counted in the log). `labels`: None = labelled when every
shape sits in a subfolder of the split folder (its first folder is its class, ImageFolder
style), True = require that, False = ignore folders. Classes are the sorted class folders of
both splits, so train and test labels agree. Without `train/` / `test/` folders, a seeded
split (`split_seed`) puts `test_fraction` of each class (of all files when unlabelled) in test;
`split="all"` is every file.

Each file becomes `points_per_shape` points (meshes sampled area-weighted on their surface,
larger clouds subsampled, smaller ones padded with repeats; seeded), stored as a `.npy` in a
versioned cache (`cache_dir`, default `root/.map3d_cache`). The cache entry is keyed on the
file's absolute path, size and modification time (ns), the sampling parameters and the cache
version, so an edited file is read again; later epochs and runs read the arrays. All files of
the split are prepared when the dataset is built and every bad file is logged by name; then the
first one raises `DatasetFormatError` naming it (with the count of the others), or with
`skip_bad=True` they are left out.

Items, as the benchmark loaders do: `npoints=None` keeps all stored points, unit-sphere
normalized, order shuffled for train (ModelNet40: the batch-time FPS picks `data.npoints`);
`npoints=n` draws n points (`sampling`: "random" without replacement as ShapeNet-55, or "fps")
and then normalizes. Keys: `points` (N,3) float32 (then 3 normal columns with `normals`, 3
colour columns in [0, 1] with `colors`; the engine's tasks use xyz only), `path` (relative to
root), `label` int when labelled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from map3d.atomic import atomic_write
from map3d.data.base import PointDataset, Sample, Transform, pc_normalize
from map3d.data.errors import DatasetFormatError
from map3d.data.files import require_dir
from map3d.data.shapes import is_shape_file, read_points
from map3d.errors import OptionError

log = logging.getLogger(__name__)

# 2: meshes are sampled by the synthetic shapes' sampler (shapes.sample_surface), so their
# points differ from version 1's for the same seed.
CACHE_VERSION = 2
CACHE_DIRNAME = ".map3d_cache"
SPLITS = ("train", "test", "all")
SAMPLINGS = ("random", "fps")


def find_shapes(folder: Path) -> list[Path]:
    """Supported shape files under `folder`, recursively, sorted; hidden entries skipped."""
    found, other = [], Counter()
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            path = Path(directory) / name
            if is_shape_file(path):
                found.append(path)
            else:
                other[path.suffix.lower() or name] += 1
    if other:
        log.info(
            "%s: ignored %d file(s) of other types (%s)",
            folder,
            sum(other.values()),
            ", ".join(f"{k}: {v}" for k, v in sorted(other.items())),
        )
    return sorted(found)


def cache_key(path: Path, **params) -> str:
    """Hex digest of (absolute path, size, mtime_ns, `params`, cache version)."""
    stat = path.stat()
    fields = [
        str(path.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        sorted(params.items()),
        CACHE_VERSION,
    ]
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:32]


class ShapeFolder(PointDataset):
    """A folder of shape files (see the module docstring); `class_names`, `num_classes` when
    labelled (`num_classes` is None otherwise)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        labels: bool | None = None,
        npoints: int | None = None,
        points_per_shape: int = 8192,
        sampling: str = "random",
        normals: bool = False,
        colors: bool = False,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        transforms: Transform | None = None,
        skip_bad: bool = False,
    ):
        super().__init__(seed=seed, transforms=transforms, skip_bad=skip_bad)
        if split not in SPLITS:
            raise OptionError(f"shape_folder: split must be one of {SPLITS}, got {split!r}")
        if sampling not in SAMPLINGS:
            raise OptionError(
                f"shape_folder: sampling must be one of {SAMPLINGS}, got {sampling!r}"
            )
        if npoints is not None and not 0 < npoints <= points_per_shape:
            raise OptionError(
                f"shape_folder: need 0 < npoints <= points_per_shape, got {npoints}, "
                f"{points_per_shape}"
            )
        if not 0.0 <= test_fraction < 1.0:
            raise OptionError(f"shape_folder: test_fraction must be in [0, 1), got {test_fraction}")
        self.root = require_dir(root, "shape folder")
        self.split, self.npoints, self.sampling = split, npoints, sampling
        self.points_per_shape, self.normals, self.colors = points_per_shape, normals, colors
        self.cache_dir = None
        if cache:
            base = Path(cache_dir) if cache_dir is not None else self.root / CACHE_DIRNAME
            self.cache_dir = base / f"v{CACHE_VERSION}"

        own_split = any((self.root / s).is_dir() for s in ("train", "test"))
        bases = {s: self.root / s if own_split else self.root for s in ("train", "test")}
        per_split = {"train": [], "test": []}
        for s in per_split if own_split else ("train",):
            if bases[s].is_dir():
                per_split[s] = find_shapes(bases[s])
        every = [(p, bases[s]) for s in per_split for p in per_split[s]]
        if not every:
            raise DatasetFormatError(self.root, "no shape files found (see data/README.md)")
        self.labelled = self._decide_labels(labels, every)
        classes = sorted({p.relative_to(b).parts[0] for p, b in every}) if self.labelled else []
        self.class_names = classes or None
        self.num_classes = len(classes) if self.labelled else None
        label_of = {name: i for i, name in enumerate(classes)}

        def label(path: Path, base: Path) -> int:
            return label_of[path.relative_to(base).parts[0]] if self.labelled else -1

        if own_split:
            chosen = [(p, bases[s]) for s in per_split if split in (s, "all") for p in per_split[s]]
        else:
            files = self._seeded_split(per_split["train"], label, test_fraction, split_seed)
            chosen = [(p, self.root) for p in files]
        entries = [(p, label(p, b)) for p, b in chosen]
        if not entries:
            where = f" (under {self.root / split})" if own_split and split != "all" else ""
            raise DatasetFormatError(self.root, f"no shape files in split {split!r}{where}")
        self.entries = self._prepare(entries)

    def _decide_labels(self, labels: bool | None, every: list[tuple[Path, Path]]) -> bool:
        loose = [p for p, b in every if len(p.relative_to(b).parts) < 2]
        if labels is None:
            return not loose
        if labels and loose:
            raise DatasetFormatError(
                loose[0], "labels=True: shape file is not inside a class folder"
            )
        return bool(labels)

    def _seeded_split(self, files: list[Path], label, fraction: float, seed: int) -> list[Path]:
        if self.split == "all":
            return files
        groups: dict[int, list[Path]] = {}
        for path in files:
            groups.setdefault(label(path, self.root), []).append(path)
        rng = np.random.default_rng(seed)
        chosen = []
        for key in sorted(groups):
            group = groups[key]
            n_test = min(round(len(group) * fraction), len(group) - 1)
            test = set(rng.permutation(len(group))[:n_test].tolist())
            chosen += [p for i, p in enumerate(group) if (i in test) == (self.split == "test")]
        return sorted(chosen)

    # -- cache -------------------------------------------------------------------------------
    def _params(self) -> dict:
        """Keyword arguments of `read_points` besides the point count."""
        return {"normals": self.normals, "colors": self.colors, "seed": self.seed}

    def read(self, path: Path) -> np.ndarray:
        """The stored (points_per_shape, 3|6) float32 points of `path`, from the cache if fresh."""
        if self.cache_dir is None:
            return read_points(path, self.points_per_shape, **self._params())
        key = cache_key(path, num_points=self.points_per_shape, **self._params())
        entry = self.cache_dir / f"{key}.npy"
        if entry.is_file():
            try:
                return np.load(entry, allow_pickle=False)
            except (ValueError, OSError, EOFError):
                log.warning("shape_folder: rebuilding damaged cache entry %s", entry)
        points = read_points(path, self.points_per_shape, **self._params())
        try:
            with atomic_write(entry) as f:
                np.save(f, points)
        except OSError as error:
            log.warning("shape_folder: cannot write cache %s (%s); caching off", entry, error)
            self.cache_dir = None
        return points

    def _prepare(self, entries: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
        """Read (or fetch from the cache) every file once. Every bad file is logged by name;
        then, without `skip_bad`, the first one is raised (with the count of the others)."""
        good, errors = [], []
        step = max(1, len(entries) // 10)
        for i, (path, label) in enumerate(entries, 1):
            try:
                self.read(path)
            except DatasetFormatError as error:
                errors.append(error)
                log.warning(
                    "shape_folder: %s %s", "skipped" if self.skip_bad else "bad file:", error
                )
                continue
            good.append((path, label))
            if len(entries) >= 100 and i % step == 0:
                log.info("shape_folder %s: prepared %d/%d shapes", self.split, i, len(entries))
        if errors and not self.skip_bad:
            first = errors[0]
            more = f" (and {len(errors) - 1} more bad file(s), logged)" if len(errors) > 1 else ""
            raise DatasetFormatError(first.path, first.problem + more, first.where)
        if errors:
            log.warning(
                "shape_folder %s: skip_bad: left out %d bad file(s) of %d",
                self.split,
                len(errors),
                len(entries),
            )
        if not good:
            raise DatasetFormatError(self.root, f"every shape file of split {self.split!r} is bad")
        return good

    # -- items -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int, generator: torch.Generator) -> Sample:
        path, label = self.entries[index]
        points = self.read(path)
        if self.npoints is None:
            if self.split == "train":
                points = points[torch.randperm(len(points), generator=generator).numpy()]
        elif self.sampling == "random":
            keep = torch.randperm(len(points), generator=generator)[: self.npoints]
            points = points[keep.numpy()]
        else:
            from map3d.ops import fps

            xyz = torch.from_numpy(np.ascontiguousarray(points[None, :, :3]))
            idx = fps(xyz, self.npoints, random_start=True, generator=generator)[0]
            points = points[idx.numpy()]
        sample: Sample = {
            "points": torch.from_numpy(pc_normalize(points, path)),
            "path": path.relative_to(self.root).as_posix(),
        }
        if self.labelled:
            sample["label"] = label
        return sample
