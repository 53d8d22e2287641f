"""Small folders of procedural shapes in every format `shape_folder` reads, written by tests.

Meshes (boxes, spheres, cones) come from `trimesh.creation`; point clouds are their surface
samples written in the point-cloud formats by hand (PCD, XYZ, TXT) or with numpy / map3d.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from map3d.viz.ply import write_ply

MESH_FORMATS = (".obj", ".off", ".stl", ".ply")
CLOUD_FORMATS = ("cloud.ply", ".pcd", "binary.pcd", ".xyz", ".txt", ".npy", ".npz")


def make_mesh(kind: str, rng: np.random.Generator):
    """A random-sized, off-centre trimesh of `kind` ("box", "sphere" or "cone")."""
    import trimesh

    scale = rng.uniform(0.5, 2.0)
    if kind == "box":
        mesh = trimesh.creation.box(extents=rng.uniform(0.5, 2.0, 3))
    elif kind == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=2, radius=scale)
    else:
        mesh = trimesh.creation.cone(radius=scale, height=2 * scale, sections=24)
    mesh.apply_translation(rng.uniform(-3, 3, 3))
    return mesh


def write_cloud(path: Path, points: np.ndarray, normals: np.ndarray, fmt: str) -> Path:
    """Write (N,3) points and normals in point-cloud format `fmt` (a CLOUD_FORMATS entry)."""
    path = path.with_name(path.stem + ("_" + fmt.split(".")[0] if fmt[0] != "." else ""))
    path = path.with_suffix("." + fmt.rsplit(".", 1)[1])
    table = np.concatenate([points, normals], axis=1).astype(np.float32)
    if fmt == "cloud.ply":
        write_ply(path, points)
    elif fmt in (".pcd", "binary.pcd"):
        binary = fmt == "binary.pcd"
        header = (
            "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
            "FIELDS x y z normal_x normal_y normal_z\nSIZE 4 4 4 4 4 4\nTYPE F F F F F F\n"
            f"COUNT 1 1 1 1 1 1\nWIDTH {len(table)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
            f"POINTS {len(table)}\nDATA {'binary' if binary else 'ascii'}\n"
        )
        body = (
            table.astype("<f4").tobytes()
            if binary
            else "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in table).encode()
        )
        path.write_bytes(header.encode() + body)
    elif fmt == ".xyz":
        np.savetxt(path, points, fmt="%.6f")
    elif fmt == ".txt":
        np.savetxt(path, table, fmt="%.6f", delimiter=",")
    elif fmt == ".npy":
        np.save(path, points.astype(np.float32))
    else:
        np.savez(path, points=points, normals=normals)
    return path


def write_shape(folder: Path, name: str, kind: str, fmt: str, rng: np.random.Generator) -> Path:
    """One shape of `kind` as `folder/name.<ext>` in format `fmt` (mesh or cloud)."""
    folder.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(kind, rng)
    if fmt in MESH_FORMATS:
        path = folder / f"{name}{fmt}"
        mesh.export(path)
        return path
    points, faces = mesh.sample(int(rng.integers(300, 1500)), return_index=True)
    return write_cloud(folder / name, points, mesh.face_normals[faces], fmt)


def make_shape_folder(
    root,
    *,
    classes=("box", "sphere"),
    per_class: int = 6,
    formats=None,
    seed: int = 0,
    labelled: bool = True,
) -> Path:
    """root/<class>/<shape> (or root/<shape> when not `labelled`), cycling through `formats`
    (default: every mesh and cloud format). Returns root."""
    rng = np.random.default_rng(seed)
    formats = formats or MESH_FORMATS + CLOUD_FORMATS
    root = Path(root)
    i = 0
    for kind in classes:
        for j in range(per_class):
            folder = root / kind if labelled else root
            write_shape(folder, f"{kind}{j:03d}", kind, formats[i % len(formats)], rng)
            i += 1
    return root
