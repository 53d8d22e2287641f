"""The real-shape corpus builder on a fake mesh package (and on pybullet_data if installed)."""

import csv
import importlib.util
import re
import struct

import numpy as np
import pytest

from map3d.data import build_corpus as build_corpus_module
from map3d.data import build_dataset, shapes, synthetic
from map3d.data.build_corpus import Source, build_corpus, installed_source, main
from map3d.data.shapes import read_mesh, sample_surface

CUBE_V = [(x, y, z) for x in (0, 2) for y in (0, 2) for z in (0, 2)]
CUBE_QUADS = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]


def _obj(vertices, faces, *, slashes=False) -> str:
    lines = ["# generated", "o shape"] + [f"v {x} {y} {z}" for x, y, z in vertices]
    lines += ["vn 0 0 1", "vt 0 0"]
    for face in faces:
        tokens = [f"{i}/1/1" if slashes else str(i) for i in face]
        lines.append("f " + " ".join(tokens))
    return "\n".join(lines) + "\n"


def _binary_stl(triangles) -> bytes:
    data = b"\0" * 80 + struct.pack("<I", len(triangles))
    for tri in triangles:
        data += struct.pack("<3f", 0, 0, 0) + b"".join(struct.pack("<3f", *v) for v in tri)
        data += b"\0\0"
    return data


def _ascii_stl(triangles) -> str:
    body = "".join(
        "facet normal 0 0 0\n outer loop\n"
        + "".join(f"  vertex {x} {y} {z}\n" for x, y, z in tri)
        + " endloop\nendfacet\n"
        for tri in triangles
    )
    return f"solid t\n{body}endsolid t\n"


TETRA = [
    ((0, 0, 0), (1, 0, 0), (0, 1, 0)),
    ((0, 0, 0), (0, 1, 0), (0, 0, 1)),
    ((0, 0, 0), (0, 0, 1), (1, 0, 0)),
    ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
]
TALL = [
    ((0, 0, 0), (1, 0, 0), (0, 0, 4)),
    ((0, 0, 0), (0, 1, 0), (0, 0, 4)),
    ((0, 0, 0), (1, 0, 0), (0, 1, 0)),
    ((1, 0, 0), (0, 1, 0), (0, 0, 4)),
]


@pytest.fixture
def fake_package(tmp_path):
    root = tmp_path / "fakepkg"
    (root / "toys" / "collision").mkdir(parents=True)
    (root / "LICENSE.txt").write_text("zlib")
    (root / "toys" / "cube.obj").write_text(_obj(CUBE_V, CUBE_QUADS, slashes=True))
    (root / "toys" / "collision" / "cube.obj").write_text(_obj(CUBE_V, CUBE_QUADS))
    (root / "toys" / "cube_copy.stl").write_text(  # same geometry, other format: a duplicate
        _ascii_stl(
            [[CUBE_V[i - 1] for i in (q[0], q[1], q[2])] for q in CUBE_QUADS]
            + [[CUBE_V[i - 1] for i in (q[0], q[2], q[3])] for q in CUBE_QUADS]
        )
    )
    (root / "tetra.STL").write_bytes(_binary_stl(TETRA))
    (root / "tall.stl").write_bytes(_binary_stl(TALL))
    (root / "plane.obj").write_text(
        _obj([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [(1, 2, 3, 4)])
    )
    (root / "broken.obj").write_text(_obj([(0, 0, 0), (1, 0, 0)], [(1, 2, 7)]))
    (root / "points_only.obj").write_text("v 0 0 0\nv 1 1 1\n")
    (root / "notes.txt").write_text("not a mesh")
    return root


def _manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def test_build_corpus_layout_manifest_and_statuses(fake_package, tmp_path):
    out = tmp_path / "corpus"
    logs = []
    rows = build_corpus(
        [Source("fake-pkg", fake_package, "fake-dist", "1.2", "zlib", up="y")],
        out,
        points=512,
        seed=3,
        test_fraction=0.5,
        log=logs.append,
    )
    manifest = _manifest(out)
    assert len(rows) == len(manifest) == 8
    status = {path: row["status"] for path, row in manifest.items()}
    assert status["toys/cube.obj"] == status["tetra.STL"] == status["tall.stl"] == "ok"
    assert status["toys/collision/cube.obj"] == "skipped: collision copy"
    assert status["toys/cube_copy.stl"] == "skipped: duplicate of fake-pkg/toys/cube.obj"
    assert status["plane.obj"] == "skipped: flat"
    # the face index 7 of a 2-vertex file: trimesh fails on it (or map3d's range check would)
    assert re.fullmatch(
        r"bad: (unreadable mesh: IndexError: .*out of bounds|face index out of "
        r"range) .*",
        status["broken.obj"],
    )
    assert status["points_only.obj"] == "bad: empty mesh: 0 vertices, 0 faces"
    assert any("bad mesh fake-pkg/broken.obj" in line for line in logs)
    cube = manifest["toys/cube.obj"]
    assert cube["file"] == "fake_pkg-toys_cube_obj.npy" and cube["points"] == "512"
    assert (cube["version"], cube["licence"], cube["licence_file"]) == (
        "1.2",
        "zlib",
        "LICENSE.txt",
    )
    assert cube["faces"] == "12"

    ok = sorted(row["file"] for row in manifest.values() if row["status"] == "ok")
    lists = {s: (out / "ShapeNet-55" / f"{s}.txt").read_text().split() for s in ("train", "test")}
    assert sorted(lists["train"] + lists["test"]) == ok
    assert sorted(p.name for p in (out / "shapenet_pc").iterdir()) == ok

    points = np.load(out / "shapenet_pc" / cube["file"])
    assert points.dtype == np.float32 and points.shape == (512, 3)
    # ShapeNetCore v2 normalization: bounding box centred at 0 with diagonal 1; on the surface
    side = 1 / np.sqrt(3)
    assert np.allclose(points.max(0), side / 2, atol=0.02)
    assert np.allclose(points.min(0), -side / 2, atol=0.02)
    assert np.allclose(np.abs(points).max(1), side / 2, atol=1e-5)  # every point on a face

    dataset = build_dataset(
        "shapenet55", root=str(out), split="all", npoints=256, stored_points=512
    )
    assert len(dataset) == len(ok)
    assert dataset[0]["points"].shape == (256, 3)


def test_build_corpus_is_seeded(fake_package, tmp_path):
    kwargs = {"points": 128, "test_fraction": 0.0, "log": lambda _: None}
    source = Source("fake", fake_package, up="y")
    build_corpus([source], tmp_path / "a", seed=0, **kwargs)
    build_corpus([source], tmp_path / "b", seed=0, **kwargs)
    build_corpus([source], tmp_path / "c", seed=1, **kwargs)
    name = "fake-tetra_STL.npy"
    a, b, c = (np.load(tmp_path / d / "shapenet_pc" / name) for d in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (tmp_path / "a" / "ShapeNet-55" / "test.txt").read_text() == ""


def test_z_up_meshes_turn_y_up(fake_package, tmp_path):
    build_corpus(
        [Source("z", fake_package, up="z")],
        tmp_path / "z",
        points=256,
        test_fraction=0.0,
        log=lambda _: None,
    )
    tall = np.load(tmp_path / "z" / "shapenet_pc" / "z-tall_stl.npy")
    extent = tall.max(0) - tall.min(0)
    assert extent.argmax() == 1  # tall along z in the file, along y in the corpus


def test_readers_and_area_weighted_sampling(fake_package):
    # one mesh reader and one sampler: shape_folder's, which the synthetic shapes also use
    assert build_corpus_module.read_mesh is shapes.read_mesh
    assert build_corpus_module.sample_surface is shapes.sample_surface is synthetic.sample_surface
    mesh = read_mesh(fake_package / "toys" / "cube.obj")  # quads, `i/j/k` indices
    assert mesh.vertices.shape == (8, 3) and mesh.faces.shape == (12, 3)
    mesh = read_mesh(fake_package / "tetra.STL")
    assert mesh.vertices.shape == (12, 3) and mesh.faces.shape == (4, 3)
    # two triangles of area 1 and 3 in separate planes: ~3/4 of the points on the larger one
    vertices = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 5], [6, 0, 5], [0, 1, 5]], float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    points = sample_surface(vertices, faces, 20000, np.random.default_rng(0))
    assert abs((points[:, 2] > 2.5).mean() - 0.75) < 0.02
    inside = points[points[:, 2] < 2.5]
    assert (inside[:, 0] / 2 + inside[:, 1] <= 1 + 1e-6).all()


def test_cli_with_a_source_folder(fake_package, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(
            ["--out", str(out), "--packages", "--source", f"mine={fake_package}", "--points", "64"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "3 shapes" in text and "bad mesh mine/broken.obj" in text
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--packages"])  # nothing to read
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--packages", "nope"])
    assert "unknown mesh package 'nope'" in capsys.readouterr().err


@pytest.mark.skipif(
    importlib.util.find_spec("pybullet_data") is None,
    reason="pybullet not installed (pip install 'map3d[corpus]')",
)
def test_real_package_pybullet_data(tmp_path):
    source = installed_source("pybullet_data")
    assert source.distribution == "pybullet" and source.version != "unknown"
    rows = build_corpus([source], tmp_path / "real", points=256, limit=25, log=lambda _: None)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(rows) == 25 and len(ok) >= 10
    assert all(r["licence"] == source.licence and r["version"] == source.version for r in rows)
