"""`shape_folder`: every format, surface sampling, labels and splits, bad files, the cache."""

import logging
import os
import sys

import numpy as np
import pytest
import torch

from map3d.data import DatasetFormatError, build_dataset
from map3d.data import shape_folder as shape_folder_module
from map3d.data.shapes import read_points, sample_surface
from map3d.viz.ply import write_ply
from tests.data.shape_fixtures import (
    CLOUD_FORMATS,
    MESH_FORMATS,
    make_shape_folder,
    write_shape,
)

pytest.importorskip("trimesh", reason="mesh formats need trimesh (pip install 'map3d[meshes]')")


def folder(root, **options):
    return build_dataset("shape_folder", root=root, **{"split": "all", **options})


def test_every_format_is_read_normalized_and_labelled(tmp_path):
    root = make_shape_folder(tmp_path / "shapes", per_class=len(MESH_FORMATS + CLOUD_FORMATS))
    ds = folder(root, points_per_shape=512)
    suffixes = {os.path.splitext(path)[1] for path, _ in ds.entries}
    assert suffixes == {".obj", ".off", ".stl", ".ply", ".pcd", ".xyz", ".txt", ".npy", ".npz"}
    assert ds.class_names == ["box", "sphere"] and ds.num_classes == 2 and len(ds) == 22
    for i in range(len(ds)):
        item = ds[i]
        points = item["points"]
        assert points.shape == (512, 3) and points.dtype == torch.float32
        assert torch.isfinite(points).all()
        assert points.mean(0).abs().max() < 1e-4
        assert points.norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)
        assert item["label"] == ds.class_names.index(item["path"].split("/")[0])


def test_npoints_subsets_then_normalizes_and_normals_are_kept(tmp_path):
    root = make_shape_folder(tmp_path / "s", per_class=2, formats=(".obj", ".txt"))
    for sampling in ("random", "fps"):
        item = folder(root, npoints=100, points_per_shape=400, sampling=sampling)[0]
        assert item["points"].shape == (100, 3)
        assert item["points"].norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)
    item = folder(root, normals=True, points_per_shape=300)[1]
    assert item["points"].shape == (300, 6)
    assert torch.allclose(item["points"][:, 3:].norm(dim=1), torch.ones(300), atol=1e-4)


def test_surface_sampling_is_area_weighted_and_seeded():
    # two triangles of areas 0.5 and 4.5, far apart
    vertices = np.array(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [10, 0, 0], [13, 0, 0], [10, 3, 0]], dtype=float
    )
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    points = sample_surface(vertices, faces, 20000, np.random.default_rng(0))
    assert abs((points[:, 0] < 5).mean() - 0.1) < 0.01
    small = points[points[:, 0] < 5]
    assert (small[:, :2] >= -1e-6).all() and (small[:, 0] + small[:, 1] <= 1 + 1e-6).all()
    again = sample_surface(vertices, faces, 20000, np.random.default_rng(0))
    assert np.array_equal(points, again)
    # a zero-area face among good ones is never drawn
    vertices = np.concatenate([vertices, [[50, 0, 0], [51, 0, 0], [52, 0, 0]]])
    points = sample_surface(
        vertices, np.concatenate([faces, [[6, 7, 8]]]), 5000, np.random.default_rng(1)
    )
    assert (points[:, 0] < 20).all()


class _LowestDraws:
    """A generator stand-in whose every uniform draw is its lower bound (0.0)."""

    def uniform(self, low=0.0, high=1.0, size=None):
        return np.full(size, low, dtype=np.float64)


def test_zero_area_faces_are_never_drawn_even_first_and_at_a_zero_draw():
    # the synthetic shapes' poles are such faces: leading, zero area, next to good ones
    vertices = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [2, 0, 0], [0, 2, 0]], float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    points = sample_surface(vertices, faces, 4, _LowestDraws(), normals=True)
    assert points.shape == (4, 6) and np.isfinite(points).all()
    np.testing.assert_array_equal(points[:, 3:], np.tile([0.0, 0.0, 1.0], (4, 1)))
    with pytest.raises(DatasetFormatError, match="<mesh>: all 1 faces have zero area"):
        sample_surface(vertices, faces[:1], 4, np.random.default_rng(0))


def test_mesh_points_lie_on_the_surface(tmp_path):
    import trimesh

    mesh = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    mesh.export(tmp_path / "box.off")
    points = read_points(tmp_path / "box.off", 2000, seed=3)
    assert np.allclose(np.abs(points / [1.0, 0.5, 0.25]).max(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(points, read_points(tmp_path / "box.off", 2000, seed=3))
    assert not np.array_equal(points, read_points(tmp_path / "box.off", 2000, seed=4))


def test_seeded_split_is_stratified_disjoint_and_deterministic(tmp_path):
    root = make_shape_folder(tmp_path / "s", per_class=10, formats=(".npy",))
    train = folder(root, split="train", test_fraction=0.3)
    test = folder(root, split="test", test_fraction=0.3)
    train_paths = {p for p, _ in train.entries}
    test_paths = {p for p, _ in test.entries}
    assert not train_paths & test_paths and len(train_paths | test_paths) == 20
    assert sorted(label for _, label in test.entries) == [0, 0, 0, 1, 1, 1]
    assert test_paths == {p for p, _ in folder(root, split="test", test_fraction=0.3).entries}
    other = folder(root, split="test", test_fraction=0.3, split_seed=1)
    assert test_paths != {p for p, _ in other.entries}


def test_train_test_folders_are_respected(tmp_path):
    make_shape_folder(tmp_path / "s" / "train", per_class=3, formats=(".npy",))
    make_shape_folder(
        tmp_path / "s" / "test", classes=("sphere", "cone"), per_class=1, formats=(".xyz",)
    )
    train = folder(tmp_path / "s", split="train")
    test = folder(tmp_path / "s", split="test")
    assert len(train) == 6 and len(test) == 2
    assert train.class_names == test.class_names == ["box", "cone", "sphere"]
    assert test[0]["path"] == "test/cone/cone000.xyz" and test[0]["label"] == 1


def test_unlabelled_folders(tmp_path):
    root = make_shape_folder(tmp_path / "s", per_class=3, formats=(".npy", ".stl"), labelled=False)
    ds = folder(root)
    assert ds.num_classes is None and "label" not in ds[0]
    nested = make_shape_folder(tmp_path / "n", per_class=2, formats=(".npy",))
    assert "label" not in folder(nested, labels=False)[0]
    (nested / "loose.npy").write_bytes((root / "box000.npy").read_bytes())
    assert folder(nested).num_classes is None  # a loose file: not an ImageFolder-style tree
    with pytest.raises(DatasetFormatError, match="loose.npy.*not inside a class folder"):
        folder(nested, labels=True)


PCD_HEAD = b"VERSION 0.7\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
BAD_FILES = {
    "empty.obj": (b"# no geometry\n", "empty mesh"),
    "flat.obj": (b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "zero area"),
    "nan.obj": (b"v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n", "non-finite vertex"),
    "garbage.stl": (b"solid x\nthis is not an stl\n", "empty mesh|unreadable mesh"),
    "words.xyz": (b"1 2 3\nhello world again\n", r"\(line 2\): not numeric"),
    "inf.txt": (b"1,2,3\ninf,0,0\n", "non-finite coordinate"),
    "ragged.xyz": (b"1 2 3\n4 5\n", r"\(line 2\): 2 values, earlier lines have 3"),
    "short.npy": (b"\x93NUMPY\x01\x00", "unreadable .npy"),
    "cut.pcd": (PCD_HEAD + b"FIELDS x y z\nPOINTS 10\nDATA binary\n\0", "truncated PCD"),
    "noxyz.pcd": (PCD_HEAD + b"FIELDS a b c\nPOINTS 1\nDATA ascii\n1 2 3\n", "no x y z field"),
    "rows.pcd": (PCD_HEAD + b"FIELDS x y z\nPOINTS 2\nDATA ascii\n1 2 3\n", "expected 2 rows"),
    "bad.ply": (
        b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nend_header\n1\n",
        "unreadable PLY",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_named_and_skipped_only_on_request(tmp_path, caplog, name):
    root = make_shape_folder(tmp_path / "s", per_class=2, formats=(".npy",), labelled=False)
    content, problem = BAD_FILES[name]
    (root / name).write_bytes(content)
    with pytest.raises(DatasetFormatError, match=problem) as error:
        folder(root)
    message = str(error.value)
    assert message.startswith(str(root / name)) and "\n" not in message
    with caplog.at_level(logging.WARNING, logger="map3d"):
        ds = folder(root, skip_bad=True)
    assert len(ds) == 4 and all(p.name != name for p, _ in ds.entries)
    assert any(str(root / name) in r.getMessage() for r in caplog.records)


def test_every_bad_file_is_logged_before_the_first_is_raised(tmp_path, caplog):
    root = make_shape_folder(tmp_path / "s", per_class=1, formats=(".npy",), labelled=False)
    for name in ("a.xyz", "b.xyz", "c.xyz"):
        (root / name).write_text("not a point\n")
    with (
        caplog.at_level(logging.WARNING, logger="map3d"),
        pytest.raises(
            DatasetFormatError, match=r"a.xyz .*not numeric \(and 2 more bad file\(s\), logged\)"
        ),
    ):
        folder(root)
    assert [r.getMessage().split(": ", 1)[1].split(" (")[0] for r in caplog.records] == [
        f"bad file: {root / n}" for n in ("a.xyz", "b.xyz", "c.xyz")
    ]


def test_missing_trimesh_names_the_extra(tmp_path, monkeypatch):
    root = make_shape_folder(tmp_path / "s", per_class=1, formats=(".obj",))
    monkeypatch.setitem(sys.modules, "trimesh", None)
    with pytest.raises(ImportError, match=r"map3d\[meshes\]"):
        folder(root, cache=False)


def test_cache_is_read_back_and_invalidated_when_a_file_changes(tmp_path, monkeypatch):
    root = make_shape_folder(tmp_path / "s", per_class=2, formats=(".obj", ".xyz"))
    first = folder(root, points_per_shape=256)
    entries = sorted((root / ".map3d_cache" / "v2").glob("*.npy"))
    assert len(entries) == 4
    before = first[0]["points"]

    calls = []
    real = shape_folder_module.read_points
    monkeypatch.setattr(
        shape_folder_module, "read_points", lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    )
    second = folder(root, points_per_shape=256)
    assert torch.equal(second[0]["points"], before) and calls == []  # arrays only

    changed, _ = second.entries[0]
    rng = np.random.default_rng(7)
    write_shape(changed.parent, changed.stem, "cone", changed.suffix, rng)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = folder(root, points_per_shape=256)
    assert calls == [changed]  # only the edited file is read again
    assert not torch.equal(third[0]["points"], before)

    folder(root, points_per_shape=128)  # other sampling parameters: new entries
    assert len(calls) == 5
    elsewhere = tmp_path / "cache"
    folder(root, points_per_shape=256, cache_dir=elsewhere)
    assert len(list((elsewhere / "v2").glob("*.npy"))) == 4


def test_registry_options_are_checked(tmp_path):
    root = make_shape_folder(tmp_path / "s", per_class=1, formats=(".npy",))
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset("shape_folder", root=root, split="val")
    with pytest.raises(ValueError, match="npoints <= points_per_shape"):
        folder(root, npoints=10000)
    with pytest.raises(FileNotFoundError, match="shape folder"):
        folder(tmp_path / "missing")
    make_shape_folder(tmp_path / "own" / "train", per_class=1, formats=(".npy",))
    with pytest.raises(DatasetFormatError, match=r"no shape files in split 'test' \(under"):
        folder(tmp_path / "own", split="test")


def test_clouds_written_by_open3d(tmp_path):
    try:
        import open3d as o3d
    except (ImportError, OSError) as error:
        pytest.skip(f"Open3D unavailable: {error}")
    rng = np.random.default_rng(0)
    points, normals = rng.random((50, 3)), np.tile([0.0, 0.0, 1.0], (50, 1))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.normals = o3d.utility.Vector3dVector(normals)
    expected = np.concatenate([points, normals], axis=1).astype(np.float32)
    for name, options in (
        ("a.pcd", {}),
        ("b.pcd", {"compressed": True}),
        ("c.ply", {}),
        ("d.ply", {"write_ascii": True}),
    ):
        o3d.io.write_point_cloud(str(tmp_path / name), cloud, **options)
        got = read_points(tmp_path / name, 50, normals=True)
        order = np.lexsort(got.T[::-1])
        np.testing.assert_allclose(got[order], expected[np.lexsort(expected.T[::-1])], atol=1e-6)


def test_colours_as_extra_channels(tmp_path):
    import trimesh

    rng = np.random.default_rng(0)
    mesh = trimesh.creation.box()
    mesh.visual.vertex_colors = np.tile([255, 0, 0, 255], (len(mesh.vertices), 1))
    mesh.export(tmp_path / "red.ply")
    red = read_points(tmp_path / "red.ply", 200, normals=True, colors=True)
    assert red.shape == (200, 9)
    np.testing.assert_allclose(red[:, 6:], np.tile([1.0, 0.0, 0.0], (200, 1)), atol=1e-6)

    points = rng.random((30, 3))
    colors = rng.integers(0, 256, (30, 3), dtype=np.uint8)
    write_ply(tmp_path / "c.ply", points, colors=colors)
    packed = (
        (colors[:, 0].astype(np.uint32) << 16)
        | (colors[:, 1].astype(np.uint32) << 8)
        | (colors[:, 2])
    )
    table = np.concatenate([points.astype("<f4"), packed.view("<f4")[:, None]], axis=1)
    (tmp_path / "c.pcd").write_bytes(
        b"VERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
        b"WIDTH 30\nHEIGHT 1\nPOINTS 30\nDATA binary\n" + table.astype("<f4").tobytes()
    )
    np.savez(tmp_path / "c.npz", points=points, colors=colors)
    for name in ("c.ply", "c.pcd", "c.npz"):
        got = read_points(tmp_path / name, 30, colors=True)
        order, expected = np.lexsort(got[:, :3].T), np.lexsort(points.T)
        np.testing.assert_allclose(got[order, 3:], colors[expected] / 255.0, atol=1e-6)
    np.save(tmp_path / "plain.npy", points)
    with pytest.raises(DatasetFormatError, match="plain.npy: colors=True but the file has no"):
        read_points(tmp_path / "plain.npy", 30, colors=True)
    with pytest.raises(DatasetFormatError, match="box.obj: colors=True but the mesh has no"):
        trimesh.creation.box().export(tmp_path / "box.obj")
        read_points(tmp_path / "box.obj", 30, colors=True)
    assert folder(tmp_path, colors=True, skip_bad=True)[0]["points"].shape[1] == 6
