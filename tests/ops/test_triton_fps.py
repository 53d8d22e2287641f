"""Triton farthest point sampling: indices identical to the reference."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _fps():
    pytest.importorskip("triton")
    from map3d.ops.triton import fps

    return fps


@pytest.mark.parametrize(
    "B,N,S,dtype",
    [
        (128, 1024, 64, torch.float32),
        (16, 2048, 128, torch.float32),
        (4, 8192, 512, torch.float32),
        (8, 1000, 100, torch.float32),  # N not a power of two
        (4, 37, 37, torch.float32),  # every point
        (8, 1024, 64, torch.bfloat16),
        (8, 1024, 64, torch.float16),
    ],
)
def test_fps_indices_identical(B, N, S, dtype):
    fps = _fps()
    from map3d.ops.reference.geometry import fps as reference

    g = torch.Generator(device="cuda").manual_seed(N + S)
    points = torch.randn(B, N, 3, device="cuda", generator=g).to(dtype)
    assert torch.equal(fps.fps(points, S), reference(points, S))


def test_fps_random_start_and_duplicates():
    fps = _fps()
    from map3d.ops.reference.geometry import fps as reference

    points = torch.randint(0, 4, (6, 512, 3), device="cuda").float()  # many duplicates / ties
    assert torch.equal(fps.fps(points, 80), reference(points, 80))
    strided = torch.rand(5, 3, 700, device="cuda").transpose(1, 2)  # non-contiguous
    got = fps.fps(strided, 50, random_start=True, generator=torch.Generator().manual_seed(3))
    want = reference(strided, 50, random_start=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, want)
    assert got.dtype == torch.int64
