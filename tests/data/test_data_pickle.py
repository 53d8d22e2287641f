"""The restricted unpickler: numpy containers load, anything that could run code is refused."""

import collections
import os
import pickle

import numpy as np
import pytest

from map3d.data import DatasetFormatError, UnsafePickleError, build_dataset
from map3d.data.layouts import make_modelnet40
from map3d.data.safe_pickle import load_pickle


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload():
    return {
        "train": [(np.ones((4, 6), np.float32), 1, np.int32(7))],
        "labels": [np.array([3], np.int32)],
        "meta": (np.float64(0.5), np.dtype("float32"), "text", None, True, 2.5),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_loads_numpy_containers_for_every_protocol(tmp_path, protocol):
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(payload(), protocol=protocol))
    data = load_pickle(path)
    expected = payload()
    assert np.array_equal(data["train"][0][0], expected["train"][0][0])
    assert data["train"][0][1:] == (1, 7) and data["train"][0][2].dtype == np.int32
    assert data["labels"][0].dtype == np.int32 and data["meta"] == expected["meta"]
    assert np.array_equal(data["fortran"], expected["fortran"])


def test_loads_numpy1_module_paths(tmp_path):
    blob = pickle.dumps(payload(), protocol=2)
    if b"numpy._core" in blob:  # written by numpy 2: rewrite to numpy 1.x module names
        blob = blob.replace(b"numpy._core", b"numpy.core")
    else:
        blob = blob.replace(b"numpy.core", b"numpy._core")
    path = tmp_path / "other_numpy.pkl"
    path.write_bytes(blob)
    assert np.array_equal(load_pickle(path)["train"][0][0], np.ones((4, 6), np.float32))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_refuses_code_execution(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([np.zeros(3), RunsCode(marker)], protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*refused global (posix|nt|os)\.system"):
        load_pickle(path)
    assert not marker.exists()


def test_refuses_any_other_class_even_harmless_looking(tmp_path):
    path = tmp_path / "ordered.pkl"
    path.write_bytes(pickle.dumps(collections.OrderedDict(a=1), protocol=4))
    with pytest.raises(UnsafePickleError, match="refused global collections.OrderedDict"):
        load_pickle(path)


def test_modelnet_cache_with_code_is_refused(tmp_path):
    root = make_modelnet40(tmp_path, classes=("airplane",), train_per_class=1, cache_points=None)
    marker = tmp_path / "pwned"
    (root / "modelnet40_train_8192pts_fps.dat").write_bytes(
        pickle.dumps([[RunsCode(marker)], [np.array([0], np.int32)]])
    )
    with pytest.raises(UnsafePickleError, match=r"modelnet40_train_8192pts_fps\.dat"):
        build_dataset("modelnet40", split="train", root=root)
    assert not marker.exists()


def test_truncated_and_missing_pickles(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(payload())[:-40])
    with pytest.raises(DatasetFormatError, match=r"cut\.pkl.*truncated or corrupt"):
        load_pickle(path)
    with pytest.raises(FileNotFoundError, match="nothere.pkl"):
        load_pickle(tmp_path / "nothere.pkl")


class Uninitialized:
    """Pickles as `_reconstruct(ndarray, shape, "f")`: an array of any size, no data in the file."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        core = np._core if hasattr(np, "_core") else np.core
        return (core.multiarray._reconstruct, (np.ndarray, self.shape, b"f"))


def test_tiny_pickle_asking_for_128_gib_is_refused_before_allocation(tmp_path):
    path = tmp_path / "bomb.pkl"
    path.write_bytes(pickle.dumps(Uninitialized((1 << 35,)), protocol=4))
    assert path.stat().st_size < 100
    with pytest.raises(DatasetFormatError, match=r"bomb\.pkl.*refused before allocating"):
        load_pickle(path)


def test_modelnet_cache_bomb_is_refused(tmp_path):
    root = make_modelnet40(tmp_path, classes=("airplane",), train_per_class=1, cache_points=None)
    cache = root / "modelnet40_train_8192pts_fps.dat"
    cache.write_bytes(pickle.dumps([[Uninitialized((180_000_000, 6))], [np.array([0], np.int32)]]))
    with pytest.raises(DatasetFormatError, match=r"8192pts_fps\.dat.*\(180000000, 6\) float32"):
        build_dataset("modelnet40", split="train", root=root)


def test_array_data_must_match_its_shape_and_come_from_the_file(tmp_path):
    path = tmp_path / "arrays.pkl"
    blob = pickle.dumps([np.ones((4, 3), np.float32), np.zeros(2)], protocol=2)
    path.write_bytes(blob)
    assert [a.shape for a in load_pickle(path)] == [(4, 3), (2,)]
    # the same array used twice (a memo reference) would be normalized and copied per use
    shared = np.ones((4, 3), np.float32)
    path.write_bytes(pickle.dumps([[shared, shared], [1, 2]]))
    with pytest.raises(DatasetFormatError, match="same array appears twice"):
        load_pickle(path)
    # object arrays (their pickled state is trusted by numpy) are refused
    path.write_bytes(pickle.dumps(np.array([1, "x"], dtype=object)))
    with pytest.raises(DatasetFormatError, match="refused array dtype"):
        load_pickle(path)
