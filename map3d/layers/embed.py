"""Token embeddings: mini-PointNet patch embedding and the center position MLP."""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}


class PatchEmbed(nn.Module):
    """Mini-PointNet (Point-MAE's `Encoder`): (B,G,K,3) patches -> (B,G,C) tokens.

    Shared Conv1d 3->128->256, max-pool over K, concat the pooled feature to every point (512),
    Conv1d 512->512->C, max-pool. Module names as Point-MAE (first_conv, second_conv).
    """

    def __init__(self, dim: int, in_channels: int = 3):
        super().__init__()
        self.dim = dim
        self.first_conv = nn.Sequential(
            nn.Conv1d(in_channels, 128, 1),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Conv1d(128, 256, 1),
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Conv1d(512, dim, 1),
        )

    def forward(self, patches: Tensor) -> Tensor:
        b, g, k, c = patches.shape
        feat = self.first_conv(patches.reshape(b * g, k, c).transpose(1, 2))  # (BG,256,K)
        pooled = feat.amax(dim=2, keepdim=True)
        feat = self.second_conv(torch.cat([pooled.expand_as(feat), feat], dim=1))  # (BG,C,K)
        return feat.amax(dim=2).reshape(b, g, self.dim)


class PositionMLP(nn.Sequential):
    """Center -> position embedding: Linear(in,128) -> act -> Linear(128,C). (B,G,in)->(B,G,C).

    A `Sequential`, so its keys (0.weight, 2.weight, ...) match Point-MAE / Mamba3D `pos_embed`.
    """

    def __init__(self, dim: int, in_features: int = 3, hidden: int = 128, activation: str = "gelu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose {tuple(ACTIVATIONS)}")
        super().__init__(
            nn.Linear(in_features, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, dim)
        )
