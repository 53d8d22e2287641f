"""Every loader reads its fixture in the real layout: lengths, labels, dtypes, normalization."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from map3d.data import build_dataset
from map3d.data.layouts import (
    make_modelnet40,
    make_modelnet_fewshot,
    make_scanobjectnn,
    make_shapenet55,
    make_shapenetpart,
)
from map3d.data.safe_pickle import load_pickle
from map3d.data.shapenetpart import CATEGORY_PARTS


def assert_unit_sphere(points):
    assert torch.allclose(points[:, :3].mean(0), torch.zeros(3), atol=1e-4)
    assert points[:, :3].norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    return {
        "shapenet55": make_shapenet55(base, num_points=2048),
        "modelnet40": make_modelnet40(base, cache_points=512),
        "modelnet40_fewshot": make_modelnet_fewshot(base),
        "scanobjectnn": make_scanobjectnn(base, num_points=256),
        "shapenetpart": make_shapenetpart(base),
    }


def test_shapenet55(roots):
    train = build_dataset("shapenet55", split="train", root=roots["shapenet55"], stored_points=2048)
    test = build_dataset("shapenet55", split="test", root=roots["shapenet55"], stored_points=2048)
    whole = build_dataset("shapenet55", split="all", root=roots["shapenet55"], stored_points=2048)
    assert (len(train), len(test), len(whole)) == (6, 3, 9)
    item = train[0]
    assert item["points"].shape == (1024, 3) and item["points"].dtype == torch.float32
    assert_unit_sphere(item["points"])  # normalized after the subsample
    assert (item["taxonomy_id"], item["model_id"]) == (
        "03001627",
        "ub5d972a1-de16-4d0a-aa40-85cd3a69aa8a",
    )
    # The subsample is seeded per (epoch, index): the same within an epoch, new in the next.
    first = train[1]["points"]
    assert torch.equal(first, train[1]["points"])
    train.set_epoch(1)
    assert not torch.equal(first, train[1]["points"])
    # The subsample draws only from the first `stored_points` rows, without replacement.
    raw = np.load(roots["shapenet55"] / "shapenet_pc" / train.files[2])
    small = build_dataset(
        "shapenet55", split="train", root=roots["shapenet55"], npoints=100, stored_points=100
    )
    expected = torch.from_numpy(np.sort(np.linalg.norm(raw[:100] - raw[:100].mean(0), axis=1)))
    got = small[2]["points"].norm(dim=1).sort().values
    assert torch.allclose(got, expected / expected.max(), atol=1e-5)
    batch = next(iter(DataLoader(train, batch_size=3, num_workers=0)))
    assert batch["points"].shape == (3, 1024, 3) and len(batch["taxonomy_id"]) == 3


def test_modelnet40_reads_dat_cache(roots):
    train = build_dataset("modelnet40", split="train", root=roots["modelnet40"], npoints=512)
    test = build_dataset("modelnet40", split="test", root=roots["modelnet40"], npoints=512)
    assert (len(train), len(test), train.num_classes) == (6, 3, 40)
    assert [train[i]["label"] for i in range(6)] == [
        0,
        0,
        23,
        23,
        15,
        15,
    ]  # airplane, night_stand, flower_pot
    item = test[0]
    assert item["points"].shape == (512, 3) and item["points"].dtype == torch.float32
    assert_unit_sphere(item["points"])
    # test split keeps point order; train split shuffles it (seeded per epoch)
    assert torch.equal(
        test[0]["points"],
        build_dataset("modelnet40", split="test", root=roots["modelnet40"], npoints=512)[0][
            "points"
        ],
    )
    first = train[0]["points"]
    train.set_epoch(3)
    assert not torch.equal(first, train[0]["points"])
    assert torch.equal(first.sort(0).values, train[0]["points"].sort(0).values)
    normals = build_dataset(
        "modelnet40", split="test", root=roots["modelnet40"], npoints=512, use_normals=True
    )
    assert normals[0]["points"].shape == (512, 6)
    assert torch.equal(normals[0]["points"][:, :3], item["points"])


def test_modelnet_builds_cache_then_reads_it(tmp_path):
    root = make_modelnet40(
        tmp_path, num_category=10, classes=("bed", "night_stand"), txt_points=40, cache_points=None
    )
    built = build_dataset("modelnet40", split="train", root=root, num_category=10, npoints=16)
    cache = root / "modelnet10_train_16pts_fps.dat"
    assert cache.is_file() and len(built) == 4 and built.num_classes == 10
    assert [built[i]["label"] for i in range(4)] == [1, 1, 6, 6]
    again = build_dataset("modelnet40", split="train", root=root, num_category=10, npoints=16)
    assert torch.equal(built[2]["points"], again[2]["points"])
    # The cache holds FPS picks of the txt rows (all columns).
    clouds, labels = load_pickle(cache)
    txt = np.loadtxt(root / "bed" / "bed_0001.txt", delimiter=",").astype(np.float32)
    assert (
        clouds[0].shape == (16, 6) and clouds[0].dtype == np.float32 and labels[0].dtype == np.int32
    )
    assert all((row == txt).all(axis=1).any() for row in clouds[0])
    direct = build_dataset(
        "modelnet40", split="test", root=root, num_category=10, npoints=8, use_cache=False
    )
    assert (
        direct[0]["points"].shape == (8, 3) and not (root / "modelnet10_test_8pts_fps.dat").exists()
    )


def test_modelnet_fewshot(roots):
    train = build_dataset(
        "modelnet40_fewshot",
        split="train",
        root=roots["modelnet40_fewshot"],
        way=5,
        shot=10,
        fold=1,
    )
    test = build_dataset(
        "modelnet40_fewshot", split="test", root=roots["modelnet40_fewshot"], way=5, shot=10, fold=1
    )
    assert (len(train), len(test), train.num_classes) == (50, 10, 5)
    assert sorted(train[i]["label"] for i in range(50)) == sorted(list(range(5)) * 10)
    item = test[0]
    assert item["points"].shape == (256, 3) and 0 <= item["orig_label"] < 40
    assert_unit_sphere(item["points"])


def test_modelnet_fewshot_accepts_the_underscored_folder_name(tmp_path, caplog):
    """`5way_10shot/` (read by Point-BERT / Point-MAE / Mamba3D code) works like `5way10shot/`,
    for the loader and for `python -m map3d.data.check`; the log says which one was found."""
    from map3d.data.check import check_dataset

    root = make_modelnet_fewshot(tmp_path, folds=1, num_points=32)
    (root / "5way10shot").rename(root / "5way_10shot")
    caplog.set_level("INFO", logger="map3d.data.modelnet")
    train = build_dataset("modelnet40_fewshot", split="train", root=root, way=5, shot=10)
    assert len(train) == 50 and str(root / "5way_10shot") in caplog.text
    assert [(r.split, r.count, r.ok) for r in check_dataset("modelnet40_fewshot", root)] == [
        ("train", 50, True),
        ("test", 10, False),  # the fixture holds 2, not 20, tests per class
    ]
    with pytest.raises(FileNotFoundError, match=r"10way20shot.*10way_20shot"):
        build_dataset("modelnet40_fewshot", split="train", root=root, way=10, shot=20)


@pytest.mark.parametrize("variant", ["obj_bg", "obj_only", "pb_t50_rs"])
def test_scanobjectnn_not_normalized(roots, variant):
    import h5py

    train = build_dataset(
        "scanobjectnn", split="train", root=roots["scanobjectnn"], variant=variant
    )
    test = build_dataset("scanobjectnn", split="test", root=roots["scanobjectnn"], variant=variant)
    assert (len(train), len(test), train.num_classes) == (8, 4, 15)
    folder = "main_split_nobg" if variant == "obj_only" else "main_split"
    suffix = "_augmentedrot_scale75" if variant == "pb_t50_rs" else ""
    with h5py.File(roots["scanobjectnn"] / folder / f"test_objectdataset{suffix}.h5") as f:
        raw, labels = f["data"][:], f["label"][:]
    assert torch.equal(test[1]["points"], torch.from_numpy(raw[1]))  # untouched, order kept
    assert [test[i]["label"] for i in range(4)] == labels.tolist()
    shuffled = train[1]["points"]
    assert shuffled.dtype == torch.float32 and shuffled.shape == (256, 3)
    assert shuffled.norm(dim=1).max() > 2  # not unit-sphere normalized


def test_shapenetpart(roots):
    trainval = build_dataset("shapenetpart", split="trainval", root=roots["shapenetpart"])
    test = build_dataset("shapenetpart", split="test", root=roots["shapenetpart"])
    train = build_dataset("shapenetpart", split="train", root=roots["shapenetpart"], npoints=512)
    assert (len(trainval), len(test), len(train)) == (9, 3, 6)
    assert [trainval[i]["category"] for i in range(9)] == [0, 0, 0, 11, 11, 11, 15, 15, 15]
    assert trainval.category_parts[15] == (47, 48, 49) and len(trainval.category_names) == 16
    for i in range(len(test)):
        item = test[i]
        assert item["points"].shape == (2048, 3) and item["seg"].dtype == torch.int64
        assert set(item["seg"].tolist()) <= set(CATEGORY_PARTS[item["category"]])
        # normalized over all points before resampling with replacement
        assert item["points"].norm(dim=1).max() <= 1.0 + 1e-5
    assert train[0]["points"].shape == (512, 3)
    a = test[0]
    assert torch.equal(a["seg"], test[0]["seg"])
    test.set_epoch(1)
    assert not torch.equal(a["seg"], test[0]["seg"])


def test_check_command_reports_counts_and_problems(tmp_path, capsys):
    from map3d.data.check import main

    root = make_modelnet_fewshot(tmp_path, folds=1, test_per_class=20, num_points=16)
    assert main([str(root), "--dataset", "modelnet40_fewshot"]) == 0
    assert "train way=5 shot=10 fold=0: 50 items (expected 50) ok" in capsys.readouterr().out
    sn = make_shapenet55(tmp_path, num_points=8192, num_train=2, num_test=1)
    (sn / "shapenet_pc" / (sn / "ShapeNet-55" / "test.txt").read_text().strip()).write_bytes(
        b"\x93NUMPY"
    )
    assert main([str(sn), "--dataset", "shapenet55"]) == 1
    out = capsys.readouterr().out
    assert "shapenet55 test : 1 items (expected 10518) 1 problem(s), count differs" in out
    assert "item 0:" in out and "unreadable .npy" in out
