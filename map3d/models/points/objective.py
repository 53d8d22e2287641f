"""The point pretraining target: each masked token's K x 3 patch, Chamfer loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from map3d import ops
from map3d.models.pretrainer import place
from map3d.tokenize import PatchTokens


@dataclass
class Reconstruction:
    """For visualization, all in serialized order and world coordinates.

    centers (B,G,3); mask (B,G) bool, True = masked; gt_patches (B,G,K,3); pred_patches
    (B,G,K,3): predictions at masked positions, ground truth copied at visible ones;
    chamfer (B,): per-shape loss on the masked patches.
    """

    centers: Tensor
    mask: Tensor
    gt_patches: Tensor
    pred_patches: Tensor
    chamfer: Tensor


class ChamferObjective(nn.Module):
    """Each masked token predicts its K x 3 patch (relative to its center); Chamfer loss.

    norm=2 (default): squared-L2 Chamfer ("cdl2" of Point-MAE; `loss: cdl2` in the Point-MAE
    and Mamba3D pretraining configs, on which PointMAP builds). norm=1: Euclidean Chamfer
    ("cdl1": mean Euclidean distance both ways, divided by 2).
    """

    def __init__(self, group_size: int, norm: int = 2):
        super().__init__()
        if norm not in (1, 2):
            raise ValueError(f"chamfer norm must be 1 or 2, got {norm}")
        self.group_size = group_size
        self.norm = norm
        self.out_features = 3 * group_size

    def target(self, tokens: PatchTokens) -> Tensor:
        return tokens.patches

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        b, m = target.shape[:2]
        dtype = torch.promote_types(pred.dtype, torch.float32)  # half precision -> float32
        dist = ops.chamfer_distance(
            pred.reshape(b * m, self.group_size, 3).to(dtype),
            target.reshape(b * m, -1, 3).to(dtype),
            norm=self.norm,
        )
        return dist.view(b, m).mean(dim=1)

    def reconstruction(
        self,
        tokens: PatchTokens,
        mask: Tensor,
        masked_idx: Tensor,
        pred: Tensor,
        per_sample_loss: Tensor,
    ) -> Reconstruction:
        centers = tokens.centers
        gt = tokens.patches + centers.unsqueeze(2)
        b, m = masked_idx.shape
        pred_world = pred.reshape(b, m, self.group_size, 3).to(gt.dtype) + ops.gather(
            centers, masked_idx
        ).unsqueeze(2)
        return Reconstruction(
            centers=centers,
            mask=mask,
            gt_patches=gt,
            pred_patches=place(gt, masked_idx, pred_world),
            chamfer=per_sample_loss,
        )

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, norm={self.norm}"
