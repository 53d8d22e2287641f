"""ShapeNetPart (`shapenetcore_partanno_segmentation_benchmark_v0_normal`), part segmentation.

    synsetoffset2category.txt                     16 lines "Name<TAB>synset"; order = category index
    train_test_split/shuffled_{train,val,test}_file_list.json   ["shape_data/<synset>/<id>", ...]
    <synset>/<id>.txt                             lines "x y z nx ny nz part" (part: global 0..49)

Items: `points` (npoints,3) float32 (xyz unit-sphere normalized over all of the shape's points,
then `npoints` drawn WITH replacement, for every split, as the reference), `category` int in
[0,16) and `seg` (npoints,) int64 global part ids. Order: categories in file
order, then file names sorted, as the reference. Validation is lazy (at `__getitem__`); that
every listed file exists is checked eagerly.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from map3d.data.base import (
    PointDataset,
    Sample,
    Transform,
    check_point_array,
    pc_normalize,
    warn_skipped,
)
from map3d.data.errors import DatasetFormatError
from map3d.data.files import check_unique, load_txt, read_lines, require_dir, require_file
from map3d.errors import OptionError

CATEGORY_NAMES = (
    "Airplane", "Bag", "Cap", "Car", "Chair", "Earphone", "Guitar", "Knife",
    "Lamp", "Laptop", "Motorbike", "Mug", "Pistol", "Rocket", "Skateboard", "Table",
)  # fmt: skip
PARTS_PER_CATEGORY = (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3)
_FIRST_PART = np.concatenate([[0], np.cumsum(PARTS_PER_CATEGORY)[:-1]]).tolist()
# category index -> its global part ids (ShapeNetPart `seg_classes`), e.g. Airplane (0,1,2,3).
CATEGORY_PARTS = tuple(
    tuple(range(first, first + n)) for first, n in zip(_FIRST_PART, PARTS_PER_CATEGORY)
)
NUM_PARTS = 50
SPLITS = {"trainval": ("train", "val"), "train": ("train",), "val": ("val",), "test": ("test",)}


class ShapeNetPart(PointDataset):
    """split: "trainval" (12,137 + 1,870), "train", "val" or "test" (2,874 shapes)."""

    category_names = CATEGORY_NAMES
    category_parts = CATEGORY_PARTS
    num_categories = len(CATEGORY_NAMES)
    num_parts = NUM_PARTS

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        *,
        npoints: int = 2048,
        use_normals: bool = False,
        seed: int = 0,
        transforms: Transform | None = None,
        skip_bad: bool = False,
    ):
        super().__init__(seed=seed, transforms=transforms, skip_bad=skip_bad)
        if split not in SPLITS:
            raise OptionError(f"shapenetpart: split must be one of {list(SPLITS)}, got {split!r}")
        self.root = require_dir(root, "shapenetcore_partanno_segmentation_benchmark_v0_normal")
        self.split, self.npoints, self.use_normals = split, npoints, use_normals
        catfile = self.root / "synsetoffset2category.txt"
        synsets = {}
        for number, line in read_lines(catfile, "category list"):
            fields = line.split()
            if len(fields) != 2 or fields[0] not in CATEGORY_NAMES:
                raise DatasetFormatError(
                    catfile, f"expected '<Category> <synset>' with a ShapeNetPart category, got {line!r}",
                    f"line {number}",
                )  # fmt: skip
            synsets[fields[1]] = CATEGORY_NAMES.index(fields[0])
        wanted: dict[str, set[str]] = {}
        listed: list[tuple[str, str]] = []  # (where, entry) over the split's lists
        for part in SPLITS[split]:
            list_file = self.root / "train_test_split" / f"shuffled_{part}_file_list.json"
            entries = self._read_json(list_file)
            if not entries and len(SPLITS[split]) == 1:
                raise DatasetFormatError(list_file, "empty split list: no entries")
            listed += [(f"{list_file.name} entry {i}", str(e)) for i, e in enumerate(entries)]
            check_unique(list_file, listed)
            for i, entry in enumerate(entries):
                fields = entry.split("/") if isinstance(entry, str) else []
                if len(fields) != 3 or fields[1] not in synsets:
                    raise DatasetFormatError(
                        list_file, f"expected 'shape_data/<synset>/<id>' with a synset of {catfile.name}, "
                        f"got {entry!r}", f"entry {i}",
                    )  # fmt: skip
                wanted.setdefault(fields[1], set()).add(fields[2])
        if not listed:
            names = " and ".join(f"shuffled_{part}_file_list.json" for part in SPLITS[split])
            raise DatasetFormatError(list_file.parent, f"{names}: no entries for {split!r}")
        self.shapes: list[tuple[str, int]] = []
        missing = []
        for synset, category in sorted(synsets.items(), key=lambda item: item[1]):
            if synset not in wanted:
                continue
            folder = self.root / synset
            present = (
                {f[:-4] for f in os.listdir(folder) if f.endswith(".txt")}
                if folder.is_dir()
                else set()
            )
            missing += [str(folder / f"{i}.txt") for i in sorted(wanted[synset] - present)]
            self.shapes += [
                (str(folder / f"{i}.txt"), category) for i in sorted(wanted[synset] & present)
            ]
        if missing:
            message = f"{len(missing)} listed shape file(s) missing (first: {missing[0]})"
            if not skip_bad:
                raise FileNotFoundError(message)
            warn_skipped("shapenetpart", [FileNotFoundError(m) for m in missing])

    @staticmethod
    def _read_json(path) -> list:
        path = require_file(path, "ShapeNetPart split list")
        try:
            entries = json.loads(path.read_text())
        except (ValueError, OSError) as error:
            raise DatasetFormatError(path, f"unreadable JSON split list: {error}") from None
        if not isinstance(entries, list):
            raise DatasetFormatError(path, f"expected a JSON list, got {type(entries).__name__}")
        return entries

    def __len__(self) -> int:
        return len(self.shapes)

    def load(self, index: int, generator: torch.Generator) -> Sample:
        path, category = self.shapes[index]
        data = load_txt(path, delimiter=None, columns=7)
        points = check_point_array(data[:, :6], path, columns=(6,))
        seg = data[:, 6]
        parts = CATEGORY_PARTS[category]
        bad = (seg != np.round(seg)) | (seg < parts[0]) | (seg > parts[-1])
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            raise DatasetFormatError(
                path,
                f"part label {seg[row]:g} not a part of {CATEGORY_NAMES[category]} "
                f"({parts[0]}..{parts[-1]})",
                f"line {row + 1}",
            )
        points = pc_normalize(points if self.use_normals else points[:, :3], path)
        choice = torch.randint(len(points), (self.npoints,), generator=generator).numpy()
        return {
            "points": torch.from_numpy(points[choice]),
            "category": category,
            "seg": torch.from_numpy(seg[choice].astype(np.int64)),
        }
