"""PLY writer/reader: round trip, interoperability with Open3D, foreign encodings, bad input."""

import numpy as np
import pytest

from map3d.viz import read_ply, split_reconstruction, write_ply
from map3d.viz.layers import LAYER_COLORS, LAYER_PREDICTED, LAYER_TARGET, LAYER_VISIBLE


def test_round_trip_points_colors_layer(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(100, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(100, 3), dtype=np.uint8)
    layer = rng.integers(0, 3, size=100)
    path = write_ply(tmp_path / "cloud.ply", points, colors, layer)
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    assert "property int layer" in header
    cloud = read_ply(path)
    np.testing.assert_array_equal(cloud.points, points)
    np.testing.assert_array_equal(cloud.colors, colors)
    np.testing.assert_array_equal(cloud.layer, layer)
    assert cloud.extra is None


def test_extra_integer_properties(tmp_path):
    points = np.zeros((5, 3), dtype=np.float32)
    part = np.array([12, 13, 13, 15, 12])
    cloud = read_ply(write_ply(tmp_path / "parts.ply", points, extra={"part": part}))
    np.testing.assert_array_equal(cloud.extra["part"], part)
    assert cloud.layer is None
    with pytest.raises(ValueError, match="part must be an integer array"):
        write_ply(tmp_path / "bad.ply", points, extra={"part": part[:3]})
    with pytest.raises(ValueError, match="taken"):
        write_ply(tmp_path / "bad.ply", points, extra={"red": part})


def test_points_only_and_float_colors(tmp_path):
    points = np.arange(12, dtype=np.float64).reshape(4, 3)
    cloud = read_ply(write_ply(tmp_path / "a.ply", points))
    np.testing.assert_array_equal(cloud.points, points.astype(np.float32))
    assert cloud.colors is None and cloud.layer is None
    cloud = read_ply(write_ply(tmp_path / "b.ply", points, colors=np.full((4, 3), 0.5)))
    np.testing.assert_array_equal(cloud.colors, np.full((4, 3), 128, dtype=np.uint8))


def test_reconstruction_layers_to_ply(tmp_path, make_reconstruction):
    shape = split_reconstruction(make_reconstruction(batch=2))[1]
    cloud = read_ply(shape.write_ply(tmp_path / "shape.ply"))
    for layer, points in (
        (LAYER_VISIBLE, shape.visible),
        (LAYER_PREDICTED, shape.predicted),
        (LAYER_TARGET, shape.target),
    ):
        selected = cloud.layer == layer
        np.testing.assert_array_equal(cloud.points[selected], points)
        assert (cloud.colors[selected] == LAYER_COLORS[layer]).all()


def test_open3d_reads_our_file_and_we_read_open3d(tmp_path):
    o3d = pytest.importorskip("open3d", reason="open3d not installed (pip install 'map3d[viz]')")
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(50, 3), dtype=np.uint8)
    ours = o3d.io.read_point_cloud(
        str(write_ply(tmp_path / "ours.ply", points, colors, np.ones(50, int)))
    )
    np.testing.assert_allclose(np.asarray(ours.points), points, rtol=0, atol=0)
    np.testing.assert_allclose(np.asarray(ours.colors) * 255, colors, atol=1e-3)
    for ascii in (False, True):
        path = tmp_path / f"o3d_{ascii}.ply"
        assert o3d.io.write_point_cloud(str(path), ours, write_ascii=ascii)
        cloud = read_ply(path)
        np.testing.assert_allclose(cloud.points, points, rtol=1e-5, atol=1e-6)  # ascii: 6 digits
        np.testing.assert_array_equal(cloud.colors, colors)


def test_big_endian_and_skipped_faces(tmp_path):
    path = tmp_path / "mesh.ply"
    header = (
        "ply\nformat binary_big_endian 1.0\nelement vertex 2\nproperty double x\n"
        "property double y\nproperty double z\nproperty short layer\nelement face 1\n"
        "property list uchar int vertex_indices\nend_header\n"
    )
    body = np.array([(1, 2, 3, 5), (4, 5, 6, 7)], dtype=">f8,>f8,>f8,>i2").tobytes()
    path.write_bytes(header.encode() + body + b"\x03\x00\x00\x00\x00")
    cloud = read_ply(path)
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(cloud.layer, [5, 7])


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"points must have shape \(N,3\)"):
        write_ply(tmp_path / "x.ply", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="layer must be an integer array"):
        write_ply(tmp_path / "x.ply", np.zeros((4, 3)), layer=np.zeros(3, int))
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        read_ply(tmp_path / "missing.ply")
    (tmp_path / "bad.ply").write_bytes(b"not a ply\n")
    with pytest.raises(ValueError, match="not a PLY file"):
        read_ply(tmp_path / "bad.ply")
    path = write_ply(tmp_path / "short.ply", np.zeros((10, 3)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated element 'vertex'"):
        read_ply(path)
