"""Read one shape file of a common format as points: meshes are sampled on their surface.

Formats (by extension, case-insensitive):
- meshes `.obj`, `.off`, `.stl`, and `.ply` files with faces: read with trimesh (the `meshes`
  extra), then sampled area-weighted on their triangles (`sample_surface`, the sampler of the
  synthetic shapes and the real-shape corpus too);
- point clouds `.ply` without faces (map3d's own PLY reader), `.pcd` (ASCII and binary; binary
  compressed through Open3D, the `viz` extra), `.xyz` / `.txt` (one point per line, xyz in the
  first three columns, spaces or commas), `.npy` (an (N,C>=3) array), `.npz` (key `points` or
  `xyz`, or its only array).

`read_points(path, num_points, seed=...)` returns exactly `num_points` rows: a mesh gives that
many surface samples; a cloud with more points gives a random subset without replacement, one
with fewer keeps all of its points and repeats random ones. Columns: xyz; then with
`normals=True` unit normals (the sampled face's normal for meshes; `nx ny nz` / `normal_x ...`
properties, columns 3:6 of text and `.npy` files, key `normals` of `.npz` for clouds); then with
`colors=True` RGB in [0, 1] (meshes: vertex colours interpolated, face colours, or texture
colours at the vertices; clouds: PLY `red green blue`, PCD packed `rgb` / `rgba`, key `colors`
of `.npz`; text and `.npy` files have no named colour columns and are refused).

A file that cannot be used raises `DatasetFormatError` naming it: unreadable or truncated, no
points, a mesh without faces or whose faces all have zero area, non-finite coordinates, face
indices out of range. PCD files mark missing measurements with NaN; those points are dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from map3d.data.errors import DatasetFormatError
from map3d.errors import MissingDependencyError

MESH_EXTENSIONS = (".obj", ".off", ".stl")
CLOUD_EXTENSIONS = (".pcd", ".xyz", ".txt", ".npy", ".npz")
SHAPE_EXTENSIONS = (".ply",) + MESH_EXTENSIONS + CLOUD_EXTENSIONS
_PCD_TYPES = {
    ("F", 4): "f4",
    ("F", 8): "f8",
    ("I", 1): "i1",
    ("I", 2): "i2",
    ("I", 4): "i4",
    ("I", 8): "i8",
    ("U", 1): "u1",
    ("U", 2): "u2",
    ("U", 4): "u4",
    ("U", 8): "u8",
}


class Mesh(NamedTuple):
    """A triangle mesh: vertices (V,3) float64, faces (F,3) int64, optional RGB in [0, 1] per
    vertex (V,3) or per face (F,3)."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None
    face_colors: np.ndarray | None = None


def is_shape_file(path: str | os.PathLike) -> bool:
    """Whether `path` has one of the supported extensions."""
    return Path(path).suffix.lower() in SHAPE_EXTENSIONS


def read_points(
    path: str | os.PathLike,
    num_points: int,
    *,
    seed: int = 0,
    normals: bool = False,
    colors: bool = False,
) -> np.ndarray:
    """`num_points` points of the shape in `path` -> (num_points, 3 [+3 normals] [+3 colours])
    float32. Deterministic given (`path` content, `num_points`, `seed`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shape file not found")
    rng = np.random.default_rng(seed)
    if _is_mesh(path):
        mesh = read_mesh(path, colors=colors)
        if colors and mesh.vertex_colors is None and mesh.face_colors is None:
            raise DatasetFormatError(path, "colors=True but the mesh has no colours")
        return sample_surface(
            mesh.vertices, mesh.faces, num_points, rng, path=path, normals=normals,
            vertex_colors=mesh.vertex_colors, face_colors=mesh.face_colors,
        ).astype(np.float32)  # fmt: skip
    cloud = read_cloud(path, normals=normals, colors=colors)
    n = len(cloud)
    if n >= num_points:
        keep = rng.permutation(n)[:num_points]
    else:
        keep = np.concatenate([rng.permutation(n), rng.integers(0, n, num_points - n)])
    return cloud[keep]


def _is_mesh(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return _ply_face_count(path) > 0
    return suffix in MESH_EXTENSIONS


def _ply_face_count(path: Path) -> int:
    """Number of faces declared in a PLY header (0 for point clouds)."""
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise DatasetFormatError(path, "not a PLY file (first line is not 'ply')")
        for line in f:
            words = line.split()
            if words[:1] == [b"end_header"]:
                return 0
            if words[:2] == [b"element", b"face"] and len(words) == 3:
                try:
                    return int(words[2])
                except ValueError:
                    raise DatasetFormatError(path, f"bad PLY line {line!r}") from None
    raise DatasetFormatError(path, "PLY header has no 'end_header'")


def read_mesh(path: str | os.PathLike, *, colors: bool = False) -> Mesh:
    """A mesh file -> `Mesh` (trimesh; polygons triangulated, multi-object files merged); its
    colours only with `colors`. map3d's one mesh reader (`shape_folder`, `map3d predict`, the
    real-shape corpus). Raises `DatasetFormatError` naming `path` for an unreadable file, no
    vertices or faces, face indices out of range or non-finite vertices."""
    path = Path(path)
    try:
        import trimesh
    except ImportError:
        raise MissingDependencyError(
            f"{path}: reading {path.suffix} meshes needs trimesh: pip install 'map3d[meshes]'"
        ) from None
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as error:  # noqa: BLE001 - trimesh raises many types for damaged files
        problem = f"unreadable mesh: {type(error).__name__}: {error}"
        raise DatasetFormatError(path, problem) from None
    vertices = np.asarray(getattr(mesh, "vertices", np.empty((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.empty((0, 3))), dtype=np.int64).reshape(-1, 3)
    if len(vertices) == 0 or len(faces) == 0:
        raise DatasetFormatError(path, f"empty mesh: {len(vertices)} vertices, {len(faces)} faces")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise DatasetFormatError(
            path, f"face index out of range [0, {len(vertices)}): {faces.min()}..{faces.max()}"
        )
    _require_finite(vertices, path)
    if not colors:
        return Mesh(vertices, faces)
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture":
        try:
            visual = visual.to_color()  # texture colours sampled at the vertices' UVs
        except Exception:  # noqa: BLE001 - missing or unreadable texture image: no colours
            return Mesh(vertices, faces)
    kind = getattr(visual, "kind", None)
    if kind == "vertex":
        return Mesh(vertices, faces, vertex_colors=_unit_colors(visual.vertex_colors[:, :3]))
    if kind == "face":
        return Mesh(vertices, faces, face_colors=_unit_colors(visual.face_colors[:, :3]))
    return Mesh(vertices, faces)


def _require_finite(vertices: np.ndarray, path: str | os.PathLike) -> None:
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise DatasetFormatError(
            path, f"non-finite vertex coordinate (NaN/inf) at vertex {int(np.argmax(bad))}"
        )


def _unit_colors(colors) -> np.ndarray:
    """RGB as uint8 [0, 255] or float ([0, 1], or [0, 255] when larger) -> float64 in [0, 1]."""
    colors = np.asarray(colors)
    if np.issubdtype(colors.dtype, np.integer) or colors.max(initial=0) > 1.0:
        return colors.astype(np.float64) / 255.0
    return colors.astype(np.float64)


def sample_surface(
    vertices: np.ndarray,
    faces: np.ndarray,
    num_points: int,
    rng: np.random.Generator,
    *,
    path: str | os.PathLike = "<mesh>",
    normals: bool = False,
    vertex_colors: np.ndarray | None = None,
    face_colors: np.ndarray | None = None,
) -> np.ndarray:
    """Area-weighted uniform samples of a triangle mesh; map3d's one surface sampler (the
    synthetic shapes, `shape_folder` meshes, the real-shape corpus).

    vertices (V,3), faces (F,3) -> (num_points, 3) float64, then +3 unit face normals with
    `normals`, then +3 colours when `vertex_colors` (V,3; interpolated) or `face_colors` (F,3)
    are given. Draws from `rng`, in this order: one uniform per point on the cumulative area
    (the face), then two (the position in it). Faces of zero area are never drawn; a mesh whose
    faces all have zero area, or with non-finite vertices, raises `DatasetFormatError` naming
    `path`.
    """
    _require_finite(vertices, path)
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]  # (F,3) each
    cross = np.cross(b - a, c - a)
    twice_area = np.linalg.norm(cross, axis=1)
    drawable = np.flatnonzero(twice_area > 0)
    if len(drawable) == 0:
        raise DatasetFormatError(path, f"all {len(faces)} faces have zero area")
    cumulative = np.cumsum(twice_area[drawable])
    chosen = np.searchsorted(cumulative, rng.uniform(0.0, cumulative[-1], num_points))
    chosen = drawable[np.minimum(chosen, len(drawable) - 1)]
    r1, r2 = np.sqrt(rng.uniform(size=(num_points, 1))), rng.uniform(size=(num_points, 1))
    points = (1 - r1) * a[chosen] + r1 * (1 - r2) * b[chosen] + r1 * r2 * c[chosen]
    columns = [points]
    if normals:
        columns.append(cross[chosen] / twice_area[chosen, None])
    if vertex_colors is not None:
        weights = np.concatenate([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)  # of a, b, c
        columns.append((vertex_colors[faces[chosen]] * weights[:, :, None]).sum(axis=1))
    elif face_colors is not None:
        columns.append(face_colors[chosen])
    return np.concatenate(columns, axis=1) if len(columns) > 1 else points


def read_cloud(
    path: str | os.PathLike, *, normals: bool = False, colors: bool = False
) -> np.ndarray:
    """A point-cloud file -> (N,3 [+3 normals] [+3 colours in [0, 1]]) float32, N >= 1, all
    finite."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".ply": _read_ply, ".pcd": _read_pcd, ".npy": _read_npy, ".npz": _read_npz}
    columns = readers.get(suffix, _read_text)(path)  # name -> (N,) arrays, or "table" (N,C)
    if "table" in columns:
        table = columns["table"]
        if table.ndim != 2 or table.shape[1] < 3:
            raise DatasetFormatError(path, f"expected an (N,C>=3) point array, got {table.shape}")
        xyz = table[:, :3]
        normal = columns.get("normals", table[:, 3:6] if table.shape[1] >= 6 else None)
        color = columns.get("colors")
    else:
        missing = [k for k in ("x", "y", "z") if k not in columns]
        if missing:
            has = " ".join(sorted(columns))
            raise DatasetFormatError(path, f"no {' '.join(missing)} field(s); has {has}")
        xyz = np.stack([columns[k] for k in ("x", "y", "z")], axis=1)
        normal = next(
            (np.stack([columns[k] for k in names], axis=1)
             for names in (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))
             if all(k in columns for k in names)),
            columns.get("normals"),
        )  # fmt: skip
        color = columns.get("colors", _packed_rgb(columns.get("rgb", columns.get("rgba"))))
    if not np.issubdtype(np.asarray(xyz).dtype, np.number):
        raise DatasetFormatError(path, f"expected numeric coordinates, got {xyz.dtype}")
    cloud = np.asarray(xyz, dtype=np.float64)
    if normals:
        if normal is None:
            raise DatasetFormatError(path, "normals=True but the file has no normals")
        cloud = np.concatenate([cloud, np.asarray(normal, dtype=np.float64)], axis=1)
    if colors:
        if color is None:
            raise DatasetFormatError(path, "colors=True but the file has no named colours")
        cloud = np.concatenate([cloud, _unit_colors(color)], axis=1)
    finite = np.isfinite(cloud).all(axis=1)
    if suffix == ".pcd":
        cloud = cloud[finite]  # NaN marks "no measurement" in PCD files
    elif not finite.all():
        row = int(np.argmax(~finite))
        raise DatasetFormatError(path, f"non-finite coordinate (NaN/inf) in point {row}")
    if len(cloud) == 0:
        raise DatasetFormatError(path, "no points")
    return cloud.astype(np.float32)


def _read_ply(path: Path) -> dict[str, np.ndarray]:
    from map3d.viz.ply import read_ply

    try:
        ply = read_ply(path)
    except ValueError as error:
        raise DatasetFormatError(path, f"unreadable PLY: {error}") from None
    columns = {"x": ply.points[:, 0], "y": ply.points[:, 1], "z": ply.points[:, 2]}
    columns.update(ply.extra or {})
    if ply.colors is not None:
        columns["colors"] = ply.colors
    return columns


def _packed_rgb(values) -> np.ndarray | None:
    """PCD `rgb`/`rgba`: one 32-bit value per point (stored as float or integer) -> (N,3) uint8."""
    if values is None:
        return None
    values = np.asarray(values)
    packed = (
        values.astype(np.float32).view(np.uint32)
        if values.dtype.kind == "f"
        else (values.astype(np.uint32))
    )
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], 1).astype(np.uint8)


def _read_npy(path: Path) -> dict[str, np.ndarray]:
    from map3d.data.files import load_npy

    return {"table": load_npy(path)}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as error:
        raise DatasetFormatError(path, f"unreadable .npz: {error}") from None
    key = next((k for k in ("points", "xyz") if k in arrays), None)
    if key is None and len(arrays) == 1:
        (key,) = arrays
    if key is None:
        raise DatasetFormatError(
            path, f"expected key 'points' or 'xyz' (or a single array), has {sorted(arrays)}"
        )
    return {"table": arrays[key], **{k: arrays[k] for k in ("normals", "colors") if k in arrays}}


def _read_text(path: Path) -> dict[str, np.ndarray]:
    """`.xyz` / `.txt`: numbers separated by spaces or commas, `#` comments."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetFormatError(path, f"unreadable text file: {error}") from None
    lines = text.replace(",", " ").splitlines()
    try:  # fast path; the loop below finds the line to blame
        table = np.loadtxt(lines, dtype=np.float64, comments="#", ndmin=2)
        if table.size:
            return {"table": table}
    except ValueError:
        pass
    rows = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].split()
        if not line:
            continue
        try:
            rows.append([float(v) for v in line])
        except ValueError:
            raise DatasetFormatError(path, "not numeric", f"line {number}") from None
        if len(rows[-1]) != len(rows[0]):
            raise DatasetFormatError(
                path, f"{len(rows[-1])} values, earlier lines have {len(rows[0])}", f"line {number}"
            )
    if not rows:
        raise DatasetFormatError(path, "no points")
    return {"table": np.asarray(rows, dtype=np.float64)}


def _read_pcd(path: Path) -> dict[str, np.ndarray]:
    """PCD v0.7 (Point Cloud Library): ASCII and binary data here, binary_compressed via Open3D."""
    header: dict[str, list[str]] = {}
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                raise DatasetFormatError(path, "PCD header has no DATA line")
            words = line.decode("ascii", errors="replace").split()
            if not words or words[0].startswith("#"):
                continue
            header[words[0].upper()] = words[1:]
            if words[0].upper() == "DATA":
                break
        body = f.read()
    try:
        fields = header["FIELDS"]
        sizes = [int(v) for v in header["SIZE"]]
        kinds = header["TYPE"]
        counts = [int(v) for v in header.get("COUNT", ["1"] * len(fields))]
        n = int(header["POINTS"][0])
        mode = header["DATA"][0].lower()
        dtype = np.dtype([
            (name, ("<" + _PCD_TYPES[(kind.upper(), size)], (count,)) if count > 1
             else "<" + _PCD_TYPES[(kind.upper(), size)])
            for name, size, kind, count in zip(fields, sizes, kinds, counts)
        ])  # fmt: skip
    except (KeyError, ValueError, IndexError) as error:
        problem = f"bad PCD header ({type(error).__name__}: {error})"
        raise DatasetFormatError(path, problem) from None
    if mode == "ascii":
        try:
            table = np.loadtxt(body.decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
        except ValueError as error:
            raise DatasetFormatError(path, f"bad PCD ascii data: {error}") from None
        if table.shape != (n, sum(counts)):
            raise DatasetFormatError(path, f"expected {n} rows of {sum(counts)}, got {table.shape}")
        starts = np.cumsum([0] + counts)
        return {name: table[:, starts[i]] for i, name in enumerate(fields)}
    if mode == "binary":
        if len(body) < n * dtype.itemsize:
            raise DatasetFormatError(
                path, f"truncated PCD: {n} points x {dtype.itemsize} bytes, got {len(body)} bytes"
            )
        data = np.frombuffer(body[: n * dtype.itemsize], dtype=dtype)
        return {name: data[name] for name in fields if data[name].ndim == 1}
    if mode == "binary_compressed":
        return _read_pcd_open3d(path)
    raise DatasetFormatError(path, f"unknown PCD DATA mode {mode!r}")


def _read_pcd_open3d(path: Path) -> dict[str, np.ndarray]:
    try:
        import open3d
    except ImportError:
        raise MissingDependencyError(
            f"{path}: binary_compressed PCD needs Open3D: pip install 'map3d[viz]'"
        ) from None
    cloud = open3d.io.read_point_cloud(str(path))
    points = np.asarray(cloud.points)
    columns = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]} if len(points) else {}
    if not columns:
        raise DatasetFormatError(path, "no points (or unreadable binary_compressed PCD)")
    if cloud.has_normals():
        columns["normals"] = np.asarray(cloud.normals)
    if cloud.has_colors():
        columns["colors"] = np.asarray(cloud.colors)
    return columns
