"""Image datasets: ImageFolder layout and errors, built-in digits and scikit-image crops."""

import importlib.util

import numpy as np
import pytest
import torch

from map3d.data.errors import DatasetFormatError
from map3d.data.images import DigitsDataset, ImageFolderDataset, SkimageSamplesDataset

# Each dataset's optional package (the `images` extra); a test without it is skipped, not failed.
needs_pillow = pytest.mark.skipif(
    importlib.util.find_spec("PIL") is None,
    reason="image_folder needs pillow (pip install 'map3d[images]')",
)
needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason="digits needs scikit-learn (pip install 'map3d[images]')",
)
needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None,
    reason="skimage_samples needs scikit-image (pip install 'map3d[images]')",
)


def _write_png(path, value, size=(10, 14)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


@needs_pillow
def test_image_folder_reads_classes_and_resizes(tmp_path):
    _write_png(tmp_path / "train" / "cat" / "a.png", 255)
    _write_png(tmp_path / "train" / "dog" / "b.jpg", 0)
    _write_png(tmp_path / "train" / "dog" / "sub" / "c.png", 0)
    ds = ImageFolderDataset(tmp_path, split="train", image_size=8, augment=False)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2 and len(ds) == 3
    item = ds[0]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert item["label"] == 0 and torch.allclose(item["image"], torch.ones(3, 8, 8))
    augmented = ImageFolderDataset(tmp_path, split="train", image_size=8)
    assert augmented.augment and augmented[1]["image"].shape == (3, 8, 8)


@needs_pillow
def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="root/<split>/<class>/<image>"):
        ImageFolderDataset(tmp_path, split="train")
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match=r"found subfolders \['val'\]"):
        ImageFolderDataset(tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        ImageFolderDataset(tmp_path, split="val")
    (tmp_path / "val" / "a").mkdir()
    (tmp_path / "val" / "a" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataset(tmp_path, split="val")
    (tmp_path / "val" / "a" / "broken.png").write_bytes(b"not a png")
    ds = ImageFolderDataset(tmp_path, split="val", image_size=8)
    with pytest.raises(DatasetFormatError, match="broken.png"):
        ds[0]


@needs_sklearn
def test_digits_splits_fractions_and_pixels():
    train = DigitsDataset(split="train", image_size=16)
    test = DigitsDataset(split="test", image_size=16)
    assert len(train) + len(test) == 1797 and train.num_classes == 10
    item = train[0]
    assert item["image"].shape == (3, 16, 16)
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    few = DigitsDataset(split="train", label_fraction=0.05, seed=1)
    assert np.bincount(few.labels, minlength=10).min() >= 1 and len(few) < 0.06 * len(train)
    other = DigitsDataset(split="train", label_fraction=0.05, seed=2)
    assert not np.array_equal(few.labels, other.labels) or len(few) == len(other)
    with pytest.raises(ValueError, match="label_fraction"):
        DigitsDataset(split="train", label_fraction=0.0)
    with pytest.raises(ValueError, match="split"):
        DigitsDataset(split="val")


@needs_sklearn
def test_digits_shift_is_seeded_per_epoch():
    ds = DigitsDataset(split="train", image_size=16, max_shift=3)
    first = ds[5]["image"]
    assert torch.equal(first, ds[5]["image"])
    changed = False
    for epoch in range(1, 5):
        ds.set_epoch(epoch)
        changed |= not torch.equal(first, ds[5]["image"])
    assert changed


@needs_skimage
def test_skimage_samples_crops():
    ds = SkimageSamplesDataset(split="train", image_size=16, length=20, names=["camera", "coffee"])
    assert len(ds) == 20 and ds.num_classes == 2
    item = ds[3]
    assert item["image"].shape == (3, 16, 16) and item["label"] == 1
    assert torch.equal(item["image"], ds[3]["image"])
    test = SkimageSamplesDataset(split="test", image_size=16, length=4)
    assert test[0]["image"].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="names"):
        SkimageSamplesDataset(names=["not_a_sample"])
