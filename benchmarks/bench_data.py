"""Loading throughput of every map3d dataset, on fixtures in the real layouts.

    python -m benchmarks.bench_data [--items 64] [--seconds 2]      (from the repository root)

For each loader: samples/s through `DataLoader(dataset)` with default settings (batch_size=1,
num_workers=0) and through `DataLoader(dataset, batch_size=32, num_workers=2)` (persistent workers). Fixture files
have the real per-file sizes (ShapeNet-55 8,192 points per .npy, ModelNet .dat 8,192x6 and .txt
10,000 lines, ScanObjectNN 2,048 points, ShapeNetPart ~2,700 lines per .txt) so per-item costs
are representative; page cache is warm. The fixtures are written by this script (random clouds
in each dataset's on-disk layout, data/README.md), into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader

from map3d.data import build_dataset
from map3d.data.shapenetpart import CATEGORY_NAMES, PARTS_PER_CATEGORY

# --- fixtures: random clouds in each dataset's on-disk layout (data/README.md) ----------------


def _cloud(rng: np.random.Generator, n: int, columns: int = 3) -> np.ndarray:
    """Off-centre xyz (+ unit normals), float32."""
    xyz = rng.normal(size=(n, 3)) * [2.0, 1.0, 0.5] + [3.0, -1.0, 0.5]
    if columns == 3:
        return xyz.astype(np.float32)
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return np.concatenate([xyz, normals], axis=1).astype(np.float32)


def write_shapenet55(base: Path, rng, num_train: int) -> Path:
    """ShapeNet55-34/{shapenet_pc/*.npy (8192,3), ShapeNet-55/{train,test}.txt}; 1 test shape."""
    top = base / "ShapeNet55-34"
    (top / "shapenet_pc").mkdir(parents=True)
    (top / "ShapeNet-55").mkdir()
    for split, count in (("train", num_train), ("test", 1)):
        names = [f"02691156-{split}{i:05d}.npy" for i in range(count)]
        for name in names:
            np.save(top / "shapenet_pc" / name, _cloud(rng, 8192))
        (top / "ShapeNet-55" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return top


def write_modelnet40(base: Path, rng, per_class: int) -> Path:
    """modelnet40_normal_resampled/: 40 class names, split lists, `<class>/<id>.txt` (10,000
    lines "x,y,z,nx,ny,nz") and the 8192-point `.dat` caches; shapes of 3 classes, 1 test each."""
    top = base / "modelnet40_normal_resampled"
    top.mkdir(parents=True)
    names = [f"class{c:02d}" for c in range(40)]
    (top / "modelnet40_shape_names.txt").write_text("".join(n + "\n" for n in names))
    number = 1
    for split, count in (("train", per_class), ("test", 1)):
        ids, clouds, labels = [], [], []
        for label in (0, 15, 23):
            (top / names[label]).mkdir(exist_ok=True)
            for _ in range(count):
                shape_id = f"{names[label]}_{number:04d}"
                number += 1
                np.savetxt(
                    top / names[label] / f"{shape_id}.txt",
                    _cloud(rng, 10000, 6),
                    fmt="%.6f",
                    delimiter=",",
                )
                ids.append(shape_id)
                clouds.append(_cloud(rng, 8192, 6))
                labels.append(np.array([label], dtype=np.int32))
        (top / f"modelnet40_{split}.txt").write_text("".join(i + "\n" for i in ids))
        with open(top / f"modelnet40_{split}_8192pts_fps.dat", "wb") as f:
            pickle.dump([clouds, labels], f)
    return top


def write_modelnet_fewshot(base: Path, rng, way: int, shot: int) -> Path:
    """ModelNetFewshot/{way}way{shot}shot/0.pkl: {"train"/"test": [(points (8192,6),
    new_label, orig_label np.int32)]}; 2 test shapes per class."""
    top = base / "ModelNetFewshot"
    (top / f"{way}way{shot}shot").mkdir(parents=True)
    chosen = rng.choice(40, way, replace=False)
    data = {
        split: [
            (_cloud(rng, 8192, 6), new, np.int32(chosen[new]))
            for new in range(way)
            for _ in range(per_class)
        ]
        for split, per_class in (("train", shot), ("test", 2))
    }
    with open(top / f"{way}way{shot}shot" / "0.pkl", "wb") as f:
        pickle.dump(data, f)
    return top


def write_scanobjectnn(base: Path, rng, num_train: int) -> Path:
    """ScanObjectNN/main_split/{training,test}_objectdataset_augmentedrot_scale75.h5 (pb_t50_rs):
    `data` (N,2048,3) float32, `label` (N,) int32, `mask` (N,2048) int32; 4 test shapes."""
    top = base / "ScanObjectNN"
    (top / "main_split").mkdir(parents=True)
    for split, count in (("training", num_train), ("test", 4)):
        with h5py.File(
            top / "main_split" / f"{split}_objectdataset_augmentedrot_scale75.h5", "w"
        ) as f:
            f["data"] = np.stack([_cloud(rng, 2048) for _ in range(count)])
            f["label"] = (np.arange(count) % 15).astype(np.int32)
            f["mask"] = rng.integers(-1, 15, size=(count, 2048)).astype(np.int32)
    return top


def write_shapenetpart(base: Path, rng, per_category: int) -> Path:
    """shapenetcore_partanno_segmentation_benchmark_v0_normal/: 3 categories, `per_category`
    train shapes each of 2,000-3,400 lines "x y z nx ny nz part"."""
    top = base / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    (top / "train_test_split").mkdir(parents=True)
    chosen = {"Airplane": "02691156", "Mug": "03797390", "Table": "04379243"}
    (top / "synsetoffset2category.txt").write_text(
        "".join(f"{name}\t{synset}\n" for name, synset in chosen.items())
    )
    first_part = np.concatenate([[0], np.cumsum(PARTS_PER_CATEGORY)[:-1]])
    train = []
    for name, synset in chosen.items():
        category = CATEGORY_NAMES.index(name)
        (top / synset).mkdir()
        for i in range(per_category):
            n = int(rng.integers(2000, 3401))
            parts = first_part[category] + rng.integers(0, PARTS_PER_CATEGORY[category], (n, 1))
            np.savetxt(
                top / synset / f"{i:06d}.txt",
                np.concatenate([_cloud(rng, n, 6), parts], axis=1),
                fmt="%.6f",
            )
            train.append(f"shape_data/{synset}/{i:06d}")
    for split, entries in (("train", train), ("val", []), ("test", [])):
        (top / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps(entries)
        )
    return top


# --- benchmark ---------------------------------------------------------------------------------


def configurations(base: Path, items: int):
    rng = np.random.default_rng(0)
    yield (
        "shapenet55 (1024 of 8192 pts, .npy)",
        "shapenet55",
        write_shapenet55(base, rng, num_train=items),
        {},
    )
    modelnet = write_modelnet40(base, rng, per_class=max(1, items // 3))
    yield "modelnet40 (.dat cache, 8192 pts)", "modelnet40", modelnet, {}
    yield "modelnet40 (use_cache=False, .txt)", "modelnet40", modelnet, {"use_cache": False}
    yield (
        "modelnet40_fewshot (.pkl, 8192 pts)",
        "modelnet40_fewshot",
        write_modelnet_fewshot(base, rng, way=5, shot=max(1, items // 5)),
        {"shot": max(1, items // 5)},
    )
    yield (
        "scanobjectnn pb_t50_rs (2048 pts, h5)",
        "scanobjectnn",
        write_scanobjectnn(base, rng, num_train=items),
        {"variant": "pb_t50_rs"},
    )
    yield (
        "shapenetpart (2048 pts, .txt)",
        "shapenetpart",
        write_shapenetpart(base, rng, per_category=max(1, items // 3)),
        {"split": "train"},
    )
    yield (
        "synthetic, generated (cache=False)",
        "synthetic",
        None,
        {"num_samples": items * 4, "cache": False},
    )
    yield (
        "synthetic, cached (epochs after the first)",
        "synthetic",
        None,
        {"num_samples": items * 4},
    )


def throughput(dataset, seconds: float, **loader) -> float:
    """Samples/s over whole epochs of one DataLoader (workers persist, so start-up is paid once)."""
    loader = DataLoader(dataset, persistent_workers=loader.get("num_workers", 0) > 0, **loader)
    next(iter(loader))  # warm-up: worker start-up, first file reads
    count, start = 0, time.perf_counter()
    while True:
        for batch in loader:
            count += len(batch["points"])
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=64, help="items per fixture split")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per measurement")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print("| loader | items | default DataLoader (samples/s) | batch 32, 2 workers (samples/s) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, root, options in configurations(Path(tmp), args.items):
            split = options.pop("split", "train")
            dataset = build_dataset(name, split=split, root=root, **options)
            default = throughput(dataset, args.seconds)
            workers = throughput(dataset, args.seconds, batch_size=32, num_workers=2)
            print(f"| {label} | {len(dataset)} | {default:,.0f} | {workers:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
