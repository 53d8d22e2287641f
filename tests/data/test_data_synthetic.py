import time

import pytest
import torch
from torch.utils.data import DataLoader

from map3d.data import SyntheticShapes, build_dataset
from map3d.data.synthetic import SHAPES


def test_items_labels_and_normalization():
    ds = build_dataset("synthetic", split="train", num_samples=30, num_points=256)
    assert len(ds) == 30 and ds.num_classes == len(SHAPES) == 10
    labels = [ds[i]["label"] for i in range(len(ds))]
    assert labels == [i % 10 for i in range(30)]
    points = ds[3]["points"]
    assert points.dtype == torch.float32 and points.shape == (256, 3)
    assert torch.isfinite(points).all()
    assert points.norm(dim=1).max() < 1.1  # unit sphere plus small jitter


def test_deterministic_from_seed_and_split():
    a = SyntheticShapes("train", num_samples=8, num_points=128, seed=1)
    b = SyntheticShapes("train", num_samples=8, num_points=128, seed=1)
    assert torch.equal(a[5]["points"], b[5]["points"])
    assert not torch.equal(
        a[5]["points"], SyntheticShapes("train", num_samples=8, num_points=128, seed=2)[5]["points"]
    )
    assert not torch.equal(
        a[5]["points"], SyntheticShapes("test", num_samples=8, num_points=128, seed=1)[5]["points"]
    )


def test_epoch_changes_transforms_only_and_workers_agree():
    ds = build_dataset(
        "synthetic", split="train", num_samples=8, num_points=128, transforms=["rotate_y"]
    )
    raw = SyntheticShapes("train", num_samples=8, num_points=128)
    first = ds[2]["points"]
    ds.set_epoch(1)
    second = ds[2]["points"]
    assert not torch.equal(first, second)
    assert torch.allclose(first.norm(dim=1), second.norm(dim=1), atol=1e-5)  # same shape, rotated
    assert torch.allclose(raw[2]["points"].norm(dim=1), first.norm(dim=1), atol=1e-5)
    serial = torch.cat([b["points"] for b in DataLoader(ds, batch_size=4)])
    parallel = torch.cat([b["points"] for b in DataLoader(ds, batch_size=4, num_workers=2)])
    assert torch.equal(serial, parallel)


def test_pretrain_form_classes_subset_and_errors():
    ds = build_dataset(
        "synthetic", split="test", task="pretrain", classes=["torus", "helix"], num_samples=4
    )
    assert ds.num_classes == 2 and ds[1]["points"].shape == (1024, 3)
    assert len(build_dataset("synthetic", split="train", task="pretrain")) == 8192
    with pytest.raises(ValueError, match="unknown classes"):
        SyntheticShapes(classes=["teapot"])
    with pytest.raises(ValueError, match="takes no root"):
        build_dataset("synthetic", split="train", root="/data")
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("modelnet41", split="train", root="/data")


def test_generation_is_fast():
    ds = SyntheticShapes("train", num_samples=200, cache=False)
    start = time.perf_counter()
    for i in range(200):
        ds[i]
    assert (time.perf_counter() - start) / 200 < 0.02  # ~0.7 ms idle; generous for loaded CI


def test_cache_returns_the_same_points_as_generation():
    cached = SyntheticShapes("train", num_samples=4, num_points=64)
    fresh = SyntheticShapes("train", num_samples=4, num_points=64, cache=False)
    first = cached[3]["points"]
    first.add_(1.0)  # callers may modify items in place without touching the cache
    assert torch.equal(cached[3]["points"], fresh[3]["points"])
