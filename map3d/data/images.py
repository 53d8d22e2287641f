"""Image datasets: users' own ImageFolder trees and real images that ship with common packages.

Every item is a dict with `image` float32 (3,H,W), pixel values in [0, 1] (the model standardizes
its inputs), and `label` int. Registered names (see `build_dataset`):

- `image_folder`: `root/<split>/<class>/<image>` (PNG, JPEG, BMP, GIF, TIFF, WebP), classes are the
  sorted subfolder names of the split, images are resized to `image_size` x `image_size`.
- `digits`: scikit-learn's `load_digits` (1,797 real 8x8 handwritten digits, 10 classes, 17 grey
  levels), upsampled bilinearly to `image_size` (default 16) and repeated to 3 channels; a fixed
  stratified 80/20 train/test split; `label_fraction` keeps a stratified subset of the train split
  for few-label finetuning.
- `skimage_samples`: random crops of scikit-image's bundled sample photographs (astronaut, camera,
  coffee, chelsea, ...), resized to `image_size`; for pretraining with nothing on disk. Train crops
  come from the top four fifths of each photo, test crops from the bottom fifth, so the splits
  never share pixels. `label` is the index of the source photo.

Randomness (crops, flips, shifts) comes from the per-item `torch.Generator` of
`map3d.data.base` seeded by (`seed`, epoch, index); call `set_epoch` to draw new crops each epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from map3d.data.base import PointDataset
from map3d.data.errors import DatasetFormatError
from map3d.errors import MissingDependencyError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# scikit-image samples stored inside the package (no download needed).
SKIMAGE_SAMPLES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)


def _check_split(split: str, allowed: tuple[str, ...], dataset: str) -> None:
    if split not in allowed:
        raise ValueError(f"{dataset}: split must be one of {allowed}, got {split!r}")


def to_rgb_tensor(array: np.ndarray) -> Tensor:
    """(H,W), (H,W,1), (H,W,3) or (H,W,4) uint8/bool/float array -> (3,H,W) uint8 tensor."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image array must be (H,W), (H,W,3) or (H,W,4), got {a.shape}")
    t = torch.from_numpy(np.array(a[..., :3], copy=True)).permute(2, 0, 1)
    return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t


def resize(image: Tensor, size: int | tuple[int, int]) -> Tensor:
    """(C,H,W) any dtype -> (C,size,size) float32 in [0,1] (antialiased bilinear)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    x = image.float()
    if image.dtype == torch.uint8:
        x = x / 255.0
    x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp_(0.0, 1.0)


def random_resized_crop(
    image: Tensor,
    size: int,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator,
) -> Tensor:
    """A crop of random area fraction `scale` and aspect `ratio`, resized: (C,H,W) -> (C,size,size)."""
    _, h, w = image.shape
    area = h * w * torch.empty(1).uniform_(*scale, generator=generator).item()
    log_ratio = torch.empty(1).uniform_(np.log(ratio[0]), np.log(ratio[1]), generator=generator)
    aspect = float(torch.exp(log_ratio))
    ch = round(min(h, max(1.0, (area / aspect) ** 0.5)))
    cw = round(min(w, max(1.0, (area * aspect) ** 0.5)))
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    return resize(image[:, top : top + ch, left : left + cw], size)


def random_hflip(image: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror (C,H,W) left-right with probability 1/2."""
    return image.flip(-1) if torch.rand(1, generator=generator).item() < 0.5 else image


def random_shift(image: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate (C,H,W) by up to `max_shift` pixels each way, filling with zeros."""
    if max_shift <= 0:
        return image
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    padded = F.pad(image, (max_shift, max_shift, max_shift, max_shift))
    _, h, w = image.shape
    return padded[:, max_shift - dy : max_shift - dy + h, max_shift - dx : max_shift - dx + w]


class ImageFolderDataset(PointDataset):
    """`root/<split>/<class>/<image>`; item `image` (3,S,S) in [0,1], `label` = class index.

    `augment` (default: on for split "train") applies a random resized crop (area 0.2-1) and a
    horizontal flip; otherwise the whole image is resized to `image_size` x `image_size`.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        image_size: int = 224,
        augment: bool | None = None,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        seed: int = 0,
        skip_bad: bool = False,
    ):
        super().__init__(seed=seed, skip_bad=skip_bad)
        if root is None:
            raise ValueError("image_folder: `root` is required (a folder with <split>/<class>/...)")
        self.root = Path(root).expanduser()
        split_dir = self.root / split
        if not split_dir.is_dir():
            found = (
                sorted(p.name for p in self.root.iterdir() if p.is_dir())
                if self.root.is_dir()
                else None
            )
            hint = f"found subfolders {found}" if found is not None else "the root does not exist"
            raise FileNotFoundError(
                f"image_folder: expected split folder {split_dir} (layout root/<split>/<class>/<image>); "
                f"{hint}"
            )
        self.classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(
                f"image_folder: {split_dir} has no class subfolders (layout root/<split>/<class>/<image>)"
            )
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            for path in sorted((split_dir / name).rglob("*")):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    self.samples.append((path, label))
        if not self.samples:
            raise FileNotFoundError(
                f"image_folder: no images with extensions {IMAGE_EXTENSIONS} under {split_dir}/<class>/"
            )
        self.num_classes = len(self.classes)
        self.image_size = int(image_size)
        self.augment = split == "train" if augment is None else bool(augment)
        self.crop_scale = tuple(crop_scale)
        log.info(
            "image_folder %s: %d images, %d classes", split_dir, len(self.samples), self.num_classes
        )

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int, generator: torch.Generator) -> dict:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                image = to_rgb_tensor(np.asarray(img.convert("RGB")))
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetFormatError(path, f"cannot decode image: {err}") from err
        if self.augment:
            crop = random_resized_crop(
                image, self.image_size, scale=self.crop_scale, generator=generator
            )
            image = random_hflip(crop, generator)
        else:
            image = resize(image, self.image_size)
        return {"image": image, "label": label}


def _stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _stratified_subset(
    indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """At least one per class, `fraction` of each class rounded."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels[indices]):
        idx = rng.permutation(indices[labels[indices] == c])
        keep.append(idx[: max(1, round(len(idx) * fraction))])
    return np.sort(np.concatenate(keep))


class DigitsDataset(PointDataset):
    """scikit-learn's 8x8 handwritten digits, upsampled to (3, image_size, image_size) in [0,1].

    Split: fixed stratified 80/20 (train 1,438 / test 359 images, split seed 0). `label_fraction`
    < 1 keeps that stratified fraction of the train split (at least one image per class), drawn
    with `seed`. `max_shift` > 0 randomly translates train images by up to that many pixels.
    """

    SPLIT_SEED = 0
    TEST_FRACTION = 0.2

    def __init__(
        self,
        *,
        split: str = "train",
        image_size: int = 16,
        label_fraction: float = 1.0,
        max_shift: int = 0,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        _check_split(split, ("train", "test"), "digits")
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"digits: label_fraction must be in (0, 1], got {label_fraction}")
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise MissingDependencyError(
                "the `digits` dataset needs scikit-learn: pip install 'map3d[images]'"
            ) from err
        digits = load_digits()
        labels = digits.target.astype(np.int64)
        train, test = _stratified_split(labels, self.TEST_FRACTION, self.SPLIT_SEED)
        indices = train if split == "train" else test
        if split == "train" and label_fraction < 1.0:
            indices = _stratified_subset(indices, labels, label_fraction, seed)
        grey = torch.from_numpy(digits.images[indices].astype(np.float32) / 16.0)[:, None]
        self.images = F.interpolate(
            grey, size=(image_size, image_size), mode="bilinear", align_corners=False
        ).clamp_(0.0, 1.0)
        self.labels = labels[indices]
        self.num_classes = 10
        self.image_size = int(image_size)
        self.max_shift = int(max_shift) if split == "train" else 0

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int, generator: torch.Generator) -> dict:
        image = self.images[index].expand(3, -1, -1)
        if self.max_shift:
            image = random_shift(image, self.max_shift, generator)
        return {"image": image.contiguous(), "label": int(self.labels[index])}


class SkimageSamplesDataset(PointDataset):
    """Random crops of scikit-image's bundled photographs, (3, image_size, image_size) in [0,1].

    Item i crops photo i % len(names) (area fraction `crop_scale` of its split region, aspect
    3/4-4/3, random flip), so every photo is seen equally often. `length` items per epoch
    (default 1,024 train / 256 test); test crops do not change with the epoch.
    """

    def __init__(
        self,
        *,
        split: str = "train",
        image_size: int = 32,
        names: tuple[str, ...] | list[str] = SKIMAGE_SAMPLES,
        length: int | None = None,
        crop_scale: tuple[float, float] = (0.02, 0.3),
        seed: int = 0,
    ):
        super().__init__(seed=seed if split == "train" else seed + 1)
        _check_split(split, ("train", "test"), "skimage_samples")
        try:
            from skimage import data as skdata
        except ImportError as err:
            raise MissingDependencyError(
                "the `skimage_samples` dataset needs scikit-image: pip install 'map3d[images]'"
            ) from err
        unknown = [n for n in names if n not in SKIMAGE_SAMPLES]
        if unknown or not names:
            raise ValueError(
                f"skimage_samples: names must be a non-empty subset of {SKIMAGE_SAMPLES}, got {list(names)}"
            )
        self.names = tuple(names)
        self.photos = []
        for name in self.names:
            photo = to_rgb_tensor(getattr(skdata, name)())
            cut = int(photo.shape[1] * 0.8)
            self.photos.append(photo[:, :cut] if split == "train" else photo[:, cut:])
        self.split = split
        self.length = int(length) if length is not None else (1024 if split == "train" else 256)
        self.image_size = int(image_size)
        self.crop_scale = tuple(crop_scale)
        self.num_classes = len(self.names)

    def set_epoch(self, epoch: int) -> None:
        if self.split == "train":
            super().set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int, generator: torch.Generator) -> dict:
        label = index % len(self.photos)
        crop = random_resized_crop(
            self.photos[label], self.image_size, scale=self.crop_scale, generator=generator
        )
        return {"image": random_hflip(crop, generator), "label": label}
