"""Loading throughput of every map3d dataset, on fixtures in the real layouts.

    python -m benchmarks.bench_data [--items 64] [--seconds 2]      (from the repository root)

For each loader: samples/s through `DataLoader(dataset)` with default settings (batch_size=1,
num_workers=0) and through `DataLoader(dataset, batch_size=32, num_workers=2)` (persistent workers). Fixture files
have the real per-file sizes (ShapeNet-55 8,192 points per .npy, ModelNet .dat 8,192x6 and .txt
10,000 lines, ScanObjectNN 2,048 points, ShapeNetPart ~2,700 lines per .txt) so per-item costs
are representative; page cache is warm. The fixtures come from
`map3d.data.layouts` (random clouds in each dataset's on-disk layout, data/README.md),
written into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from map3d.data import build_dataset
from map3d.data.layouts import (
    make_modelnet40,
    make_modelnet_fewshot,
    make_scanobjectnn,
    make_shapenet55,
    make_shapenetpart,
)


def configurations(base: Path, items: int):
    per_class = max(1, items // 3)
    yield (
        "shapenet55 (1024 of 8192 pts, .npy)",
        "shapenet55",
        make_shapenet55(base, num_train=items, num_test=1),
        {},
    )
    modelnet = make_modelnet40(base, train_per_class=per_class, txt_points=10000, cache_points=8192)
    yield "modelnet40 (.dat cache, 8192 pts)", "modelnet40", modelnet, {}
    yield "modelnet40 (use_cache=False, .txt)", "modelnet40", modelnet, {"use_cache": False}
    yield (
        "modelnet40_fewshot (.pkl, 8192 pts)",
        "modelnet40_fewshot",
        make_modelnet_fewshot(base, way=5, shot=max(1, items // 5), folds=1, num_points=8192),
        {"shot": max(1, items // 5)},
    )
    yield (
        "scanobjectnn pb_t50_rs (2048 pts, h5)",
        "scanobjectnn",
        make_scanobjectnn(base, variants=("pb_t50_rs",), num_train=items),
        {"variant": "pb_t50_rs"},
    )
    yield (
        "shapenetpart (2048 pts, .txt)",
        "shapenetpart",
        make_shapenetpart(
            base, per_split={"train": max(1, items // 3)}, min_points=2000, max_points=3400
        ),
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
