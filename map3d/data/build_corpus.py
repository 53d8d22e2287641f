"""Build a pretraining corpus of real shapes from meshes that ship inside installed packages.

    pip install 'map3d[corpus]'                     # pybullet (pybullet_data), robosuite-models,
                                                    # trimesh
    python -m map3d.data.build_corpus --out data/pkg_shapes
    map3d pretrain --config configs/pretrain/shapenet55_map.yaml --data data/pkg_shapes

Everything runs offline: the meshes are files of the installed packages. Each `.obj` / `.stl`
file is one shape. It is read as `shape_folder` reads meshes (`map3d.data.shapes.read_mesh`,
trimesh; polygons triangulated), its referenced vertices are normalized as ShapeNetCore v2's
`model_normalized.obj` (bounding box centred at the origin, diagonal 1) and turned y-up (the
packages here are z-up robotics assets), and `--points` (8,192, as ShapeNet-55's `shapenet_pc`
files) surface points are sampled area-weighted (`map3d.data.shapes.sample_surface`, also the
synthetic shapes' sampler) with a generator seeded by `--seed` and the file's path, so a rebuild
gives the same files. (Corpora built before these meshes were read with trimesh differ for meshes
whose polygons or material groups trimesh triangulates or orders otherwise: the same triangles,
other sample points; 40 of the 1,376 shapes of pybullet 3.2.7 and robosuite-models 1.0.0.)
Output, in the ShapeNet-55 layout that the `shapenet55` dataset reads:

    OUT/shapenet_pc/<package>-<path_in_package>.npy   (points, 3) float32, path with _
    OUT/ShapeNet-55/train.txt, test.txt               file names; test = `--test-fraction`,
                                                      chosen by a hash of the name
    OUT/manifest.csv                                  one row per mesh file found

Skipped, with the reason in the manifest: collision copies (a `collision` folder, `collision` or
`vhacd` in the name: convex decompositions of a visual mesh), exact geometric duplicates of an
earlier file, flat meshes (planes: smallest bounding-box side < 1e-3 of the largest). Files that
cannot be used (unreadable, face indices out of range, no faces, non-finite coordinates, zero
area) are `bad: <why>` and are listed at the end of the run. The meshes themselves are never
part of this project.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import importlib.util
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from map3d.data.errors import DatasetFormatError
from map3d.data.shapes import read_mesh, sample_surface

MESH_SUFFIXES = (".obj", ".stl")
LICENCE_FILE = re.compile(r"^(licen[cs]e|copying)(\.\w+)?$", re.IGNORECASE)
COLLISION = re.compile(r"collision|vhacd", re.IGNORECASE)
FLAT_RATIO = 1e-3
MANIFEST_FIELDS = (
    "file",
    "split",
    "package",
    "distribution",
    "version",
    "licence",
    "licence_file",
    "path",
    "faces",
    "points",
    "status",
)


@dataclass(frozen=True)
class Source:
    """A folder of mesh files: an installed package's data folder or any directory.

    `up`: the meshes' up axis, "z" (rotated to y-up) or "y" (kept)."""

    name: str
    root: Path
    distribution: str = ""
    version: str = "unknown"
    licence: str = "unknown"
    up: str = "z"


# Packages on the registry whose wheels ship mesh files (import name -> distribution, up axis).
# Checked: pybullet 3.2.7 (pybullet_data: ~1,100 .obj/.stl, 1,000 of them the procedural
# `random_urdfs` objects, the rest robots, furniture, toys; zlib), robosuite-models 1.0.0 (robot
# arms, hands, grippers, bases; MIT, some robot folders carry their own LICENSE). Not usable
# offline: open3d's and pyvista's example meshes and mujoco-menagerie (downloaded at run time);
# trimesh's wheel ships no models.
KNOWN_PACKAGES = {
    "pybullet_data": ("pybullet", "z"),
    "robosuite_models": ("robosuite-models", "z"),
}


class MeshError(ValueError):
    """A mesh that was read but cannot be turned into a shape; the message says why."""


# ----------------------------------------------------------------------------- geometry


def normalize_like_shapenet(vertices: np.ndarray, faces: np.ndarray, up: str) -> np.ndarray:
    """Vertices of `faces` with their bounding box centred at 0 and of diagonal 1 (ShapeNetCore
    v2 `model_normalized`), turned y-up when `up` is "z" ((x, y, z) -> (x, z, -y))."""
    used = vertices[np.unique(faces)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    diagonal = float(np.linalg.norm(hi - lo))
    if diagonal == 0.0:
        raise MeshError("all vertices coincide")
    out = (vertices - (lo + hi) / 2) / diagonal
    if up == "z":
        out = np.stack([out[:, 0], out[:, 2], -out[:, 1]], axis=1)
    elif up != "y":
        raise ValueError(f"up axis must be 'y' or 'z', got {up!r}")
    return out


def is_flat(vertices: np.ndarray, faces: np.ndarray) -> bool:
    used = vertices[np.unique(faces)]
    extent = used.max(axis=0) - used.min(axis=0)
    return bool(extent.min() < FLAT_RATIO * extent.max())


def fingerprint(vertices: np.ndarray, faces: np.ndarray) -> str:
    """Same for the same normalized geometry, whatever the file format or vertex sharing."""
    corners = np.round(vertices[faces].reshape(-1, 3), 5)
    return hashlib.sha1(np.unique(corners, axis=0).tobytes()).hexdigest()


# ----------------------------------------------------------------------------- sources


def installed_source(name: str) -> Source:
    """The folder, version and licence of installed package `name` (a KNOWN_PACKAGES key)."""
    if name not in KNOWN_PACKAGES:
        raise ValueError(f"unknown mesh package {name!r}; known: {', '.join(KNOWN_PACKAGES)}")
    distribution, up = KNOWN_PACKAGES[name]
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{name} is not installed: pip install {distribution} (or 'map3d[corpus]')"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    meta = importlib.metadata.metadata(distribution)
    return Source(name, root, distribution, meta["Version"], _licence(meta), up)


def _licence(meta) -> str:
    text = meta.get("License-Expression") or meta.get("License") or ""
    if text and len(text) < 80 and "\n" not in text:
        return text
    classifiers = [
        c.rsplit(" :: ", 1)[-1]
        for c in meta.get_all("Classifier") or []
        if c.startswith("License ::")
    ]
    return "; ".join(classifiers) or "unknown"


def licence_file(path: Path, root: Path) -> str:
    """The nearest LICENSE/COPYING file from the mesh's folder up to the package root."""
    folder = path.parent
    while True:
        for candidate in sorted(folder.iterdir()):
            if candidate.is_file() and LICENCE_FILE.match(candidate.name):
                return candidate.relative_to(root).as_posix()
        if folder == root or root not in folder.parents:
            return ""
        folder = folder.parent


def mesh_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)


def shape_name(source: str, relative: str, taken: set[str]) -> str:
    """`<source>-<path>.npy`: the source (no hyphens) is the synset, the path the model id."""
    base = f"{source.replace('-', '_')}-{re.sub(r'[^A-Za-z0-9_]+', '_', relative)}"
    name, k = f"{base}.npy", 1
    while name in taken:
        k += 1
        name = f"{base}_{k}.npy"
    taken.add(name)
    return name


def is_test(name: str, fraction: float) -> bool:
    return zlib.crc32(name.encode()) % 10_000 < round(fraction * 10_000)


# ----------------------------------------------------------------------------- build


def build_corpus(
    sources: list[Source],
    out: str | Path,
    *,
    points: int = 8192,
    seed: int = 0,
    test_fraction: float = 0.1,
    limit: int | None = None,
    log=print,
) -> list[dict]:
    """Sample every mesh file of `sources` into `out` (module docstring); returns the manifest
    rows (also written to `out/manifest.csv`)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    out = Path(out)
    pc_dir = out / "shapenet_pc"
    pc_dir.mkdir(parents=True, exist_ok=True)
    (out / "ShapeNet-55").mkdir(exist_ok=True)
    rows: list[dict] = []
    seen: dict[str, str] = {}
    taken: set[str] = set()
    for source in sources:
        files = mesh_files(source.root)[:limit]
        log(f"{source.name} {source.version} ({source.licence}): {len(files)} mesh files")
        for path in files:
            relative = path.relative_to(source.root).as_posix()
            row = {
                "file": "",
                "split": "",
                "package": source.name,
                "distribution": source.distribution,
                "version": source.version,
                "licence": source.licence,
                "licence_file": licence_file(path, source.root),
                "path": relative,
                "faces": 0,
                "points": 0,
            }
            row["status"] = _one_shape(
                path,
                relative,
                source,
                row,
                seen,
                taken,
                pc_dir,
                points=points,
                seed=seed,
                test_fraction=test_fraction,
            )
            rows.append(row)
    _write_outputs(rows, out)
    _report(rows, log)
    return rows


def _one_shape(
    path, relative, source, row, seen, taken, pc_dir, *, points, seed, test_fraction
) -> str:
    if COLLISION.search(relative):
        return "skipped: collision copy"
    try:
        mesh = read_mesh(path)
        vertices, faces = mesh.vertices, mesh.faces
        row["faces"] = len(faces)
        vertices = normalize_like_shapenet(vertices, faces, source.up)
        if is_flat(vertices, faces):
            return "skipped: flat"
        key = fingerprint(vertices, faces)
        if key in seen:
            return f"skipped: duplicate of {seen[key]}"
        rng = np.random.default_rng([seed, zlib.crc32(f"{source.name}/{relative}".encode())])
        cloud = sample_surface(vertices, faces, points, rng, path=path).astype(np.float32)
    except DatasetFormatError as err:
        return f"bad: {err.problem}"
    except (MeshError, OSError, MemoryError) as err:
        return f"bad: {err}"
    seen[key] = f"{source.name}/{relative}"
    name = shape_name(source.name, relative, taken)
    np.save(pc_dir / name, cloud)
    row.update(
        file=name, points=len(cloud), split="test" if is_test(name, test_fraction) else "train"
    )
    return "ok"


def _write_outputs(rows: list[dict], out: Path) -> None:
    for split in ("train", "test"):
        names = [r["file"] for r in rows if r["split"] == split]
        (out / "ShapeNet-55" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _report(rows: list[dict], log) -> None:
    kinds = Counter(
        r["status"].split(":", 1)[0] if not r["status"].startswith("skipped: dup") else "duplicate"
        for r in rows
    )
    reasons = Counter(
        r["status"]
        for r in rows
        if r["status"].startswith("skipped: c") or r["status"] == "skipped: flat"
    )
    splits = Counter(r["split"] for r in rows if r["status"] == "ok")
    log(
        f"{kinds['ok']} shapes ({splits['train']} train, {splits['test']} test); "
        f"skipped: {kinds['duplicate']} duplicates, "
        + ", ".join(f"{n} {s.split(': ', 1)[1]}" for s, n in sorted(reasons.items()))
        + f"; bad: {kinds['bad']}"
    )
    for r in rows:
        if r["status"].startswith("bad"):
            log(f"  bad mesh {r['package']}/{r['path']}: {r['status'][5:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m map3d.data.build_corpus", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", required=True, help="output folder (ShapeNet-55 layout)")
    p.add_argument(
        "--packages",
        nargs="*",
        metavar="NAME",
        help=f"installed mesh packages to read (default: those of {list(KNOWN_PACKAGES)}"
        " that are installed; the option alone: none)",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also read every .obj/.stl under DIR (y-up meshes), named NAME",
    )
    p.add_argument("--points", type=int, default=8192, help="points per shape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, help="at most this many mesh files per source")
    args = p.parse_args(argv)

    names = args.packages
    if names is None:
        names = [n for n in KNOWN_PACKAGES if importlib.util.find_spec(n) is not None]
    try:
        sources = [installed_source(n) for n in names]
    except (ValueError, ModuleNotFoundError) as err:
        p.error(str(err))
    for text in args.source:
        name, sep, folder = text.partition("=")
        if not sep or not name or not Path(folder).is_dir():
            p.error(f"--source expects NAME=DIR with an existing DIR, got {text!r}")
        sources.append(Source(name, Path(folder), up="y"))
    if not sources:
        p.error("no mesh package installed: pip install 'map3d[corpus]' (or pass --source)")
    if importlib.util.find_spec("trimesh") is None:
        p.error("reading the meshes needs trimesh: pip install 'map3d[corpus]'")
    rows = build_corpus(
        sources,
        args.out,
        points=args.points,
        seed=args.seed,
        test_fraction=args.test_fraction,
        limit=args.limit,
    )
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
