"""Data that used to pass validation and fail later (or never): extreme coordinates, too few or
too many points, empty files and splits, repeated split entries, decompression bombs. Each is
refused when the dataset is built or the item read, naming the file, and `python -m
map3d.data.check` reports the same problems."""

import json
import pickle

import h5py
import numpy as np
import pytest

from map3d.data import DatasetFormatError, build_dataset, pc_normalize
from map3d.data.check import main as check_main
from map3d.data.layouts import (
    make_modelnet40,
    make_scanobjectnn,
    make_shapenet55,
    make_shapenetpart,
)


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e-30, 1e-40])
def test_extreme_coordinates_normalize_to_the_unit_sphere(tmp_path, scale):
    root = make_shapenet55(tmp_path, num_train=2, num_test=1, num_points=64)
    name = (root / "ShapeNet-55" / "train.txt").read_text().split()[1]
    path = root / "shapenet_pc" / name
    reference = build_dataset("shapenet55", split="train", root=root, npoints=32, stored_points=64)[
        1
    ]["points"]
    np.save(path, (np.load(path).astype(np.float64) * scale).astype(np.float32))
    points = build_dataset("shapenet55", split="train", root=root, npoints=32, stored_points=64)[1][
        "points"
    ]
    assert np.isfinite(points.numpy()).all()
    assert points.norm(dim=1).max().item() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(points.numpy(), reference.numpy(), atol=1e-3)


def test_coincident_points_are_refused():
    with pytest.raises(DatasetFormatError, match=r"cloud\.npy: all 20 points coincide"):
        pc_normalize(np.ones((20, 3), np.float32), "cloud.npy")


def test_modelnet_cache_clouds_must_have_the_cache_point_count(tmp_path, capsys):
    root = make_modelnet40(tmp_path)
    dat = root / "modelnet40_train_8192pts_fps.dat"
    with open(dat, "rb") as f:
        clouds, labels = pickle.load(f)
    clouds[1] = clouds[1][:10]
    with open(dat, "wb") as f:
        pickle.dump([clouds, labels], f)
    message = r"8192pts_fps\.dat \(sample 1\): expected exactly 8192 points, got 10"
    with pytest.raises(DatasetFormatError, match=message):
        build_dataset("modelnet40", split="train", root=root)
    # the check command refuses exactly what building the dataset refuses
    assert check_main([str(root), "--dataset", "modelnet40"]) == 1
    out = capsys.readouterr().out
    assert "modelnet40 test num_category=40 use_cache=True: 3 items (expected 2468)" in out
    assert "(sample 1): expected exactly 8192 points, got 10" in out


def test_scanobjectnn_without_points_or_samples(tmp_path):
    root = make_scanobjectnn(tmp_path, variants=("obj_bg",), num_points=32)
    path = root / "main_split" / "training_objectdataset.h5"
    for data, message in [
        (np.zeros((4, 0, 3), np.float32), "0 points per sample, expected 16 to"),
        (np.zeros((0, 32, 3), np.float32), "holds no samples"),
    ]:
        with h5py.File(path, "w") as f:
            f["data"], f["label"] = data, np.zeros(len(data), np.int32)
        with pytest.raises(DatasetFormatError, match=rf"training_objectdataset\.h5.*{message}"):
            build_dataset("scanobjectnn", split="train", root=root)


def test_compressed_h5_bomb_is_refused_before_reading(tmp_path):
    root = make_scanobjectnn(tmp_path, variants=("obj_bg",), num_points=32)
    path = root / "main_split" / "training_objectdataset.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "data",
            shape=(500, 2048, 3),
            dtype="f4",
            compression="gzip",
            chunks=(50, 2048, 3),
            fillvalue=0.0,
        )
        f["label"] = np.zeros(500, np.int32)
    assert path.stat().st_size < 200_000
    with pytest.raises(DatasetFormatError, match=r"key 'data'.*refused before reading"):
        build_dataset("scanobjectnn", split="train", root=root)


def test_too_few_points_in_a_shapenetpart_file(tmp_path):
    root = make_shapenetpart(tmp_path, categories=("Mug",), per_split={"test": 2})
    ds = build_dataset("shapenetpart", split="test", root=root)
    path = ds.shapes[0][0]
    with open(path) as f:
        first = f.readline()
    with open(path, "w") as f:
        f.write(first)
    with pytest.raises(DatasetFormatError, match=r"expected at least 16 points, got 1"):
        ds[0]
    with open(path, "w") as f:
        f.write(first * 20)
    with pytest.raises(DatasetFormatError, match=r"all 20 points coincide"):
        ds[0]


def test_empty_split_lists_are_named(tmp_path):
    sn = make_shapenet55(tmp_path, num_points=64)
    (sn / "ShapeNet-55" / "test.txt").write_text("\n")
    with pytest.raises(DatasetFormatError, match=r"ShapeNet-55/test\.txt: empty"):
        build_dataset("shapenet55", split="test", root=sn)
    assert len(build_dataset("shapenet55", split="all", root=sn, npoints=32, stored_points=64)) == 6
    mn = make_modelnet40(tmp_path, cache_points=None)
    (mn / "modelnet40_test.txt").write_text("")
    with pytest.raises(DatasetFormatError, match=r"modelnet40_test\.txt: empty"):
        build_dataset("modelnet40", split="test", root=mn, use_cache=False)
    sp = make_shapenetpart(tmp_path)
    (sp / "train_test_split" / "shuffled_val_file_list.json").write_text("[]")
    with pytest.raises(DatasetFormatError, match=r"shuffled_val_file_list\.json: empty"):
        build_dataset("shapenetpart", split="val", root=sp)
    # a split made of two lists needs entries in one of them
    assert len(build_dataset("shapenetpart", split="trainval", root=sp)) == 6
    (sp / "train_test_split" / "shuffled_train_file_list.json").write_text("[]")
    with pytest.raises(
        DatasetFormatError,
        match=r"shuffled_train_file_list\.json and "
        r"shuffled_val_file_list\.json: no entries for 'trainval'",
    ):
        build_dataset("shapenetpart", split="trainval", root=sp)


def test_repeated_split_entries_are_refused(tmp_path):
    mn = make_modelnet40(tmp_path, cache_points=None)
    listing = mn / "modelnet40_train.txt"
    first = listing.read_text().splitlines()[0]
    listing.write_text(listing.read_text() + first + "\n" + first + "\n")
    with pytest.raises(
        DatasetFormatError,
        match=rf"modelnet40_train\.txt \(line 7\): '{first}' is listed twice "
        r"\(line 1 and line 7\)",
    ):
        build_dataset("modelnet40", split="train", root=mn, use_cache=False)
    sn = make_shapenet55(tmp_path, num_points=64)
    train = (sn / "ShapeNet-55" / "train.txt").read_text().split()[3]
    with open(sn / "ShapeNet-55" / "test.txt", "a") as f:
        f.write(train + "\n")
    with pytest.raises(DatasetFormatError, match="listed twice .test.txt line 4 and train.txt"):
        build_dataset("shapenet55", split="all", root=sn)
    sp = make_shapenetpart(tmp_path)
    split = sp / "train_test_split"
    train = json.loads((split / "shuffled_train_file_list.json").read_text())
    val = json.loads((split / "shuffled_val_file_list.json").read_text())
    (split / "shuffled_val_file_list.json").write_text(json.dumps(val + train[:1]))
    with pytest.raises(DatasetFormatError, match=r"shuffled_val_file_list\.json.*listed twice"):
        build_dataset("shapenetpart", split="trainval", root=sp)


def test_npy_header_asking_for_more_than_the_file_holds(tmp_path):
    root = make_shapenet55(tmp_path, num_train=2, num_test=1, num_points=64)
    name = (root / "ShapeNet-55" / "train.txt").read_text().split()[1]
    path = root / "shapenet_pc" / name
    header = path.read_bytes()[:128].replace(b"(64, 3)", b"(4000000000, 3)")
    header = header.replace(b" " * 8 + b"\n", b"\n")  # same header length: 8 spaces less
    path.write_bytes(header + b"\0" * 64)
    with pytest.raises(DatasetFormatError, match=r"promises shape \(4000000000, 3\).*refused"):
        build_dataset("shapenet55", split="train", root=root, npoints=32, stored_points=64)[1]
