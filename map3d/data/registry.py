"""`build_dataset(name, *, split, root=None, **options)`: one entry point for every dataset.

Datasets are registered as "module:Class"; the module is imported on first use.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from torch.utils.data import Dataset

from map3d.data.transforms import build_transforms
from map3d.errors import OptionError
from map3d.plugins import load_object

# name -> ("module:Class", whether the dataset reads files under `root`)
DATASETS: dict[str, tuple[str, bool]] = {
    "shapenet55": ("map3d.data.shapenet55:ShapeNet55", True),
    "modelnet40": ("map3d.data.modelnet:ModelNet40", True),
    "modelnet40_fewshot": ("map3d.data.modelnet:ModelNet40FewShot", True),
    "scanobjectnn": ("map3d.data.scanobjectnn:ScanObjectNN", True),
    "shapenetpart": ("map3d.data.shapenetpart:ShapeNetPart", True),
    "shape_folder": ("map3d.data.shape_folder:ShapeFolder", True),
    "synthetic": ("map3d.data.synthetic:SyntheticShapes", False),
    "synthetic_parts": ("map3d.data.synthetic_parts:SyntheticPartsDataset", False),
    "image_folder": ("map3d.data.images:ImageFolderDataset", True),
    "digits": ("map3d.data.images:DigitsDataset", False),
    "skimage_samples": ("map3d.data.images:SkimageSamplesDataset", False),
}


def list_datasets() -> list[str]:
    """Registered dataset names."""
    return list(DATASETS)


def dataset_class(name: str) -> type:
    """The class registered under `name` (imports its module)."""
    if name not in DATASETS:
        raise OptionError(f"unknown dataset {name!r}; known: {list(DATASETS)}")
    return load_object(DATASETS[name][0])


def build_dataset(
    name: str, *, split: str, root: str | os.PathLike | None = None, **options: Any
) -> Dataset:
    """Build dataset `name` for `split`.

    root: the dataset's own top folder (required for file datasets, refused for built-in ones).
    options: forwarded to the dataset class (e.g. `npoints`, `num_category`, `variant`, `way`,
    `seed`, `skip_bad`); `transforms` may be a list of transform names / one-key mappings (see
    `map3d.data.transforms.build_transforms`) or a callable `(sample, generator) -> sample`.
    """
    cls = dataset_class(name)
    reads_files = DATASETS[name][1]
    transforms = options.get("transforms")
    if transforms is not None and not callable(transforms):
        options["transforms"] = build_transforms(transforms)
    if reads_files and root is None:
        raise OptionError(f"dataset {name!r} reads files: pass root=<its top folder>")
    if not reads_files and root is not None:
        raise OptionError(f"dataset {name!r} is built in and takes no root (got {root!r})")
    args = (root,) if reads_files else ()
    try:
        inspect.signature(cls).bind(*args, split=split, **options)
    except TypeError as err:
        raise OptionError(f"dataset {name!r}: {err} (data.options)") from None
    return cls(*args, split=split, **options)
