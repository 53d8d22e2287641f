"""Per-sample point-cloud transforms, seeded, named in configs.

Each transform is a callable `(sample, generator) -> sample` where `sample` is a dataset item dict
(`points` float32 (N,C) tensor, xyz in the first 3 columns, optional per-point `seg` (N,)) or a
bare (N,C) points tensor; the generator is the item's `torch.Generator` (see `map3d.data.base`),
so a transform's draws are reproducible from (seed, epoch, index).

Names (reference behaviour in brackets; docs/protocols.md#augmentations):
- `scale_translate`: per-axis scale ~ U(2/3, 3/2), then per-axis shift ~ U(-0.2, 0.2)
  [Point-MAE `PointcloudScaleAndTranslate`, applied per sample here instead of per batch].
- `rotate_y`: one angle ~ U(0, 2π) about the up (y) axis, `pc @ R` with
  R = [[c,0,s],[0,1,0],[-s,0,c]] [`PointcloudRotate`]; normals (columns 3:6) rotate too.
- `scale_shift`: isotropic scale ~ U(0.8, 1.25), per-axis shift ~ U(-0.1, 0.1)
  [part segmentation `random_scale_point_cloud` + `shift_point_cloud`].
- `subsample`: `num_points` random points without replacement (per-point keys follow).
- `normalize`: centre on the mean, scale to the unit sphere [`pc_norm`].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from map3d.data.base import Sample
from map3d.errors import OptionError

PER_POINT_KEYS = ("points", "seg")


def _points(sample) -> torch.Tensor:
    return sample["points"] if isinstance(sample, dict) else sample


def _with_points(sample, points: torch.Tensor):
    if isinstance(sample, dict):
        return {**sample, "points": points}
    return points


def _uniform(low: float, high: float, shape, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


class ScaleTranslate:
    """xyz * U(scale_low, scale_high) per axis + U(-translate, translate) per axis."""

    def __init__(self, scale_low=2.0 / 3.0, scale_high=3.0 / 2.0, translate=0.2):
        self.scale_low, self.scale_high, self.translate = scale_low, scale_high, translate

    def __call__(self, sample, generator: torch.Generator):
        points = _points(sample).clone()
        scale = _uniform(self.scale_low, self.scale_high, (3,), generator)
        shift = _uniform(-self.translate, self.translate, (3,), generator)
        points[:, :3] = points[:, :3] * scale + shift
        return _with_points(sample, points)


class RotateY:
    """Random rotation about y by U(0, max_angle): `pc @ R`, R = [[c,0,s],[0,1,0],[-s,0,c]]."""

    def __init__(self, max_angle: float = 2 * math.pi):
        self.max_angle = max_angle

    def __call__(self, sample, generator: torch.Generator):
        points = _points(sample).clone()
        angle = float(_uniform(0.0, self.max_angle, (), generator))
        c, s = math.cos(angle), math.sin(angle)
        rotation = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=points.dtype)
        points[:, :3] = points[:, :3] @ rotation
        if points.shape[1] >= 6:
            points[:, 3:6] = points[:, 3:6] @ rotation
        return _with_points(sample, points)


class ScaleShift:
    """Isotropic scale U(scale_low, scale_high) then per-axis shift U(-shift, shift)."""

    def __init__(self, scale_low=0.8, scale_high=1.25, shift=0.1):
        self.scale_low, self.scale_high, self.shift = scale_low, scale_high, shift

    def __call__(self, sample, generator: torch.Generator):
        points = _points(sample).clone()
        scale = _uniform(self.scale_low, self.scale_high, (), generator)
        shift = _uniform(-self.shift, self.shift, (3,), generator)
        points[:, :3] = points[:, :3] * scale + shift
        return _with_points(sample, points)


class Subsample:
    """Keep `num_points` random points, without replacement; per-point keys (`seg`) follow."""

    def __init__(self, num_points: int = 1024):
        if num_points <= 0:
            raise OptionError(f"subsample: num_points must be positive, got {num_points}")
        self.num_points = int(num_points)

    def __call__(self, sample, generator: torch.Generator):
        n = _points(sample).shape[0]
        if n < self.num_points:
            raise OptionError(f"subsample: asked for {self.num_points} points of a cloud of {n}")
        keep = torch.randperm(n, generator=generator)[: self.num_points]
        if not isinstance(sample, dict):
            return sample[keep]
        return {k: (v[keep] if k in PER_POINT_KEYS else v) for k, v in sample.items()}


class Normalize:
    """Centre xyz on their mean and scale to the unit sphere (deterministic)."""

    def __call__(self, sample, generator: torch.Generator | None = None):
        points = _points(sample).clone()
        xyz = points[:, :3] - points[:, :3].mean(dim=0)
        radius = xyz.norm(dim=1).max()
        points[:, :3] = xyz / radius if radius > 0 else xyz
        return _with_points(sample, points)


TRANSFORMS: dict[str, Callable[..., Callable]] = {
    "scale_translate": ScaleTranslate,
    "rotate_y": RotateY,
    "scale_shift": ScaleShift,
    "subsample": Subsample,
    "normalize": Normalize,
}


class Compose:
    """Apply transforms in order with the same generator."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, sample, generator: torch.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, generator)
        return sample

    def __repr__(self) -> str:
        return f"Compose({[type(t).__name__ for t in self.transforms]})"


def build_transforms(
    names: Sequence[str | Mapping[str, Mapping[str, Any]]],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Compose:
    """Build a transform pipeline from config names.

    `names` entries are a name (`"rotate_y"`) or a one-key mapping `{"subsample": {"num_points":
    2048}}`; `options` gives keyword arguments per name for plain-string entries.
    Unknown names or arguments raise `ValueError` listing what is accepted.
    """
    options = dict(options or {})
    unknown = set(options) - set(TRANSFORMS)
    if unknown:
        raise OptionError(f"build_transforms: options for unknown transforms {sorted(unknown)}")
    built = []
    for entry in names:
        if isinstance(entry, Mapping):
            if len(entry) != 1:
                raise OptionError(f"build_transforms: expected a one-key mapping, got {dict(entry)}")
            ((name, kwargs),) = entry.items()
        else:
            name, kwargs = entry, options.get(entry, {})
        if name not in TRANSFORMS:
            raise OptionError(
                f"build_transforms: unknown transform {name!r}; known: {list(TRANSFORMS)}"
            )
        try:
            built.append(TRANSFORMS[name](**dict(kwargs or {})))
        except TypeError as error:
            raise OptionError(f"build_transforms: bad arguments for {name!r}: {error}") from None
    return Compose(built)
