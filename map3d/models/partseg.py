"""Part segmentation on the shared point encoder (ShapeNetPart: 16 categories, 50 parts).

Follows Point-MAE's segmentation model (segmentation/models/pt.py), on our hybrid backbone:
features of several encoder depths (default: outputs of blocks 4, 8 and 12, each through the
encoder's final norm) are concatenated per token (3C); a global feature is the max and the mean
of that over tokens, joined with a learned embedding of the shape's category; token features are
propagated from the G group centers to all N points by inverse-distance interpolation over the 3
nearest centers, concatenated with the point's xyz and passed through a shared MLP; a per-point
MLP maps [propagated, global] to part logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from map3d.ops import gather, knn


def interpolate_features(
    points: Tensor, centers: Tensor, features: Tensor, k: int = 3, eps: float = 1e-8
) -> Tensor:
    """Inverse-distance interpolation of center features at the points.

    points (B,N,3), centers (B,G,3), features (B,G,C) -> (B,N,C). Each point averages its k
    nearest centers' features with weights 1/(squared distance + eps), normalized to sum to 1
    (PointNet++ feature propagation). A point on a center takes that center's feature.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points: expected (B,N,3), got shape {tuple(points.shape)}")
    if centers.dim() != 3 or centers.shape[-1] != 3 or centers.shape[0] != points.shape[0]:
        raise ValueError(
            f"centers: expected ({points.shape[0]},G,3), got shape {tuple(centers.shape)}"
        )
    if features.shape[:2] != centers.shape[:2]:
        raise ValueError(
            f"features: expected ({centers.shape[0]},{centers.shape[1]},C), "
            f"got shape {tuple(features.shape)}"
        )
    k = min(k, centers.shape[1])
    dist2, idx = knn(points, centers, k)  # (B,N,k)
    weight = 1.0 / (dist2.clamp_min(0) + eps)
    weight = weight / weight.sum(dim=-1, keepdim=True)
    neighbours = gather(features, idx)  # (B,N,k,C)
    return (neighbours * weight.unsqueeze(-1).to(neighbours.dtype)).sum(dim=2)


def _pointwise_mlp(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """Shared per-point Conv1d(1x1) + BatchNorm + ReLU layers on (B,C,N)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv1d(in_channels, width, 1), nn.BatchNorm1d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers)


class FeaturePropagation(nn.Module):
    """Center features to per-point features: interpolate, concat xyz, shared MLP.

    forward(points (B,N,3), centers (B,G,3), features (B,G,C)) -> (B, widths[-1], N)
    (channel-first, ready for the per-point head).
    """

    def __init__(self, in_channels: int, widths: Sequence[int], k: int = 3):
        super().__init__()
        self.k = k
        self.mlp = _pointwise_mlp(in_channels + 3, widths)

    def forward(self, points: Tensor, centers: Tensor, features: Tensor) -> Tensor:
        interpolated = interpolate_features(points, centers, features, self.k)
        joined = torch.cat([points.to(interpolated.dtype), interpolated], dim=-1)
        return self.mlp(joined.transpose(1, 2))
