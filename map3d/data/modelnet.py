"""ModelNet40 (`modelnet40_normal_resampled`, PointNet++ release) and its few-shot splits.

ModelNet40 layout (root = `modelnet40_normal_resampled/`):

    modelnet40_shape_names.txt           40 class names; label = 0-based line index
    modelnet40_{train,test}.txt          shape ids, e.g. "night_stand_0201"
    <class>/<shape id>.txt               10,000 lines "x,y,z,nx,ny,nz"
    modelnet40_{train,test}_8192pts_fps.dat   pickle cache [list of (8192,6) float32,
                                              list of (1,) int32 labels]

(`num_category=10` reads the `modelnet10_*` files and caches.) With `use_cache=True` (default,
as the reference) the `.dat` cache is read if present, else built once from the `.txt` files by
farthest point sampling (random start) and written atomically next to them (or to `cache_dir`).
The cache is loaded with the restricted unpickler of `map3d.data.safe_pickle`. Items: all
cached points, xyz unit-sphere normalized, normals dropped unless `use_normals`, point order
shuffled for the train split; `label` int. Validation and normalization happen once, eagerly,
at construction (the split is held in memory).
With `use_cache=False` the `.txt` files are read lazily and the first `npoints` rows are kept
(the reference's non-uniform mode).

Few-shot layout (root = `ModelNetFewshot/`): `{way}way{shot}shot/{fold}.pkl` (or
`{way}way_{shot}shot/`, the folder name Point-BERT's code reads), a dict
`{"train": [...], "test": [...]}` of `(points (8192,6), new_label, orig_label)` tuples; the
target is `new_label` in [0, way).
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from map3d.atomic import atomic_write
from map3d.data.base import (
    PointDataset,
    Sample,
    Transform,
    check_label,
    check_point_array,
    pc_normalize,
    warn_skipped,
)
from map3d.data.errors import DatasetFormatError
from map3d.data.files import load_txt, read_lines, read_split_list, require_dir
from map3d.data.safe_pickle import load_pickle
from map3d.errors import OptionError

log = logging.getLogger(__name__)

MODELNET_SPLITS = ("train", "test")
FPS_CHUNK = 32  # clouds per batched FPS call when building the cache


def class_dir(shape_id: str) -> str:
    """'night_stand_0201' -> 'night_stand'."""
    return shape_id.rsplit("_", 1)[0]


def fewshot_split_names(way: int, shot: int) -> tuple[str, str]:
    """The two spellings of a few-shot split folder: `5way10shot` (Point-BERT's docs) and
    `5way_10shot` (the name Point-BERT / Point-MAE / Mamba3D code reads)."""
    return f"{way}way{shot}shot", f"{way}way_{shot}shot"


def find_fewshot_split(root: str | os.PathLike, way: int, shot: int) -> Path | None:
    """The split folder of `way`-way `shot`-shot under `root` in either spelling, or None."""
    for name in fewshot_split_names(way, shot):
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def _normalized(points: np.ndarray, use_normals: bool, path, where=None) -> np.ndarray:
    """(N,6) -> unit-sphere xyz (N,3), or (N,6) with normals kept; a float32 copy."""
    return pc_normalize(points if use_normals else points[:, :3], path, where)


def _item(points: np.ndarray, label: int, *, shuffle: bool, generator) -> Sample:
    order = torch.randperm(len(points), generator=generator).numpy() if shuffle else slice(None)
    return {"points": torch.from_numpy(points[order].copy()), "label": label}


class ModelNet40(PointDataset):
    """ModelNet40/10 classification: 9,843 train / 2,468 test shapes (ModelNet40)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        num_category: int = 40,
        use_normals: bool = False,
        npoints: int = 8192,
        use_cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        transforms: Transform | None = None,
        skip_bad: bool = False,
    ):
        super().__init__(seed=seed, transforms=transforms, skip_bad=skip_bad)
        if split not in MODELNET_SPLITS:
            raise OptionError(f"modelnet40: split must be one of {MODELNET_SPLITS}, got {split!r}")
        if num_category not in (10, 40):
            raise OptionError(f"modelnet40: num_category must be 10 or 40, got {num_category}")
        self.root = require_dir(root, "modelnet40_normal_resampled")
        self.split, self.num_category, self.npoints = split, num_category, npoints
        self.use_normals, self.use_cache = use_normals, use_cache
        prefix = f"modelnet{num_category}"
        names_file = self.root / f"{prefix}_shape_names.txt"
        self.class_names = [line for _, line in read_lines(names_file, "class name list")]
        if len(self.class_names) != num_category:
            raise DatasetFormatError(
                names_file, f"expected {num_category} class names, got {len(self.class_names)}"
            )
        self.num_classes = num_category
        label_of = {name: i for i, name in enumerate(self.class_names)}
        list_file = self.root / f"{prefix}_{split}.txt"
        self.shapes: list[tuple[Path, int]] = []
        for number, shape_id in read_split_list(list_file, "ModelNet split list"):
            if class_dir(shape_id) not in label_of:
                raise DatasetFormatError(
                    list_file,
                    f"shape {shape_id!r}: class {class_dir(shape_id)!r} not in {names_file.name}",
                    f"line {number}",
                )
            path = self.root / class_dir(shape_id) / f"{shape_id}.txt"
            self.shapes.append((path, label_of[class_dir(shape_id)]))
        if use_cache:
            directory = Path(cache_dir) if cache_dir is not None else self.root
            self.cache_path = directory / f"{prefix}_{split}_{npoints}pts_fps.dat"
            if self.cache_path.exists():
                self.points, self.labels = self._read_cache()
            else:
                self.points, self.labels = self._build_cache()
        else:
            missing = [str(path) for path, _ in self.shapes if not path.is_file()]
            if missing and not skip_bad:
                raise FileNotFoundError(
                    f"{len(missing)} listed shape file(s) missing (first: {missing[0]}); "
                    f"listed in {list_file}"
                )
            if missing:
                warn_skipped("modelnet40", [FileNotFoundError(m) for m in missing])
                self.shapes = [(p, label) for p, label in self.shapes if p.is_file()]

    def _read_txt(self, path: Path) -> np.ndarray:
        return check_point_array(load_txt(path, delimiter=",", columns=6), path, columns=(6,))

    def _build_cache(self) -> tuple[list[np.ndarray], list[int]]:
        """Read every listed .txt, FPS `npoints` of each, pickle [points, labels] atomically.

        Under `skip_bad`, bad shapes are left out and the cache is kept in memory only (a
        written cache must match the split list).
        """
        from map3d.ops import fps

        generator = torch.Generator().manual_seed(self.seed)
        clouds, labels, errors = [], [], []
        from map3d.engine.monitor import Progress

        shapes = Progress(self.shapes, desc=f"modelnet40 cache {self.cache_path.name}", unit="file")
        for path, label in shapes:
            try:
                cloud = check_point_array(
                    self._read_txt(path), path, columns=(6,), min_points=self.npoints
                )
                _normalized(cloud, self.use_normals, path)  # refuses coincident points
            except (DatasetFormatError, FileNotFoundError) as error:
                if not self.skip_bad:
                    raise
                errors.append(error)
                continue
            clouds.append(cloud)
            labels.append(np.array([label], dtype=np.int32))
        warn_skipped(f"modelnet40 cache {self.cache_path.name}", errors)
        sampled = []
        for start in range(0, len(clouds), FPS_CHUNK):
            chunk = clouds[start : start + FPS_CHUNK]
            same = len({len(c) for c in chunk}) == 1
            groups = [np.stack(chunk)] if same else [c[None] for c in chunk]
            for group in groups:
                xyz = torch.from_numpy(group[:, :, :3])
                idx = fps(xyz, self.npoints, random_start=True, generator=generator).numpy()
                sampled.extend(np.take_along_axis(group, idx[:, :, None], axis=1))
        if not errors:
            with atomic_write(self.cache_path) as f:
                pickle.dump([sampled, labels], f)
        normalized = [
            _normalized(cloud, self.use_normals, self.cache_path, f"sample {i}")
            for i, cloud in enumerate(sampled)
        ]
        return normalized, [int(label[0]) for label in labels]

    def _read_cache(self) -> tuple[list[np.ndarray], list[int]]:
        path = self.cache_path
        data = load_pickle(path)
        if not (isinstance(data, (list, tuple)) and len(data) == 2):
            raise DatasetFormatError(path, "expected [list_of_points, list_of_labels]")
        points, labels = data
        if not (isinstance(points, list) and isinstance(labels, list)):
            raise DatasetFormatError(path, "expected [list_of_points, list_of_labels] of lists")
        if len(points) != len(self.shapes) or len(labels) != len(self.shapes):
            raise DatasetFormatError(
                path,
                f"holds {len(points)} clouds / {len(labels)} labels; the split list has "
                f"{len(self.shapes)} shapes (stale cache? delete it to rebuild)",
            )
        good_points, good_labels, errors = [], [], []
        for i, label in enumerate(labels):
            cloud, points[i] = points[i], None  # hold one raw cloud at a time
            where = f"sample {i}"
            try:
                # every cached cloud has the cache's point count: items are batched together
                cloud = check_point_array(
                    cloud, path, where=where, columns=(6,),
                    min_points=self.npoints, max_points=self.npoints,
                )  # fmt: skip
                label = check_label(label, self.num_classes, path, where=where)
                cloud = _normalized(cloud, self.use_normals, path, where)
            except DatasetFormatError as error:
                if not self.skip_bad:
                    raise
                errors.append(error)
                continue
            good_points.append(cloud)
            good_labels.append(label)
        warn_skipped(f"modelnet40 {path.name}", errors)
        return good_points, good_labels

    def __len__(self) -> int:
        return len(self.points) if self.use_cache else len(self.shapes)

    def load(self, index: int, generator: torch.Generator) -> Sample:
        if self.use_cache:
            points, label = self.points[index], self.labels[index]
        else:
            path, label = self.shapes[index]
            points = check_point_array(
                self._read_txt(path), path, columns=(6,), min_points=self.npoints
            )
            points = _normalized(points[: self.npoints], self.use_normals, path)
        return _item(points, label, shuffle=self.split == "train", generator=generator)


class ModelNet40FewShot(PointDataset):
    """Point-BERT few-shot splits: `way` classes, `shot` train / 20 test shapes per class.

    `num_classes` is `way` (labels are the remapped `new_label`; the reference keeps a 40-way
    head, which is compatible since every target is < way). `orig_label` keeps the ModelNet id.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        way: int = 5,
        shot: int = 10,
        fold: int = 0,
        use_normals: bool = False,
        seed: int = 0,
        transforms: Transform | None = None,
        skip_bad: bool = False,
    ):
        super().__init__(seed=seed, transforms=transforms, skip_bad=skip_bad)
        if split not in MODELNET_SPLITS:
            raise OptionError(
                f"modelnet40_fewshot: split must be one of {MODELNET_SPLITS}, got {split!r}"
            )
        self.root = require_dir(root, "ModelNetFewshot")
        self.split, self.way, self.shot, self.fold = split, way, shot, fold
        self.use_normals = use_normals
        self.num_classes = way
        folder = find_fewshot_split(self.root, way, shot)
        if folder is None:
            names = fewshot_split_names(way, shot)
            raise FileNotFoundError(
                f"{self.root / names[0]}: {way}way{shot}shot split folder not found (nor "
                f"{names[1]}; see data/README.md)"
            )
        log.info("modelnet40_fewshot: %d-way %d-shot split folder %s", way, shot, folder)
        path = folder / f"{fold}.pkl"
        data = load_pickle(path)
        if not isinstance(data, dict) or split not in data:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise DatasetFormatError(path, f"expected a dict with key {split!r}, got {keys}")
        if not isinstance(data[split], list):
            raise DatasetFormatError(
                path, f"key {split!r}: expected a list of samples, got {type(data[split]).__name__}"
            )
        self.samples: list[tuple[np.ndarray, int, int]] = []
        errors = []
        for i, entry in enumerate(data[split]):
            where = f"key {split!r}, item {i}"
            try:
                if not (isinstance(entry, (tuple, list)) and len(entry) == 3):
                    raise DatasetFormatError(
                        path, "expected (points, new_label, orig_label)", where
                    )
                cloud = check_point_array(entry[0], path, where=where, columns=(3, 6))
                if self.samples and len(cloud) != len(self.samples[0][0]):
                    raise DatasetFormatError(
                        path, f"{len(cloud)} points, the split's first item has "
                        f"{len(self.samples[0][0])} (items are batched together)", where,
                    )  # fmt: skip
                label = check_label(entry[1], way, path, where=where)
                original = check_label(entry[2], 40, path, where=where)
                cloud = _normalized(cloud, use_normals, path, where)
            except DatasetFormatError as error:
                if not skip_bad:
                    raise
                errors.append(error)
                continue
            self.samples.append((cloud, label, original))
        warn_skipped(f"modelnet40_fewshot {path}", errors)
        if not self.samples:
            raise DatasetFormatError(path, f"no usable samples under key {split!r}")
        self.path = path

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int, generator: torch.Generator) -> Sample:
        cloud, label, original = self.samples[index]
        sample = _item(cloud, label, shuffle=self.split == "train", generator=generator)
        sample["orig_label"] = original
        return sample
