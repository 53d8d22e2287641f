"""Fixtures shared by the viz tests: a torus point cloud and a fake `Reconstruction`."""

from types import SimpleNamespace

import numpy as np
import pytest


def torus(num_points: int = 1024, seed: int = 0) -> np.ndarray:
    """(N,3) float32 points on a torus lying in the xz-plane."""
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0, 2 * np.pi, size=(2, num_points))
    ring = 0.6 + 0.2 * np.cos(v)
    return np.stack([ring * np.cos(u), 0.2 * np.sin(v), ring * np.sin(u)], 1).astype(np.float32)


def fake_reconstruction(batch: int = 1, groups: int = 16, group_size: int = 8, seed: int = 0):
    """An object with the fields of `map3d.models.points.Reconstruction`, as numpy arrays."""
    rng = np.random.default_rng(seed)
    gt, masks = [], []
    for b in range(batch):
        points = torus(512, seed=seed + b)
        centers = points[rng.choice(len(points), groups, replace=False)]
        nearest = np.argsort(((centers[:, None] - points[None]) ** 2).sum(-1), axis=1)
        gt.append(points[nearest[:, :group_size]])
        mask = np.zeros(groups, bool)
        mask[rng.choice(groups, groups * 5 // 8, replace=False)] = True
        masks.append(mask)
    gt, mask = np.stack(gt), np.stack(masks)
    pred = gt + rng.normal(0, 0.02, gt.shape).astype(np.float32) * mask[..., None, None]
    return SimpleNamespace(
        centers=gt.mean(axis=2), mask=mask, gt_patches=gt, pred_patches=pred,
        chamfer=rng.uniform(0.001, 0.01, batch),
    )  # fmt: skip


@pytest.fixture
def make_reconstruction():
    return fake_reconstruction


@pytest.fixture
def torus_points():
    return torus()
