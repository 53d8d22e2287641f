"""Every damaged-dataset case raises an error naming the file (and line / key / sample)."""

import logging
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from map3d.data import DatasetFormatError, build_dataset
from map3d.data.layouts import (
    make_modelnet40,
    make_modelnet_fewshot,
    make_scanobjectnn,
    make_shapenet55,
    make_shapenetpart,
)


def build(name, root, split="train", **options):
    return build_dataset(name, split=split, root=root, **options)


@pytest.mark.parametrize(
    "name", ["shapenet55", "modelnet40", "modelnet40_fewshot", "scanobjectnn", "shapenetpart"]
)
def test_missing_root(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build(name, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="pass root"):
        build_dataset(name, split="train")


def test_missing_split_lists(tmp_path):
    sn = make_shapenet55(tmp_path, num_points=64)
    (sn / "ShapeNet-55" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"ShapeNet-55/test\.txt"):
        build("shapenet55", sn, "test")
    mn = make_modelnet40(tmp_path, cache_points=None)
    (mn / "modelnet40_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"modelnet40_test\.txt"):
        build("modelnet40", mn, "test")
    (mn / "modelnet40_shape_names.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"modelnet40_shape_names\.txt"):
        build("modelnet40", mn)
    sp = make_shapenetpart(tmp_path)
    (sp / "train_test_split" / "shuffled_val_file_list.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"shuffled_val_file_list\.json"):
        build("shapenetpart", sp, "trainval")
    fs = make_modelnet_fewshot(tmp_path, folds=1)
    with pytest.raises(FileNotFoundError, match=r"5way10shot/3\.pkl"):
        build("modelnet40_fewshot", fs, fold=3)
    with pytest.raises(FileNotFoundError, match=r"10way20shot"):
        build("modelnet40_fewshot", fs, way=10, shot=20)
    so = make_scanobjectnn(tmp_path, variants=("obj_bg",), num_points=16)
    with pytest.raises(FileNotFoundError, match=r"main_split_nobg/training_objectdataset\.h5"):
        build("scanobjectnn", so, variant="obj_only")


def test_listed_file_absent(tmp_path, caplog):
    sn = make_shapenet55(tmp_path, num_points=64)
    name = (sn / "ShapeNet-55" / "train.txt").read_text().split()[2]
    (sn / "shapenet_pc" / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 listed file.*train\.txt line 3: {name}"):
        build("shapenet55", sn, npoints=32, stored_points=64)
    with caplog.at_level(logging.WARNING):
        kept = build("shapenet55", sn, npoints=32, stored_points=64, skip_bad=True)
    assert len(kept) == 5 and "dropped 1 listed file" in caplog.text
    sp = make_shapenetpart(tmp_path, categories=("Table",), per_split={"test": 2})
    victim = next((sp / "04379243").glob("*.txt"))
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        build("shapenetpart", sp, "test")
    assert len(build("shapenetpart", sp, "test", skip_bad=True)) == 1
    mn = make_modelnet40(tmp_path, cache_points=None)
    (mn / "airplane" / "airplane_0002.txt").unlink()
    with pytest.raises(FileNotFoundError, match="airplane_0002.txt"):
        build("modelnet40", mn, npoints=16)  # building the cache
    with pytest.raises(FileNotFoundError, match="airplane_0002.txt"):
        build("modelnet40", mn, use_cache=False)
    assert len(build("modelnet40", mn, npoints=16, skip_bad=True)) == 5
    assert not (mn / "modelnet40_train_16pts_fps.dat").exists()  # partial caches stay in memory


def test_unknown_class_and_bad_list_lines(tmp_path):
    mn = make_modelnet40(tmp_path, cache_points=None)
    with open(mn / "modelnet40_train.txt", "a") as f:
        f.write("teapot_0001\n")
    with pytest.raises(DatasetFormatError, match=r"modelnet40_train\.txt \(line 7\).*'teapot'"):
        build("modelnet40", mn, use_cache=False)
    sn = make_shapenet55(tmp_path, num_points=64)
    with open(sn / "ShapeNet-55" / "test.txt", "a") as f:
        f.write("not_a_point_file.ply\n")
    with pytest.raises(DatasetFormatError, match=r"test\.txt \(line 4\)"):
        build("shapenet55", sn, "test")


def test_damaged_npy(tmp_path, caplog):
    sn = make_shapenet55(tmp_path, num_points=64)
    ds = build("shapenet55", sn, npoints=32, stored_points=64)
    files = [sn / "shapenet_pc" / f for f in ds.files]
    files[1].write_bytes(files[1].read_bytes()[:100])
    with pytest.raises(DatasetFormatError, match=rf"{files[1].name}: unreadable \.npy"):
        ds[1]
    np.save(files[2], np.zeros((64, 4), np.float32))
    with pytest.raises(DatasetFormatError, match=r"expected a \(N,3\) point array, got \(64, 4\)"):
        ds[2]
    np.save(files[3], np.array([["a"] * 3] * 64))
    with pytest.raises(DatasetFormatError, match="expected float coordinates, got dtype <U1"):
        ds[3]
    bad = np.zeros((64, 3), np.float32)
    bad[9, 1] = np.nan
    np.save(files[4], bad)
    with pytest.raises(DatasetFormatError, match=rf"{files[4].name}: non-finite.*row 9"):
        ds[4]
    np.save(files[5], np.zeros((10, 3), np.float32))
    with pytest.raises(DatasetFormatError, match="at least 64 points, got 10"):
        ds[5]
    lenient = build("shapenet55", sn, npoints=32, stored_points=64, skip_bad=True)
    with caplog.at_level(logging.WARNING):
        items = [lenient[i] for i in range(len(lenient))]
    assert len(items) == 6 and "5 bad so far" in caplog.text
    assert all(item["points"].shape == (32, 3) for item in items)


def test_damaged_modelnet_txt_and_cache(tmp_path):
    mn = make_modelnet40(tmp_path, cache_points=None, txt_points=20)
    txt = mn / "night_stand" / "night_stand_0003.txt"
    lines = txt.read_text().splitlines()
    txt.write_text("\n".join(lines[:7] + [lines[7][:12]]) + "\n")  # truncated mid-line
    with pytest.raises(
        DatasetFormatError, match=rf"{txt.name}: expected 6 numbers per line \(line 8"
    ):
        build("modelnet40", mn, use_cache=False)[2]
    lines[4] = "nan," + lines[4].split(",", 1)[1]
    txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=rf"{txt.name}: non-finite.*row 4"):
        build("modelnet40", mn, npoints=8)
    cached = make_modelnet40(tmp_path / "c", cache_points=16)
    dat = cached / "modelnet40_train_16pts_fps.dat"
    with open(dat, "rb") as f:
        clouds, labels = pickle.load(f)
    for damage, message in [
        (
            lambda c, lab: lab.__setitem__(2, np.array([40], np.int32)),
            r"sample 2\): label 40 out of range \[0, 40\)",
        ),
        (
            lambda c, lab: c.__setitem__(1, c[1][:, :3]),
            r"sample 1\): expected a \(N,6\) point array",
        ),
        (
            lambda c, lab: c.__setitem__(3, np.full((16, 6), np.nan, np.float32)),
            r"sample 3\): non-finite",
        ),
        (lambda c, lab: c.pop(), "holds 5 clouds / 6 labels; the split list has 6"),
    ]:
        c, lab = list(clouds), list(labels)
        damage(c, lab)
        with open(dat, "wb") as f:
            pickle.dump([c, lab], f)
        with pytest.raises(DatasetFormatError, match=message):
            build("modelnet40", cached, npoints=16)
    dat.write_bytes(dat.read_bytes()[:500])
    with pytest.raises(DatasetFormatError, match=r"\.dat: unreadable pickle"):
        build("modelnet40", cached, npoints=16)


def test_modelnet_cache_skip_bad(tmp_path, caplog):
    root = make_modelnet40(tmp_path, cache_points=16)
    dat = root / "modelnet40_train_16pts_fps.dat"
    with open(dat, "rb") as f:
        clouds, labels = pickle.load(f)
    labels[0] = np.array([-1], np.int32)
    clouds[4][0, 0] = np.inf
    with open(dat, "wb") as f:
        pickle.dump([clouds, labels], f)
    with caplog.at_level(logging.WARNING):
        ds = build("modelnet40", root, npoints=16, skip_bad=True)
    assert len(ds) == 4 and "dropped 2 bad sample(s)" in caplog.text


def test_damaged_fewshot_pickle(tmp_path):
    root = make_modelnet_fewshot(tmp_path, folds=1, num_points=32)
    path = root / "5way10shot" / "0.pkl"
    with open(path, "rb") as f:
        data = pickle.load(f)
    data["train"][7] = (data["train"][7][0], 5, data["train"][7][2])
    with open(path, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(
        DatasetFormatError, match=r"0\.pkl \(key 'train', item 7\): label 5 out of range \[0, 5\)"
    ):
        build("modelnet40_fewshot", root)
    assert len(build("modelnet40_fewshot", root, skip_bad=True)) == 49
    with open(path, "wb") as f:
        pickle.dump({"val": []}, f)
    with pytest.raises(DatasetFormatError, match=r"expected a dict with key 'test', got \['val'\]"):
        build("modelnet40_fewshot", root, "test")


def test_damaged_scanobjectnn(tmp_path, caplog):
    root = make_scanobjectnn(tmp_path, variants=("obj_bg",), num_points=32)
    path = root / "main_split" / "training_objectdataset.h5"
    original = path.read_bytes()
    with h5py.File(path, "a") as f:
        f["label"][3] = 15
        f["data"][5, 2, 0] = np.nan
    with pytest.raises(
        DatasetFormatError, match=r"training_objectdataset\.h5 \(key 'label', sample 3\): label 15"
    ):
        build("scanobjectnn", root)
    with caplog.at_level(logging.WARNING):
        assert len(build("scanobjectnn", root, skip_bad=True)) == 6
    assert "dropped 2 bad sample(s)" in caplog.text
    with h5py.File(path, "a") as f:
        f["label"][3] = 0
    with pytest.raises(DatasetFormatError, match=r"\(key 'data', sample 5\): non-finite"):
        build("scanobjectnn", root)
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((2, 32, 3), np.float32)
    with pytest.raises(DatasetFormatError, match=r"missing key\(s\) \['label'\]"):
        build("scanobjectnn", root)
    with h5py.File(path, "w") as f:
        f["data"], f["label"] = np.zeros((2, 32, 4), np.float32), np.zeros(2, np.int32)
    with pytest.raises(DatasetFormatError, match=r"key 'data': expected float \(N,P,3\)"):
        build("scanobjectnn", root)
    path.write_bytes(original[: len(original) // 3])
    with pytest.raises(DatasetFormatError, match=r"training_objectdataset\.h5: unreadable HDF5"):
        build("scanobjectnn", root)


def test_damaged_shapenetpart(tmp_path):
    root = make_shapenetpart(tmp_path, categories=("Mug",), per_split={"test": 3})
    ds = build("shapenetpart", root, "test")
    paths = [Path(p) for p, _ in ds.shapes]
    lines = paths[0].read_text().splitlines()
    lines[5] = lines[5].rsplit(" ", 1)[0] + " 12.000000"  # a Chair part in a Mug
    paths[0].write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DatasetFormatError, match=r"\(line 6\): part label 12 not a part of Mug \(36\.\.37\)"
    ):
        ds[0]
    paths[1].write_text("1 2 3 4 5 6\n")
    with pytest.raises(DatasetFormatError, match="expected 7 numbers per line, got 6"):
        ds[1]
    paths[2].write_bytes(b"\x00\xff\xfe garbage")
    with pytest.raises(DatasetFormatError, match="expected 7 numbers per line|unreadable"):
        ds[2]
    with open(root / "train_test_split" / "shuffled_test_file_list.json", "w") as f:
        f.write('["shape_data/99999999/abc"]')
    with pytest.raises(DatasetFormatError, match=r"shuffled_test_file_list\.json \(entry 0\)"):
        build("shapenetpart", root, "test")
    with open(root / "train_test_split" / "shuffled_test_file_list.json", "w") as f:
        f.write('["shape_data/')
    with pytest.raises(DatasetFormatError, match="unreadable JSON"):
        build("shapenetpart", root, "test")
