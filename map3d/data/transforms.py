"""Per-sample point-cloud transforms, seeded, named in configs.

Each transform is a callable `(sample, generator) -> sample` where `sample` is a dataset item dict
(`points` float32 (N,C) tensor, xyz in the first 3 columns, optional per-point `seg` (N,)) or a
bare (N,C) points tensor; the generator is the item's `torch.Generator` (see `map3d.data.base`),
so a transform's draws are reproducible from (seed, epoch, index).

Names:
- `subsample`: `num_points` random points without replacement (per-point keys follow).
- `normalize`: centre on the mean, scale to the unit sphere [`pc_norm`].

Augmentations (`rotate_y`, `scale_translate`, `scale_shift`, `scale`) are not per-item
transforms: they run batch-time on the device, `map3d.engine.batching` (`data.augment`,
docs/protocols.md#augmentations). A transform that needs one on a single cloud applies it to a
batch of one, `rotate_y(points[None], generator)[0]`.
"""

from __future__ import annotations

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

    `names` entries are a name (`"normalize"`) or a one-key mapping `{"subsample": {"num_points":
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
                raise OptionError(
                    f"build_transforms: expected a one-key mapping, got {dict(entry)}"
                )
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
