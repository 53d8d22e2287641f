"""Images as patch tokens: patchify / unpatchify in raster order and the normalized-pixel target.

An image (B,C,H,W) becomes L = (H/p)(W/p) tokens of p*p*C pixels each, in raster order (row by
row, left to right). Inside a token the pixels are laid out as (p, p, C), channels last, as in
MAE, so a token is one patch read row by row. The result is the same `PatchTokens` type as point
grouping, so masking, the backbone and the MAP decoder see no difference between modalities.
"""

from __future__ import annotations

import torch
from torch import Tensor

from map3d.tokenize.tokens import PatchTokens


def _check_images(images: Tensor, patch_size: int) -> tuple[int, int]:
    if images.dim() != 4:
        raise ValueError(f"images must be (B,C,H,W), got shape {tuple(images.shape)}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    height, width = images.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not divisible by patch_size={patch_size}; "
            "resize or crop the images to a multiple of the patch size"
        )
    return height // patch_size, width // patch_size


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B,C,H,W) -> (B,L,p*p*C) with L = (H/p)(W/p) in raster order, pixels laid out (p,p,C)."""
    rows, cols = _check_images(images, patch_size)
    b, c = images.shape[:2]
    p = patch_size
    x = images.reshape(b, c, rows, p, cols, p)
    x = torch.einsum("bchpwq->bhwpqc", x)
    return x.reshape(b, rows * cols, p * p * c)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int]) -> Tensor:
    """(B,L,p*p*C) in raster order -> (B,C,H,W) with (H,W) = grid * p; inverse of `patchify`."""
    rows, cols = grid
    if patches.dim() != 3 or patches.shape[1] != rows * cols:
        raise ValueError(
            f"patches must be (B,L,p*p*C) with L = {rows}*{cols} = {rows * cols} for grid {grid}, "
            f"got shape {tuple(patches.shape)}"
        )
    p = patch_size
    if patches.shape[2] % (p * p):
        raise ValueError(
            f"patch length {patches.shape[2]} is not a multiple of patch_size**2 = {p * p}"
        )
    b, c = patches.shape[0], patches.shape[2] // (p * p)
    x = patches.reshape(b, rows, cols, p, p, c)
    x = torch.einsum("bhwpqc->bchpwq", x)
    return x.reshape(b, c, rows * p, cols * p)


def patch_centers(grid: tuple[int, int], *, device=None, dtype=torch.float32) -> Tensor:
    """(L,2) patch-center coordinates (row, col) in patch units, raster order: (i + 0.5, j + 0.5)."""
    rows, cols = grid
    r = torch.arange(rows, device=device, dtype=dtype) + 0.5
    c = torch.arange(cols, device=device, dtype=dtype) + 0.5
    rr, cc = torch.meshgrid(r, c, indexing="ij")
    return torch.stack([rr.reshape(-1), cc.reshape(-1)], dim=-1)


def normalized_pixel_target(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch standardized pixels (MAE's `norm_pix_loss` target): (B,L,D) -> (B,L,D).

    Each patch is shifted by its mean and divided by sqrt(var + eps) over its D = p*p*C values
    (unbiased variance, as in MAE and the MAP 2D release).
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


class ImagePatchifier:
    """Cuts images into raster-ordered patch tokens: (B,C,H,W) -> `PatchTokens`.

    `patches` (B,L,p*p*C) raw pixels, `centers` (B,L,2) from `patch_centers`, `order` and
    `inverse` the identity (raster order is already the serialization), `grid` (H/p, W/p).
    `image_size` (H, W), when given, is the only input size accepted (models whose position
    table or decoder regions are built for one grid).
    """

    def __init__(self, patch_size: int, image_size: tuple[int, int] | None = None):
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.patch_size = patch_size
        self.image_size = tuple(image_size) if image_size is not None else None

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> PatchTokens:
        """`generator` is accepted for interface parity with point grouping and unused."""
        grid = _check_images(images, self.patch_size)
        if self.image_size is not None and tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(
                f"images of size {tuple(images.shape[-2:])} given to a model built for "
                f"image_size={self.image_size} (H, W); resize the inputs or set image_size"
            )
        b = images.shape[0]
        patches = patchify(images, self.patch_size)
        centers = patch_centers(grid, device=images.device, dtype=images.dtype)
        identity = torch.arange(grid[0] * grid[1], device=images.device).expand(b, -1)
        return PatchTokens(
            patches=patches,
            centers=centers.expand(b, -1, -1),
            order=identity,
            inverse=identity,
            grid=grid,
        )

    def __repr__(self) -> str:
        return f"ImagePatchifier(patch_size={self.patch_size}, image_size={self.image_size})"
