"""Token embeddings: the center position MLP (the point patch embedding, `MiniPointNet`,
lives in the point wing, `map3d.models.points.embed`)."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}


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
