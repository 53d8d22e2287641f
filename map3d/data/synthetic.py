"""SyntheticShapes: a built-in, procedurally generated, labelled set of 3D surfaces.

No files needed. Item `index` of split `split` is a pure function of `(seed, split, index)`:
its class is `index % num_classes` (balanced), and a `numpy.random.Generator` seeded from
`(seed, split, index)` draws the shape's parameters, a smooth random deformation, a mild
anisotropic stretch, a uniformly random 3D pose, the area-weighted surface sample and the noise.
Per-epoch randomness (transforms) comes from the usual `(seed, epoch, index)` torch generator
(see `map3d.data.base`).

Each class is a parametric surface built as a small triangle mesh whose vertices are computed
from the drawn parameters; deformation is applied to the vertices and points are then sampled
area-weighted over the deformed triangles, so the density stays uniform on the final surface.
Points are unit-sphere normalized (as ShapeNet-55 / ModelNet items are) and jittered afterwards.

Difficulty is deliberate: sphere vs ellipsoid, cylinder vs capsule vs cone differ by
proportions that deformation, stretch and noise blur, so a classifier has to learn shape, not
just a silhouette.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch

from map3d.data.base import PointDataset, Sample, Transform
from map3d.errors import OptionError

SPLITS = {"train": 0, "test": 1, "val": 2}


@functools.cache
def _grid(
    nu: int, nv: int, wrap_u: bool, wrap_v: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u (V,), v (V,), faces (F,3)) of an nu x nv parameter grid on [0,1)^2 / [0,1]^2."""
    u = np.arange(nu) / nu if wrap_u else np.linspace(0.0, 1.0, nu)
    v = np.arange(nv) / nv if wrap_v else np.linspace(0.0, 1.0, nv)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    iu = np.arange(nu if wrap_u else nu - 1)
    iv = np.arange(nv if wrap_v else nv - 1)
    a_u, a_v = np.meshgrid(iu, iv, indexing="ij")
    b_u, b_v = (a_u + 1) % nu, (a_v + 1) % nv
    idx = lambda i, j: (i * nv + j).ravel()
    p00, p10, p01, p11 = idx(a_u, a_v), idx(b_u, a_v), idx(a_u, b_v), idx(b_u, b_v)
    faces = np.concatenate([np.stack([p00, p10, p11], 1), np.stack([p00, p11, p01], 1)])
    return uu.ravel(), vv.ravel(), faces


def _revolve(radius: np.ndarray, height: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Surface of revolution about y: profile (radius, height) at each vertex, angle 2πu."""
    angle = 2 * math.pi * u
    return np.stack([radius * np.cos(angle), height, radius * np.sin(angle)], axis=1)


def _sphere(rng):
    u, v, faces = _grid(24, 16, True, False)
    theta = math.pi * v
    return _revolve(np.sin(theta), np.cos(theta), u), faces


def _ellipsoid(rng):
    points, faces = _sphere(rng)
    axes = np.array([1.0, rng.uniform(0.35, 0.7), rng.uniform(0.35, 1.0)])
    return points * rng.permutation(axes), faces


def _torus(rng):
    u, v, faces = _grid(24, 12, True, True)
    tube = rng.uniform(0.2, 0.5)
    angle = 2 * math.pi * v
    return _revolve(1.0 + tube * np.cos(angle), tube * np.sin(angle), u), faces


def _cylinder(rng):
    u, v, faces = _grid(24, 12, True, False)
    h = rng.uniform(0.5, 1.5)
    radius = np.interp(v, [0.0, 0.2, 0.8, 1.0], [0.0, 1.0, 1.0, 0.0])
    height = np.interp(v, [0.0, 0.2, 0.8, 1.0], [h, h, -h, -h])
    return _revolve(radius, height, u), faces


def _cone(rng):
    u, v, faces = _grid(24, 12, True, False)
    h = rng.uniform(0.6, 1.6)
    radius = np.interp(v, [0.0, 0.75, 1.0], [0.0, 1.0, 0.0])
    height = np.interp(v, [0.0, 0.75, 1.0], [h, -h, -h])
    return _revolve(radius, height, u), faces


def _capsule(rng):
    u, v, faces = _grid(24, 18, True, False)
    h = rng.uniform(0.4, 1.4)
    # v in [0,1/3]: top hemisphere, [1/3,2/3]: side, [2/3,1]: bottom hemisphere.
    theta = math.pi / 2 * np.clip(np.where(v < 0.5, 3 * v, 3 * v - 1), 0.0, 2.0)
    offset = np.interp(v, [0.0, 1 / 3, 2 / 3, 1.0], [h, h, -h, -h])
    return _revolve(np.sin(theta), np.cos(theta) + offset, u), faces


def _box(rng):
    size = rng.uniform(0.4, 1.0, size=3)
    u, v, quad = _grid(3, 3, False, False)
    s, t = 2 * u - 1, 2 * v - 1
    points, faces = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            face = np.empty((u.size, 3))
            face[:, axis] = sign
            face[:, (axis + 1) % 3], face[:, (axis + 2) % 3] = s, t
            faces.append(quad + len(points) * u.size)
            points.append(face)
    return np.concatenate(points) * size, np.concatenate(faces)


def _helix(rng):
    u, v, faces = _grid(96, 8, False, True)
    turns, pitch, tube = rng.uniform(2.0, 4.0), rng.uniform(0.6, 1.2), rng.uniform(0.08, 0.16)
    angle, around = 2 * math.pi * turns * u, 2 * math.pi * v
    centre = np.stack([np.cos(angle), pitch * turns * (u - 0.5), np.sin(angle)], axis=1)
    inward = np.stack([-np.cos(angle), 0 * angle, -np.sin(angle)], axis=1)
    tangent = np.stack(
        [-np.sin(angle), np.full_like(angle, pitch / (2 * math.pi)), np.cos(angle)], 1
    )
    binormal = np.cross(tangent, inward)
    binormal /= np.linalg.norm(binormal, axis=1, keepdims=True)
    offset = np.cos(around)[:, None] * inward + np.sin(around)[:, None] * binormal
    return centre + tube * offset, faces


def _bumpy_plane(rng):
    u, v, faces = _grid(20, 20, False, False)
    x, z = 2 * u - 1, 2 * v - 1
    height = np.zeros_like(x)
    for _ in range(rng.integers(2, 6)):
        cx, cz = rng.uniform(-0.8, 0.8, size=2)
        width = rng.uniform(0.15, 0.4)
        height += (
            rng.choice([-1.0, 1.0])
            * rng.uniform(0.1, 0.4)
            * np.exp(-((x - cx) ** 2 + (z - cz) ** 2) / width**2)
        )
    return np.stack([x, height, z], axis=1), faces


def _mobius(rng):
    # u spans [0, 1] inclusive: the last column lands on the first with the width flipped,
    # which closes the strip geometrically.
    u, v, faces = _grid(48, 5, False, False)
    width = rng.uniform(0.3, 0.6)
    angle, s = 2 * math.pi * u, width * (2 * v - 1)
    radius = 1.0 + s * np.cos(angle / 2)
    points = np.stack([radius * np.cos(angle), s * np.sin(angle / 2), radius * np.sin(angle)], 1)
    return points, faces


SHAPES: dict[str, Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "sphere": _sphere,
    "ellipsoid": _ellipsoid,
    "torus": _torus,
    "cylinder": _cylinder,
    "cone": _cone,
    "capsule": _capsule,
    "box": _box,
    "helix": _helix,
    "bumpy_plane": _bumpy_plane,
    "mobius": _mobius,
}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (from a random unit quaternion)."""
    w, x, y, z = rng.normal(size=4)
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, num_points: int, rng: np.random.Generator
) -> np.ndarray:
    """Area-weighted uniform sample of a triangle mesh: (V,3), (F,3) -> (num_points,3)."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    cumulative = np.cumsum(area)
    chosen = np.searchsorted(cumulative, rng.uniform(0.0, cumulative[-1], num_points))
    chosen = np.minimum(chosen, len(faces) - 1)
    r1, r2 = np.sqrt(rng.uniform(size=(num_points, 1))), rng.uniform(size=(num_points, 1))
    return (1 - r1) * a[chosen] + r1 * (1 - r2) * b[chosen] + r1 * r2 * c[chosen]


def generate_shape(
    name: str,
    num_points: int,
    rng: np.random.Generator,
    *,
    deform: float = 0.08,
    stretch: float = 0.15,
    noise: float = 0.015,
) -> np.ndarray:
    """One deformed, posed, unit-sphere-normalized, noisy sample of shape `name`: (num_points,3).

    `deform` is the amplitude of a smooth sinusoidal warp, `stretch` the per-axis scale range
    (1 ± stretch), `noise` the maximum Gaussian jitter std (drawn per shape in [0, noise]).
    """
    vertices, faces = SHAPES[name](rng)
    vertices = vertices * (1.0 + rng.uniform(-stretch, stretch, size=3))
    frequencies = rng.normal(0.0, 1.5, size=(3, 3))
    phases = rng.uniform(0.0, 2 * math.pi, size=3)
    vertices = vertices + rng.uniform(0.0, deform) * np.sin(vertices @ frequencies + phases)
    vertices = vertices @ random_rotation(rng).T
    points = sample_surface(vertices, faces, num_points, rng)
    points -= points.mean(axis=0)
    points /= np.sqrt((points**2).sum(axis=1)).max()
    points += rng.normal(0.0, rng.uniform(0.0, noise), size=points.shape)
    return points.astype(np.float32)


class SyntheticShapes(PointDataset):
    """Procedural labelled shapes; items `{"points": (num_points,3) float32, "label": int}`.

    task: "classify" (default 4,000 train / 1,000 test items) or "pretrain" (default 8,192 / 1,024;
    same items, `label` may be ignored). `classes` selects a subset of `SHAPES` by name.
    `cache` keeps each generated cloud (per process; 12 KiB per 1,024-point item), so only the
    first epoch pays for generation (~0.7 ms per item on one idle core).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        task: str = "classify",
        num_samples: int | None = None,
        num_points: int = 1024,
        classes: list[str] | None = None,
        deform: float = 0.08,
        stretch: float = 0.15,
        noise: float = 0.015,
        seed: int = 0,
        cache: bool = True,
        transforms: Transform | None = None,
    ):
        super().__init__(seed=seed, transforms=transforms)
        if split not in SPLITS:
            raise OptionError(f"synthetic: split must be one of {list(SPLITS)}, got {split!r}")
        if task not in ("classify", "pretrain"):
            raise OptionError(f"synthetic: task must be 'classify' or 'pretrain', got {task!r}")
        self.class_names = list(classes) if classes is not None else list(SHAPES)
        unknown = [c for c in self.class_names if c not in SHAPES]
        if unknown or not self.class_names:
            raise OptionError(f"synthetic: unknown classes {unknown}; known: {list(SHAPES)}")
        if num_samples is None:
            sizes = {"classify": (4000, 1000), "pretrain": (8192, 1024)}[task]
            num_samples = sizes[0] if split == "train" else sizes[1]
        if num_samples <= 0 or num_points <= 0:
            raise OptionError(
                f"synthetic: num_samples and num_points must be positive, got {num_samples}, "
                f"{num_points}"
            )
        self.split, self.task = split, task
        self.num_samples, self.num_points = int(num_samples), int(num_points)
        self.shape_options = {"deform": deform, "stretch": stretch, "noise": noise}
        self.num_classes = len(self.class_names)
        # index -> generated points; items do not depend on the epoch, so caching is exact.
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_samples

    def load(self, index: int, generator: torch.Generator) -> Sample:
        label = index % self.num_classes
        points = None if self._cache is None else self._cache.get(index)
        if points is None:
            rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
            points = generate_shape(
                self.class_names[label], self.num_points, rng, **self.shape_options
            )
            if self._cache is not None:
                self._cache[index] = points
        return {"points": torch.from_numpy(points.copy()), "label": label}
