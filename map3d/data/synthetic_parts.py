"""Built-in part-labelled shapes, so the part-segmentation path runs with no data on disk.

Each shape is assembled from simple surfaces (boxes, cylinders, cone frustums, ellipsoids, a torus
arc), each carrying a known part label. Categories and part ids are ShapeNetPart's (`Airplane`
0–3, `Chair` 12–15, `Lamp` 24–27, `Mug` 36–37, `Table` 47–49), so a model, config and metric built
for ShapeNetPart (16 categories, 50 parts) runs unchanged; the meaning of the parts inside a
category is ours (`PART_NAMES`). Some parts are optional (airplane engines, chair arms, lamp bulb,
table shelf), so shapes with absent parts occur as they do in ShapeNetPart.

Determinism: the shape of item `index` (proportions, optional parts, yaw) depends only on
`(seed, split, index)`; the points sampled on its surface are redrawn per epoch from the base
class's `(seed, epoch, index)` generator, as ShapeNetPart's resampling with replacement is.
Points are y-up, yaw-rotated, centred and scaled to the unit sphere, then jittered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from map3d.data.base import PointDataset, Sample, Transform, item_generator
from map3d.data.shapenetpart import CATEGORY_NAMES, CATEGORY_PARTS, NUM_PARTS

# Part names inside each category, in the order of the category's ShapeNetPart part ids.
PART_NAMES: dict[str, tuple[str, ...]] = {
    "Airplane": ("fuselage", "wings", "tail", "engines"),
    "Chair": ("back", "seat", "legs", "arms"),
    "Lamp": ("base", "pole", "shade", "bulb"),
    "Mug": ("body", "handle"),
    "Table": ("top", "legs", "shelf"),
}

_SPLITS = {"train": 0, "val": 1, "test": 2}
_SHAPE_STREAM = 1_000_000  # `epoch` slot of the shape generator, away from real epochs

# A surface: its area and a sampler `(n, generator) -> (n,3)`.
Surface = tuple[float, Callable[[int, torch.Generator], Tensor]]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _chance(generator: torch.Generator, probability: float) -> bool:
    return float(torch.rand((), generator=generator)) < probability


def _axis_frame(axis: int) -> list[int]:
    """Column order that maps a y-axis primitive (radial x,z; axial y) onto `axis`."""
    return {0: [1, 0, 2], 1: [0, 1, 2], 2: [0, 2, 1]}[axis]


def box(center: Sequence[float], size: Sequence[float]) -> Surface:
    """Surface of an axis-aligned box with full side lengths `size`."""
    half = torch.tensor(size, dtype=torch.float32) / 2
    faces = torch.stack([half[1] * half[2], half[0] * half[2], half[0] * half[1]]).repeat(2) * 4
    area = float(faces.sum())

    def sample(n: int, generator: torch.Generator) -> Tensor:
        face = torch.multinomial(faces, n, replacement=True, generator=generator)
        points = (torch.rand(n, 3, generator=generator) * 2 - 1) * half
        axis = face % 3
        sign = torch.where(face < 3, 1.0, -1.0)
        points[torch.arange(n), axis] = sign * half[axis]
        return points + torch.tensor(center)

    return area, sample


def frustum(
    center: Sequence[float],
    radius_bottom: float,
    radius_top: float,
    height: float,
    *,
    axis: int = 1,
    caps: bool = False,
) -> Surface:
    """Lateral surface of a cone frustum (a cylinder when the radii match), optionally capped."""
    slant = math.hypot(height, radius_bottom - radius_top)
    lateral = math.pi * (radius_bottom + radius_top) * slant
    cap_areas = [math.pi * radius_bottom**2, math.pi * radius_top**2] if caps else [0.0, 0.0]
    pieces = torch.tensor([lateral, *cap_areas])
    columns = _axis_frame(axis)

    def sample(n: int, generator: torch.Generator) -> Tensor:
        piece = torch.multinomial(pieces, n, replacement=True, generator=generator)
        angle = torch.rand(n, generator=generator) * 2 * math.pi
        u = torch.rand(n, generator=generator)
        if radius_bottom == radius_top:
            t, radius = u, torch.full((n,), radius_bottom)
        else:  # area density grows with the radius: radius² uniform between the end radii²
            radius = (radius_bottom**2 + u * (radius_top**2 - radius_bottom**2)).sqrt()
            t = (radius - radius_bottom) / (radius_top - radius_bottom)
        disc = torch.rand(n, generator=generator).sqrt()  # uniform over a disc
        on_cap = piece > 0
        t = torch.where(piece == 1, 0.0, torch.where(piece == 2, 1.0, t))
        cap_radius = torch.where(piece == 1, radius_bottom, radius_top) * disc
        radius = torch.where(on_cap, cap_radius, radius)
        local = torch.stack([radius * angle.cos(), (t - 0.5) * height, radius * angle.sin()], dim=1)
        return local[:, columns] + torch.tensor(center)

    return float(pieces.sum()), sample


def ellipsoid(center: Sequence[float], radii: Sequence[float]) -> Surface:
    """Surface of an axis-aligned ellipsoid (directions uniform on the sphere, then stretched)."""
    a, b, c = radii
    p = 1.6075  # Knud Thomsen's approximation of the surface area
    area = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)

    def sample(n: int, generator: torch.Generator) -> Tensor:
        direction = torch.randn(n, 3, generator=generator)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return direction * torch.tensor(radii) + torch.tensor(center)

    return area, sample


def torus_arc(
    center: Sequence[float], ring_radius: float, tube_radius: float, arc: float
) -> Surface:
    """A tube bent along a circular arc in the x-y plane, opening towards -x (a mug handle)."""
    area = 2 * math.pi * tube_radius * ring_radius * arc

    def sample(n: int, generator: torch.Generator) -> Tensor:
        ring = (torch.rand(n, generator=generator) - 0.5) * arc
        tube = torch.rand(n, generator=generator) * 2 * math.pi
        reach = ring_radius + tube_radius * tube.cos()
        points = torch.stack(
            [reach * ring.cos(), reach * ring.sin(), tube_radius * tube.sin()], dim=1
        )
        return points + torch.tensor(center)

    return area, sample


def _airplane(g: torch.Generator) -> list[tuple[Surface, int]]:
    length, radius = _uniform(g, 1.6, 2.2), _uniform(g, 0.09, 0.15)
    span, chord = _uniform(g, 1.3, 2.1), _uniform(g, 0.25, 0.45)
    wing_z = _uniform(g, -0.15, 0.2)
    fin_height, tail_span = _uniform(g, 0.25, 0.45), _uniform(g, 0.45, 0.8)
    rear = -length / 2 + 0.12
    parts = [
        (frustum((0, 0, 0), radius, radius, length, axis=2, caps=True), 0),
        (box((0, 0, wing_z), (span, 0.03, chord)), 1),
        (box((0, radius + fin_height / 2, rear), (0.03, fin_height, 0.22)), 2),
        (box((0, radius * 0.5, rear), (tail_span, 0.03, 0.18)), 2),
    ]
    if _chance(g, 0.7):
        for side in (-1, 1):
            engine = (side * span * _uniform(g, 0.2, 0.3), -radius - 0.06, wing_z + 0.05)
            parts.append((frustum(engine, 0.06, 0.06, 0.3, axis=2, caps=True), 3))
    return parts


def _chair(g: torch.Generator) -> list[tuple[Surface, int]]:
    width, depth = _uniform(g, 0.8, 1.1), _uniform(g, 0.8, 1.1)
    seat_y, back_h = _uniform(g, 0.8, 1.1), _uniform(g, 0.7, 1.1)
    leg = _uniform(g, 0.05, 0.09)
    parts = [
        (box((0, seat_y + 0.04 + back_h / 2, -depth / 2 + 0.04), (width, back_h, 0.08)), 0),
        (box((0, seat_y, 0), (width, 0.08, depth)), 1),
    ]
    for x in (-1, 1):
        for z in (-1, 1):
            corner = (x * (width / 2 - leg), seat_y / 2 - 0.02, z * (depth / 2 - leg))
            parts.append((box(corner, (leg, seat_y - 0.04, leg)), 2))
    if _chance(g, 0.5):
        arm_y = seat_y + _uniform(g, 0.25, 0.35)
        for x in (-1, 1):
            parts.append((box((x * (width / 2 + 0.04), arm_y, 0), (0.08, 0.06, depth * 0.8)), 3))
    return parts


def _lamp(g: torch.Generator) -> list[tuple[Surface, int]]:
    base_r, pole_h = _uniform(g, 0.3, 0.5), _uniform(g, 1.0, 1.6)
    shade_h = _uniform(g, 0.35, 0.55)
    shade_bottom, shade_top = _uniform(g, 0.4, 0.6), _uniform(g, 0.15, 0.3)
    top = 0.08 + pole_h
    parts = [
        (frustum((0, 0.04, 0), base_r, base_r * 0.9, 0.08, caps=True), 0),
        (frustum((0, 0.08 + pole_h / 2, 0), 0.035, 0.035, pole_h), 1),
        (frustum((0, top - shade_h * 0.3, 0), shade_bottom, shade_top, shade_h), 2),
    ]
    if _chance(g, 0.5):
        parts.append((ellipsoid((0, top - shade_h * 0.4, 0), (0.1, 0.13, 0.1)), 3))
    return parts


def _mug(g: torch.Generator) -> list[tuple[Surface, int]]:
    radius, height = _uniform(g, 0.35, 0.5), _uniform(g, 0.7, 1.1)
    ring = _uniform(g, 0.18, 0.28)
    return [
        (frustum((0, 0, 0), radius, radius * _uniform(g, 1.0, 1.15), height, caps=True), 0),
        (torus_arc((radius, 0, 0), ring, 0.04, math.pi * 1.1), 1),
    ]


def _table(g: torch.Generator) -> list[tuple[Surface, int]]:
    width, depth = _uniform(g, 1.2, 2.0), _uniform(g, 0.7, 1.2)
    height, leg = _uniform(g, 0.7, 1.0), _uniform(g, 0.06, 0.1)
    parts = [(box((0, height, 0), (width, 0.06, depth)), 0)]
    for x in (-1, 1):
        for z in (-1, 1):
            corner = (x * (width / 2 - leg), height / 2 - 0.015, z * (depth / 2 - leg))
            parts.append((box(corner, (leg, height - 0.03, leg)), 1))
    if _chance(g, 0.4):
        parts.append((box((0, height * 0.3, 0), (width - 2 * leg, 0.04, depth - 2 * leg)), 2))
    return parts


BUILDERS: dict[str, Callable[[torch.Generator], list[tuple[Surface, int]]]] = {
    "Airplane": _airplane,
    "Chair": _chair,
    "Lamp": _lamp,
    "Mug": _mug,
    "Table": _table,
}


def sample_shape(
    surfaces: list[tuple[Surface, int]], num_points: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Area-weighted points on labelled surfaces -> points (N,3) float32, local part (N,) int64."""
    areas = torch.tensor([area for (area, _), _ in surfaces])
    choice = torch.multinomial(areas, num_points, replacement=True, generator=generator)
    counts = torch.bincount(choice, minlength=len(surfaces)).tolist()
    points, labels = [], []
    for ((_, sample), part), count in zip(surfaces, counts):
        if count:
            points.append(sample(count, generator))
            labels.append(torch.full((count,), part, dtype=torch.int64))
    order = torch.randperm(num_points, generator=generator)
    return torch.cat(points)[order].float(), torch.cat(labels)[order]


class SyntheticPartsDataset(PointDataset):
    """Procedural part-labelled shapes in ShapeNetPart's item format.

    Items: `points` (N,3) float32, `category` int (ShapeNetPart class index), `seg` (N,) int64
    global part ids. `category_parts` / `category_names` are ShapeNetPart's full tables.
    Categories cycle over `categories` by index, so every split is balanced.
    """

    category_parts = CATEGORY_PARTS
    category_names = CATEGORY_NAMES
    num_categories = len(CATEGORY_NAMES)
    num_parts = NUM_PARTS

    def __init__(
        self,
        split: str = "train",
        *,
        num_samples: int | None = None,
        num_points: int = 2048,
        categories: Sequence[str] = tuple(BUILDERS),
        noise: float = 0.01,
        random_yaw: bool = True,
        seed: int = 0,
        transforms: Transform | None = None,
    ):
        super().__init__(seed=seed, transforms=transforms)
        if split not in _SPLITS:
            raise ValueError(f"split: expected one of {sorted(_SPLITS)}, got {split!r}")
        unknown = [name for name in categories if name not in BUILDERS]
        if unknown or not categories:
            raise ValueError(
                f"categories: expected a non-empty subset of {list(BUILDERS)}, got {list(categories)}"
            )
        if num_points < 1:
            raise ValueError(f"num_points: expected >= 1, got {num_points}")
        self.split = split
        self.num_samples = int(
            num_samples if num_samples is not None else (400 if split == "train" else 100)
        )
        if self.num_samples < 1:
            raise ValueError(f"num_samples: expected >= 1, got {self.num_samples}")
        self.num_points = int(num_points)
        self.categories = list(categories)
        self.noise = float(noise)
        self.random_yaw = bool(random_yaw)

    def __len__(self) -> int:
        return self.num_samples

    def load(self, index: int, generator: torch.Generator) -> Sample:
        name = self.categories[index % len(self.categories)]
        category = CATEGORY_NAMES.index(name)
        shape_generator = item_generator(self.seed, _SHAPE_STREAM + _SPLITS[self.split], index)
        surfaces = BUILDERS[name](shape_generator)
        yaw = _uniform(shape_generator, 0, 2 * math.pi) if self.random_yaw else 0.0
        points, local_part = sample_shape(surfaces, self.num_points, generator)
        cos, sin = math.cos(yaw), math.sin(yaw)
        rotation = torch.tensor([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])
        points = points @ rotation
        points = points - points.mean(0)
        points = points / points.norm(dim=1).max().clamp_min(1e-12)
        points = points + self.noise * torch.randn(points.shape, generator=generator)
        seg = local_part + CATEGORY_PARTS[category][0]
        return {"points": points.float(), "category": category, "seg": seg}
