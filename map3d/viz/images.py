"""2D reconstructions as an image grid: one row per image, columns masked input | reconstruction |
original. Pure matplotlib (`Figure` + Agg canvas), no display needed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from map3d.tokenize.image import patchify, unpatchify

COLUMNS = ("masked input", "reconstruction", "original")


def masked_images(images: Tensor, mask: Tensor, patch_size: int, fill: float = 0.5) -> Tensor:
    """Grey out masked patches: images (B,C,H,W), mask (B,L) bool True = masked -> (B,C,H,W)."""
    patches = patchify(images, patch_size)
    if mask.shape != patches.shape[:2]:
        raise ValueError(
            f"mask must be (B,L) = {tuple(patches.shape[:2])} for these images and "
            f"patch_size={patch_size}, got {tuple(mask.shape)}"
        )
    grid = (images.shape[-2] // patch_size, images.shape[-1] // patch_size)
    patches = torch.where(mask[..., None], torch.full_like(patches, fill), patches)
    return unpatchify(patches, patch_size, grid)


def image_grid_figure(
    original: Tensor,
    reconstruction: Tensor,
    mask: Tensor,
    patch_size: int,
    *,
    max_images: int = 8,
    cell_inches: float = 1.6,
):
    """A matplotlib `Figure`: rows = images, columns = `COLUMNS`.

    original, reconstruction: (B,C,H,W) with values in [0,1] (clipped for display);
    mask: (B,L) bool, True = masked, in raster order.
    """
    from matplotlib.figure import Figure

    if original.shape != reconstruction.shape or original.dim() != 4:
        raise ValueError(
            "original and reconstruction must both be (B,C,H,W) of the same shape, got "
            f"{tuple(original.shape)} and {tuple(reconstruction.shape)}"
        )
    n = min(int(original.shape[0]), max_images)
    original = original[:n].detach().float().cpu()
    reconstruction = reconstruction[:n].detach().float().cpu()
    masked = masked_images(original, mask[:n].detach().cpu().bool(), patch_size)
    columns = (masked, reconstruction, original)
    fig = Figure(figsize=(cell_inches * len(columns), cell_inches * n), layout="constrained")
    axes = fig.subplots(n, len(columns), squeeze=False)
    for row in range(n):
        for col, images in enumerate(columns):
            ax = axes[row][col]
            pixels = images[row].clamp(0.0, 1.0).permute(1, 2, 0).numpy()
            ax.imshow(
                pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
                cmap="gray" if pixels.shape[-1] == 1 else None,
                vmin=0.0,
                vmax=1.0,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(COLUMNS[col], fontsize=9)
    return fig


def save_image_grid(
    path: str | Path,
    original: Tensor,
    reconstruction: Tensor,
    mask: Tensor,
    patch_size: int,
    *,
    max_images: int = 8,
    dpi: int = 120,
) -> Path:
    """Render `image_grid_figure` to a PNG (or any format matplotlib infers from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = image_grid_figure(original, reconstruction, mask, patch_size, max_images=max_images)
    fig.savefig(path, dpi=dpi)
    return path
