"""Batch-time point pipeline: subsets shared by the batch, augmentations, seeded on the device."""

import math

import pytest
import torch

from map3d.engine.batching import (
    apply_augments,
    default_point_all,
    fps_points,
    rotate_y,
    scale_shift,
    scale_translate,
    shared_subset,
)


def test_point_all_table():
    assert default_point_all(1024, 8192) == 1200
    assert default_point_all(2048, 2048) == 2048  # capped: FPS only reorders ScanObjectNN
    assert default_point_all(4096, 8192) == 4800
    assert default_point_all(512, 600) == 512


def test_fps_and_shared_subset(generator):
    pts = torch.randn(3, 300, 3, generator=generator)
    pool = fps_points(pts, 200)
    assert pool.shape == (3, 200, 3)
    sub = shared_subset(pool, 128, torch.Generator().manual_seed(1))
    again = shared_subset(pool, 128, torch.Generator().manual_seed(1))
    assert sub.shape == (3, 128, 3) and torch.equal(sub, again)
    # the same indices for every cloud of the batch
    idx = [(pool[0] == p).all(-1).nonzero()[0, 0].item() for p in sub[0]]
    assert torch.equal(pool[1, idx], sub[1])
    assert shared_subset(pool, 200, generator) is pool
    with pytest.raises(ValueError, match="need 300 points"):
        shared_subset(pool, 300, generator)


def test_rotate_y_keeps_y_and_norms(generator):
    pts = torch.randn(4, 50, 3, generator=generator)
    out = rotate_y(pts, torch.Generator().manual_seed(0))
    assert torch.allclose(out[..., 1], pts[..., 1])
    assert torch.allclose(out.norm(dim=-1), pts.norm(dim=-1), atol=1e-5)


def test_rotate_y_matches_reference_convention():
    # pc @ R with R = [[c,0,s],[0,1,0],[-s,0,c]]: the x-axis maps to (c, 0, s), y is untouched.
    points = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    out = rotate_y(points, torch.Generator().manual_seed(0))
    angle = 2 * math.pi * float(torch.rand(1, generator=torch.Generator().manual_seed(0)))
    expected = torch.tensor([[[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0]]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_scale_shift_ranges_and_isotropy(generator):
    for seed in range(20):
        shifted = scale_shift(torch.zeros(8, 4, 3), torch.Generator().manual_seed(seed))
        assert (shifted.abs() <= 0.1 + 1e-6).all()
    pts = torch.randn(8, 16, 3, generator=generator)
    g = torch.Generator().manual_seed(3)
    out = scale_shift(pts, g)
    centred_in, centred_out = pts - pts.mean(1, keepdim=True), out - out.mean(1, keepdim=True)
    ratio = centred_out.norm(dim=-1) / centred_in.norm(dim=-1)  # one scale per cloud, all axes
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
    assert ((ratio >= 0.8 - 1e-4) & (ratio <= 1.25 + 1e-4)).all()


def test_augments_are_reproducible_from_the_generator(generator):
    pts = torch.randn(2, 256, 3, generator=generator)
    names = ["rotate_y", "scale_translate", "scale_shift"]

    def run(seed):
        return apply_augments(pts, names, torch.Generator().manual_seed(seed))

    assert torch.equal(run(7), run(7)) and not torch.equal(run(7), run(8))


def test_scale_translate_ranges(generator):
    pts = torch.ones(64, 1, 3)
    out = scale_translate(pts, generator)
    assert out.min() >= 2 / 3 - 0.2 - 1e-6 and out.max() <= 1.5 + 0.2 + 1e-6
    assert out.std() > 0.05  # per-sample, per-axis randomness


def test_unknown_augmentation_is_named(generator):
    with pytest.raises(ValueError, match="'flip'"):
        apply_augments(torch.zeros(1, 4, 3), ["flip"], generator)
    assert math.isfinite(apply_augments(torch.ones(1, 4, 3), [], generator).sum().item())
