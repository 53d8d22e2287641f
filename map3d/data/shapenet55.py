"""ShapeNet-55 (Point-BERT / PoinTr "ShapeNet55-34" layout), the pretraining corpus.

    root/shapenet_pc/<synset>-<modelid>.npy   (8192, 3) xyz, not normalized
    root/ShapeNet-55/{train,test}.txt         one file name per line

Item: `npoints` of the first `stored_points` rows drawn without replacement, then unit-sphere
normalized (in that order, as the reference); `taxonomy_id` (synset) and `model_id` strings.
File names may hold extra hyphens (8 chair ids): the synset is the text before the first `-`,
the model id everything after it, and the file is the full line. Validation is lazy (at
`__getitem__`, the set has 52,470 files); that every listed file exists is checked eagerly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from map3d.data.base import PointDataset, Sample, Transform, check_point_array, pc_normalize
from map3d.data.errors import DatasetFormatError
from map3d.data.files import check_unique, load_npy, read_split_list, require_dir
from map3d.errors import OptionError

log = logging.getLogger(__name__)

SPLITS = ("train", "test", "all")


class ShapeNet55(PointDataset):
    """split: "train" (41,952), "test" (10,518) or "all" (test + train, Point-BERT's `whole`)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        npoints: int = 1024,
        stored_points: int = 8192,
        seed: int = 0,
        transforms: Transform | None = None,
        skip_bad: bool = False,
    ):
        super().__init__(seed=seed, transforms=transforms, skip_bad=skip_bad)
        if split not in SPLITS:
            raise OptionError(f"shapenet55: split must be one of {SPLITS}, got {split!r}")
        if not 0 < npoints <= stored_points:
            raise OptionError(
                f"shapenet55: need 0 < npoints <= stored_points, got {npoints}, {stored_points}"
            )
        self.root = require_dir(root, "ShapeNet55-34 dataset root")
        self.pc_dir = require_dir(self.root / "shapenet_pc", "ShapeNet-55 point cloud")
        self.split, self.npoints, self.stored_points = split, npoints, stored_points
        lists = ["test", "train"] if split == "all" else [split]
        entries = []
        for name in lists:
            list_file = self.root / "ShapeNet-55" / f"{name}.txt"
            listed = read_split_list(
                list_file, "ShapeNet-55 split list", allow_empty=len(lists) > 1
            )
            for number, line in listed:
                if "-" not in line or not line.endswith(".npy"):
                    raise DatasetFormatError(
                        list_file,
                        f"expected '<synset>-<modelid>.npy', got {line!r}",
                        f"line {number}",
                    )
                entries.append((list_file, number, line))
        if not entries:
            names = " and ".join(f"{name}.txt" for name in lists)
            raise DatasetFormatError(list_file.parent, f"{names}: no entries for {split!r}")
        check_unique(list_file, [(f"{f.name} line {n}", line) for f, n, line in entries])
        self.files = self._existing(entries)

    def _existing(self, entries: list[tuple[Path, int, str]]) -> list[str]:
        present = set(os.listdir(self.pc_dir))
        missing = [(f, n, line) for f, n, line in entries if line not in present]
        if missing:
            first = "; ".join(f"{f.name} line {n}: {line}" for f, n, line in missing[:3])
            message = f"{len(missing)} listed file(s) missing under {self.pc_dir} (first: {first})"
            if not self.skip_bad:
                raise FileNotFoundError(message)
            log.warning("shapenet55: skip_bad dropped %s", message)
        return [line for _, _, line in entries if line in present]

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, generator: torch.Generator) -> Sample:
        name = self.files[index]
        path = self.pc_dir / name
        points = check_point_array(load_npy(path), path, min_points=self.stored_points)
        keep = torch.randperm(self.stored_points, generator=generator)[: self.npoints].numpy()
        points = pc_normalize(points[keep], path)
        synset, model = name[: -len(".npy")].split("-", 1)
        return {"points": torch.from_numpy(points), "taxonomy_id": synset, "model_id": model}
