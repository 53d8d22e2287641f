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


def save_reconstruction_grid(path: str | Path, reconstruction, *, max_images: int = 8) -> Path:
    """Grid of an image pretrainer's `reconstruct(...)` output (`ImageReconstruction`)."""
    return save_image_grid(
        path,
        reconstruction.images,
        reconstruction.pred_images,
        reconstruction.mask,
        reconstruction.patch_size,
        max_images=max_images,
    )


def visualize_images(args, model, dataset, name: str, split: str, device) -> list[dict]:
    """`map3d viz` for image pretrainers: one grid PNG of the requested items, per-image loss.

    Each item is masked with its own generator seeded from (`--seed`, index), as for shapes.
    """
    from map3d.engine.setup import derive_seed

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, preds, masks, rows = [], [], [], []
    print(f"{name}/{split}, normalized-pixel MSE of masked patches:")
    print(f"{'index':>7} {'loss':>10} {'masked':>8}")
    for index in args.index:
        image = dataset[index]["image"].to(device=device, dtype=torch.float32).unsqueeze(0)
        generator = torch.Generator(device).manual_seed(derive_seed(args.seed, index))
        with torch.no_grad():
            rec = model.reconstruct(image, generator=generator)
        images.append(rec.images.cpu())
        preds.append(rec.pred_images.cpu())
        masks.append(rec.mask.cpu())
        loss, masked = float(rec.loss[0]), int(rec.mask.sum())
        rows.append({"index": index, "loss": loss, "num_masked": masked})
        print(f"{index:>7} {loss:>10.5f} {masked:>5}/{rec.mask.shape[1]}", flush=True)
    png = save_image_grid(
        out / f"{name}-{split}-grid.png",
        torch.cat(images),
        torch.cat(preds),
        torch.cat(masks),
        rec.patch_size,
        max_images=len(rows),
    )
    print(f"wrote {png}")
    return rows
