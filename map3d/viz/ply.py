"""Point-cloud PLY files: a binary little-endian writer and a reader, no third-party dependency.

The writer stores one `vertex` element with `x y z` (float32), optionally `red green blue`
(uchar), optionally an integer `layer` (int32) saying which part of a figure a point belongs
to (see `map3d.viz.layers` for the reconstruction layers) and other named integer properties
(e.g. `part` labels). Open3D, MeshLab and CloudCompare read
these files; extra properties such as `layer` are ignored by viewers that do not know them.

The reader understands what common tools write for point clouds: `ascii`, `binary_little_endian`
and `binary_big_endian`, any scalar vertex properties (Open3D writes `double` coordinates), and
other elements (faces, ...) after the vertex element, which are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from map3d.atomic import atomic_write

# PLY scalar type names (both spellings of the specification) -> numpy type, no byte order.
_PLY_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip

_BYTE_ORDER = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "="}


@dataclass
class PlyPointCloud:
    """A point cloud read from a PLY file.

    points: (N,3) float32; colors: (N,3) uint8 or None; layer: (N,) int32 or None;
    extra: any other vertex properties, name -> (N,) array.
    """

    points: np.ndarray
    colors: np.ndarray | None = None
    layer: np.ndarray | None = None
    extra: dict[str, np.ndarray] | None = None


def write_ply(
    path: str | os.PathLike,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    layer: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a binary little-endian PLY point cloud atomically and return its path.

    points: (N,3) float, stored as float32. colors: (N,3) uint8 in [0,255], or float in [0,1]
    (scaled and rounded). layer: (N,) integer, stored as int32 property `layer`. extra: more
    (N,) integer arrays, each stored as an int32 property of its name.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N,3), got {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise ValueError(f"points must be numeric, got dtype {points.dtype}")
    n = points.shape[0]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = _as_uint8_colors(colors, n)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    ints = dict(extra or {})
    if layer is not None:
        ints = {"layer": layer, **ints}
    for name, values in ints.items():
        values = np.asarray(values)
        if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"{name} must be an integer array of shape ({n},), got {values.dtype} "
                f"{values.shape}"
            )
        if name in ("x", "y", "z", "red", "green", "blue") or not name.isidentifier():
            raise ValueError(f"extra property name {name!r} is taken or not a plain name")
        fields.append((name, "<i4"))

    vertices = np.empty(n, dtype=fields)
    vertices["x"], vertices["y"], vertices["z"] = points.astype(np.float32).T
    if colors is not None:
        vertices["red"], vertices["green"], vertices["blue"] = colors.T
    for name, values in ints.items():
        vertices[name] = values

    type_names = {"<f4": "float", "u1": "uchar", "<i4": "int"}
    header = ["ply", "format binary_little_endian 1.0", "comment written by map3d"]
    if layer is not None:
        header.append("comment layer: 0 visible, 1 reconstructed masked, 2 ground-truth masked")
    header.append(f"element vertex {n}")
    header += [f"property {type_names[t]} {name}" for name, t in fields]
    header.append("end_header")

    path = Path(path)
    with atomic_write(path) as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(vertices.tobytes())
    return path


def read_ply(path: str | os.PathLike) -> PlyPointCloud:
    """Read the vertex element of a PLY file (see the module docstring for what is supported)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PLY file not found: {path}")
    with open(path, "rb") as f:
        fmt, elements = _read_header(f, path)
        vertex = None
        for name, count, props in elements:
            if any(kind == "list" for _, kind, _ in props):
                if vertex is None:
                    raise ValueError(f"{path}: list property in element {name!r} before 'vertex'")
                break  # everything we need has been read
            data = _read_element(f, fmt, count, props, path, name)
            if name == "vertex":
                vertex = data
                break
    if vertex is None:
        raise ValueError(f"{path}: no 'vertex' element")
    names = vertex.dtype.names
    missing = [c for c in ("x", "y", "z") if c not in names]
    if missing:
        raise ValueError(f"{path}: vertex element lacks properties {missing}")
    points = np.stack([vertex[c] for c in ("x", "y", "z")], axis=1).astype(np.float32)
    colors = None
    if all(c in names for c in ("red", "green", "blue")):
        colors = np.stack([vertex[c] for c in ("red", "green", "blue")], axis=1)
        if colors.dtype != np.uint8:  # some tools store float colours in [0,1]
            colors = _as_uint8_colors(colors.astype(np.float64), len(points))
    layer = vertex["layer"].astype(np.int32) if "layer" in names else None
    known = {"x", "y", "z", "red", "green", "blue", "layer"}
    extra = {n: np.ascontiguousarray(vertex[n]) for n in names if n not in known}
    return PlyPointCloud(points=points, colors=colors, layer=layer, extra=extra or None)


def _as_uint8_colors(colors: np.ndarray, n: int) -> np.ndarray:
    colors = np.asarray(colors)
    if colors.shape != (n, 3):
        raise ValueError(f"colors must have shape ({n},3), got {colors.shape}")
    if colors.dtype == np.uint8:
        return colors
    if np.issubdtype(colors.dtype, np.floating):
        return np.clip(np.rint(colors * 255.0), 0, 255).astype(np.uint8)
    if (
        np.issubdtype(colors.dtype, np.integer)
        and colors.min(initial=0) >= 0
        and colors.max(initial=0) <= 255
    ):
        return colors.astype(np.uint8)
    raise ValueError(f"colors must be uint8 in [0,255] or float in [0,1], got {colors.dtype}")


def _read_header(f, path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str, str]]]]]:
    """Parse the header; returns (format, [(element, count, [(prop, 'scalar'|'list', type)])])."""
    if f.readline().strip() != b"ply":
        raise ValueError(f"{path}: not a PLY file (first line is not 'ply')")
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str, str]]]] = []
    while True:
        line = f.readline()
        if not line:
            raise ValueError(f"{path}: header has no 'end_header'")
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            if len(words) < 2 or words[1] not in _BYTE_ORDER:
                raise ValueError(f"{path}: unsupported PLY format line {line!r}")
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise ValueError(f"{path}: property before any element")
            if words[1] == "list":
                elements[-1][2].append((words[-1], "list", words[3]))
            else:
                if words[1] not in _PLY_TYPES:
                    raise ValueError(f"{path}: unknown property type {words[1]!r}")
                elements[-1][2].append((words[2], "scalar", words[1]))
    if fmt is None:
        raise ValueError(f"{path}: header has no 'format' line")
    return fmt, elements


def _read_element(f, fmt: str, count: int, props, path: Path, name: str) -> np.ndarray:
    order = _BYTE_ORDER[fmt]
    dtype = np.dtype([(p, order + _PLY_TYPES[t]) for p, _, t in props])
    if fmt == "ascii":
        rows = [f.readline().split() for _ in range(count)]
        if any(len(r) != len(props) for r in rows):
            raise ValueError(f"{path}: element {name!r} has rows of the wrong length")
        data = np.empty(count, dtype=dtype)
        if count:
            columns = np.array(rows, dtype=object).T
            for (p, _, _), column in zip(props, columns):
                data[p] = column.astype(np.float64).astype(dtype[p])
        return data
    raw = f.read(dtype.itemsize * count)
    if len(raw) != dtype.itemsize * count:
        raise ValueError(
            f"{path}: truncated element {name!r}: expected {count} x {dtype.itemsize} bytes, "
            f"got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).copy()
