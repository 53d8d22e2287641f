"""Tiny random datasets written in each dataset's real on-disk layout (see data/README.md).

What the tests and `benchmarks/bench_data.py` read, and a way to try a loader without the data:
`make_modelnet40(tmp)` then `build_dataset("modelnet40", root=...)`.
Each writes under `root` (created if needed) and returns the dataset's top folder, the path to
pass as `build_dataset(..., root=...)`. Contents are random but deterministic from `seed`.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

SHAPENET55_SYNSETS = ("02691156", "03001627", "04379243")  # airplane, chair, table
# 8 real chair ids carry extra hyphens; this is one of them.
HYPHENATED_CHAIR = "03001627-ub5d972a1-de16-4d0a-aa40-85cd3a69aa8a.npy"

MODELNET40_CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
)  # fmt: skip
MODELNET10_CLASSES = (
    "bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet",
)  # fmt: skip
SHAPENETPART_SYNSETS = (
    ("Airplane", "02691156"), ("Bag", "02773838"), ("Cap", "02954340"), ("Car", "02958343"),
    ("Chair", "03001627"), ("Earphone", "03261776"), ("Guitar", "03467517"), ("Knife", "03624134"),
    ("Lamp", "03636649"), ("Laptop", "03642806"), ("Motorbike", "03790512"), ("Mug", "03797390"),
    ("Pistol", "03948459"), ("Rocket", "04099429"), ("Skateboard", "04225987"), ("Table", "04379243"),
)  # fmt: skip
SHAPENETPART_PARTS = (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3)


def _cloud(rng: np.random.Generator, n: int, columns: int = 3) -> np.ndarray:
    """Off-centre, not unit-scaled xyz (+ unit normals) so normalization is observable."""
    xyz = rng.normal(size=(n, 3)) * [2.0, 1.0, 0.5] + [3.0, -1.0, 0.5]
    if columns == 3:
        return xyz.astype(np.float32)
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return np.concatenate([xyz, normals], axis=1).astype(np.float32)


def make_shapenet55(
    root, *, num_train: int = 6, num_test: int = 3, num_points: int = 8192, seed: int = 0
) -> Path:
    """ShapeNet55-34/{shapenet_pc/*.npy, ShapeNet-55/{train,test}.txt}; one hyphenated chair id
    in train. Returns the ShapeNet55-34 folder."""
    rng = np.random.default_rng(seed)
    top = Path(root) / "ShapeNet55-34"
    (top / "shapenet_pc").mkdir(parents=True, exist_ok=True)
    (top / "ShapeNet-55").mkdir(exist_ok=True)
    for split, count in (("train", num_train), ("test", num_test)):
        names = [
            f"{SHAPENET55_SYNSETS[i % len(SHAPENET55_SYNSETS)]}-{split}{i:04d}{rng.integers(1 << 30):x}.npy"
            for i in range(count)
        ]
        if split == "train" and names:
            names[0] = HYPHENATED_CHAIR
        for name in names:
            np.save(top / "shapenet_pc" / name, _cloud(rng, num_points))
        (top / "ShapeNet-55" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return top


def make_modelnet40(
    root,
    *,
    num_category: int = 40,
    classes: tuple[str, ...] = ("airplane", "night_stand", "flower_pot"),
    train_per_class: int = 2,
    test_per_class: int = 1,
    txt_points: int = 32,
    cache_points: int | None = 8192,
    seed: int = 0,
) -> Path:
    """modelnet40_normal_resampled/ with shape names, split lists, `<class>/<id>.txt` files
    ("x,y,z,nx,ny,nz", `txt_points` lines) and, unless `cache_points` is None, the
    `modelnet{num_category}_{split}_{cache_points}pts_fps.dat` caches ((cache_points,6) float32
    clouds, (1,) int32 labels; random points, not an FPS of the txt). Returns the folder."""
    rng = np.random.default_rng(seed)
    names = MODELNET40_CLASSES if num_category == 40 else MODELNET10_CLASSES
    top = Path(root) / "modelnet40_normal_resampled"
    top.mkdir(parents=True, exist_ok=True)
    prefix = f"modelnet{num_category}"
    (top / f"{prefix}_shape_names.txt").write_text("".join(n + "\n" for n in names))
    number = 1
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        ids, clouds, labels = [], [], []
        for name in classes:
            (top / name).mkdir(exist_ok=True)
            for _ in range(per_class):
                shape_id = f"{name}_{number:04d}"
                number += 1
                np.savetxt(
                    top / name / f"{shape_id}.txt",
                    _cloud(rng, txt_points, 6),
                    fmt="%.6f",
                    delimiter=",",
                )
                ids.append(shape_id)
                if cache_points is not None:
                    clouds.append(_cloud(rng, cache_points, 6))
                    labels.append(np.array([names.index(name)], dtype=np.int32))
        (top / f"{prefix}_{split}.txt").write_text("".join(i + "\n" for i in ids))
        if cache_points is not None:
            with open(top / f"{prefix}_{split}_{cache_points}pts_fps.dat", "wb") as f:
                pickle.dump([clouds, labels], f)
    return top


def make_modelnet_fewshot(
    root,
    *,
    way: int = 5,
    shot: int = 10,
    folds: int = 2,
    test_per_class: int = 2,
    num_points: int = 256,
    seed: int = 0,
) -> Path:
    """ModelNetFewshot/{way}way{shot}shot/{fold}.pkl: {"train": [(points (num_points,6) float32,
    new_label int, orig_label np.int32)], "test": [...]}, shuffled. Returns ModelNetFewshot/."""
    rng = np.random.default_rng(seed)
    top = Path(root) / "ModelNetFewshot"
    folder = top / f"{way}way{shot}shot"
    folder.mkdir(parents=True, exist_ok=True)
    for fold in range(folds):
        chosen = rng.choice(40, way, replace=False)
        data = {}
        for split, per_class in (("train", shot), ("test", test_per_class)):
            items = [
                (_cloud(rng, num_points, 6), new, np.int32(chosen[new]))
                for new in range(way)
                for _ in range(per_class)
            ]
            data[split] = [items[i] for i in rng.permutation(len(items))]
        with open(folder / f"{fold}.pkl", "wb") as f:
            pickle.dump(data, f)
    return top


def make_scanobjectnn(
    root,
    *,
    variants: tuple[str, ...] = ("obj_bg", "obj_only", "pb_t50_rs"),
    num_train: int = 8,
    num_test: int = 4,
    num_points: int = 2048,
    seed: int = 0,
) -> Path:
    """ScanObjectNN/{main_split,main_split_nobg}/*.h5 with keys `data` (N,P,3) float32, `label`
    (N,) int32 and `mask` (N,P) int32 (-1 = background). Returns ScanObjectNN/."""
    import h5py

    rng = np.random.default_rng(seed)
    top = Path(root) / "ScanObjectNN"
    files = {
        "obj_bg": ("main_split", ""),
        "obj_only": ("main_split_nobg", ""),
        "pb_t50_rs": ("main_split", "_augmentedrot_scale75"),
    }
    for variant in variants:
        folder, suffix = files[variant]
        (top / folder).mkdir(parents=True, exist_ok=True)
        for split, count in (("training", num_train), ("test", num_test)):
            with h5py.File(top / folder / f"{split}_objectdataset{suffix}.h5", "w") as f:
                f["data"] = np.stack([_cloud(rng, num_points) for _ in range(count)])
                f["label"] = (np.arange(count) % 15).astype(np.int32)
                mask = rng.integers(0, 15, size=(count, num_points)).astype(np.int32)
                if variant != "obj_only":
                    mask[:, : num_points // 4] = -1
                f["mask"] = mask
    return top


def make_shapenetpart(
    root,
    *,
    categories: tuple[str, ...] = ("Airplane", "Mug", "Table"),
    per_split: dict[str, int] | None = None,
    min_points: int = 150,
    max_points: int = 400,
    seed: int = 0,
) -> Path:
    """shapenetcore_partanno_segmentation_benchmark_v0_normal/ with synsetoffset2category.txt,
    train_test_split/shuffled_{train,val,test}_file_list.json and `<synset>/<id>.txt` files
    ("x y z nx ny nz part", a varying number of lines, global part ids of the category).
    `per_split` is shapes per category and split (default train 2, val 1, test 1)."""
    rng = np.random.default_rng(seed)
    per_split = per_split or {"train": 2, "val": 1, "test": 1}
    top = Path(root) / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    (top / "train_test_split").mkdir(parents=True, exist_ok=True)
    (top / "synsetoffset2category.txt").write_text(
        "".join(f"{name}\t{synset}\n" for name, synset in SHAPENETPART_SYNSETS)
    )
    firsts = np.concatenate([[0], np.cumsum(SHAPENETPART_PARTS)[:-1]])
    lists: dict[str, list[str]] = {split: [] for split in ("train", "val", "test")}
    for name in categories:
        index = [n for n, _ in SHAPENETPART_SYNSETS].index(name)
        synset = SHAPENETPART_SYNSETS[index][1]
        (top / synset).mkdir(exist_ok=True)
        for split, entries in lists.items():
            for _ in range(per_split.get(split, 0)):
                shape_id = f"{rng.integers(1 << 40):010x}"
                n = int(rng.integers(min_points, max_points + 1))
                parts = firsts[index] + rng.integers(0, SHAPENETPART_PARTS[index], size=(n, 1))
                table = np.concatenate([_cloud(rng, n, 6), parts], axis=1)
                np.savetxt(top / synset / f"{shape_id}.txt", table, fmt="%.6f")
                entries.append(f"shape_data/{synset}/{shape_id}")
    for split, entries in lists.items():
        entries = [entries[i] for i in rng.permutation(len(entries))]
        (top / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps(entries)
        )
    return top
