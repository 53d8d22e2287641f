"""The image pretraining target: normalized pixels of each masked patch, MSE loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from map3d import ops
from map3d.models.pretrainer import place
from map3d.tokenize import PatchTokens
from map3d.tokenize.image import normalized_pixel_target, unpatchify


@dataclass
class ImageReconstruction:
    """For visualization, in raster order and input pixel space.

    images (B,C,H,W): the input; mask (B,L) bool, True = masked; pred_images (B,C,H,W):
    predictions at masked patches (mapped back from normalized pixels with each patch's own
    mean and std when the target is normalized), the input at visible ones; loss (B,):
    per-image loss on the masked patches; patch_size p.
    """

    images: Tensor
    mask: Tensor
    pred_images: Tensor
    loss: Tensor
    patch_size: int


class PixelObjective(nn.Module):
    """Each masked token regresses its p*p*C pixels; mean squared error on masked tokens only.

    norm_pix=True: the target is each patch standardized by its own mean and std (MAE's
    `norm_pix_loss`, the MAP 2D release's setting); False: raw pixels.
    """

    def __init__(self, patch_size: int, channels: int = 3, norm_pix: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.channels = channels
        self.norm_pix = norm_pix
        self.out_features = patch_size * patch_size * channels

    def target(self, tokens: PatchTokens) -> Tensor:
        """(B,L,p*p*C) regression target of every token."""
        return normalized_pixel_target(tokens.patches) if self.norm_pix else tokens.patches

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target (B,M,p*p*C) of the masked tokens -> (B,) mean squared error."""
        dtype = torch.promote_types(pred.dtype, torch.float32)  # half precision -> float32
        return (pred.to(dtype) - target.to(dtype)).pow(2).mean(dim=(1, 2))

    def reconstruction(
        self,
        tokens: PatchTokens,
        mask: Tensor,
        masked_idx: Tensor,
        pred: Tensor,
        per_sample_loss: Tensor,
    ) -> ImageReconstruction:
        patches = tokens.patches
        pred = pred.to(patches.dtype)
        if self.norm_pix:
            gt = ops.gather(patches, masked_idx)
            pred = pred * (gt.var(dim=-1, keepdim=True) + 1e-6).sqrt() + gt.mean(-1, keepdim=True)
        p, grid = self.patch_size, tokens.grid
        return ImageReconstruction(
            images=unpatchify(patches, p, grid),
            mask=mask,
            pred_images=unpatchify(place(patches, masked_idx, pred), p, grid),
            loss=per_sample_loss,
            patch_size=p,
        )

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, channels={self.channels}, norm_pix={self.norm_pix}"
