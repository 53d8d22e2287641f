"""Batch-time point pipeline of the reference runners, vectorized on the device
(docs/protocols.md#batch-time-point-pipeline).

Finetuning: FPS `point_all` points from each cloud, one random `npoints` subset shared by the
whole batch, then augmentations. Evaluation: FPS straight to `npoints`. Votes: fresh random subsets
of the FPS `point_all` set with the vote augmentations. All random draws take a `torch.Generator`
on the points' device; nothing here synchronizes with the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

BatchAugment = Callable[[Tensor, torch.Generator], Tensor]


def default_point_all(npoints: int, available: int) -> int:
    """The runners' FPS pool size: 1200 for 1024, 2400 for 2048, 4800 for 4096, else `npoints`;
    capped at the number of points each cloud has."""
    table = {1024: 1200, 2048: 2400, 4096: 4800}
    return min(table.get(npoints, npoints), available)


def fps_points(points: Tensor, num_samples: int) -> Tensor:
    """points (B,N,3) → (B,num_samples,3) by farthest point sampling (first point starts)."""
    from map3d.ops import fps, gather

    if num_samples > points.shape[1]:
        raise ValueError(
            f"points: cannot FPS {num_samples} points from clouds of {points.shape[1]}"
        )
    if num_samples == points.shape[1]:
        return points
    return gather(points, fps(points, num_samples))


def shared_subset(
    points: Tensor, npoints: int, generator: torch.Generator, *, permute: bool = False
) -> Tensor:
    """points (B,P,3) → (B,npoints,3): one random choice without replacement for the batch.

    When `npoints` equals P the points are returned as they are (a permutation only reorders
    them), unless `permute` (the releases: the model's FPS then starts from another point).
    """
    if npoints > points.shape[1]:
        raise ValueError(f"points: need {npoints} points, clouds have {points.shape[1]}")
    if npoints == points.shape[1] and not permute:
        return points
    idx = torch.randperm(points.shape[1], generator=generator, device=points.device)[:npoints]
    return points[:, idx]


def _uniform(shape, low: float, high: float, ref: Tensor, g: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=g, device=ref.device, dtype=ref.dtype) * (high - low) + low


def scale_translate(points: Tensor, g: torch.Generator) -> Tensor:
    """`PointcloudScaleAndTranslate`: per sample and axis scale U(2/3, 3/2), shift U(-0.2, 0.2)."""
    b = points.shape[0]
    scale = _uniform((b, 1, 3), 2.0 / 3.0, 1.5, points, g)
    shift = _uniform((b, 1, 3), -0.2, 0.2, points, g)
    return points * scale + shift


def scale(points: Tensor, g: torch.Generator) -> Tensor:
    """`PointcloudScale`: per sample and axis scale U(2/3, 3/2)."""
    return points * _uniform((points.shape[0], 1, 3), 2.0 / 3.0, 1.5, points, g)


def scale_shift(points: Tensor, g: torch.Generator) -> Tensor:
    """Part-seg augmentation: isotropic scale U(0.8, 1.25), then shift U(-0.1, 0.1) per axis."""
    b = points.shape[0]
    return points * _uniform((b, 1, 1), 0.8, 1.25, points, g) + _uniform(
        (b, 1, 3), -0.1, 0.1, points, g
    )


def rotate_y(points: Tensor, g: torch.Generator) -> Tensor:
    """`PointcloudRotate`: one angle U(0, 2π) per sample about y; `pc @ R`,
    R = [[c,0,s],[0,1,0],[-s,0,c]]."""
    angle = _uniform((points.shape[0],), 0.0, 2.0 * math.pi, points, g)
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rot = torch.stack(
        [
            torch.stack([c, zero, s], -1),
            torch.stack([zero, one, zero], -1),
            torch.stack([-s, zero, c], -1),
        ],
        dim=1,
    )  # (B,3,3)
    return points @ rot


BATCH_AUGMENTS: dict[str, BatchAugment] = {
    "scale_translate": scale_translate,
    "scale": scale,
    "scale_shift": scale_shift,
    "rotate_y": rotate_y,
}


def apply_augments(points: Tensor, names: Sequence[str], g: torch.Generator) -> Tensor:
    """Apply the named batch augmentations in order to xyz (B,N,3)."""
    unknown = [n for n in names if n not in BATCH_AUGMENTS]
    if unknown:
        raise ValueError(
            f"augmentation {unknown[0]!r} unknown; choose from {', '.join(BATCH_AUGMENTS)}"
        )
    for name in names:
        points = BATCH_AUGMENTS[name](points, g)
    return points
