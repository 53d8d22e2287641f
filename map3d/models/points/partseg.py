"""Part segmentation on the shared point encoder (ShapeNetPart: 16 categories, 50 parts).

Follows Point-MAE's segmentation model (segmentation/models/pt.py), on our hybrid backbone:
features of several encoder depths (default: three evenly spaced depths, as Point-MAE's blocks 4,
8 and 12 of 12; each through the encoder's final norm) are concatenated per token (3C); a global feature is the max and the mean
of that over tokens, joined with a learned embedding of the shape's category; token features are
propagated from the G group centers to all N points by inverse-distance interpolation over the 3
nearest centers, concatenated with the point's xyz and passed through a shared MLP; a per-point
MLP maps [propagated, global] to part logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from map3d.models.encoder import TokenEncoder
from map3d.models.points.encoder import (
    PointEncoderConfig,
    build_point_encoder,
    build_point_tokenizer,
    check_point_task_fields,
)
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


@dataclass
class PointPartSegConfig:
    """Part segmentation finetuning. Defaults: ShapeNetPart (16 categories, 50 parts, G=128).

    feature_blocks: 0-based encoder blocks whose outputs (through the encoder's final norm) are
    concatenated per token; None = three evenly spaced depths ending at the last block,
    `round(depth * i / 3) - 1` for i = 1, 2, 3: (3, 7, 11) for 12 blocks (Point-MAE's choice),
    (4, 10, 15) for HybridMT3D-S's 16.
    propagation_widths / head_widths: None scales with the encoder width C as Point-MAE at
    C=384: propagation [4C, 8C/3] = [1536, 1024], head [4C/3, 2C/3] = [512, 256] (at least 64).
    category_dim: width of the learned category embedding joined to the global feature (an
    `nn.Embedding` + LeakyReLU(0.2): the reference's bias-free 1x1 conv of the one-hot, without
    its BatchNorm, which cannot train on a batch of one shape).
    interpolation_k: nearest centers each point interpolates from.
    fps_rule: "map3d" (default) or "release" (pointnet2_ops never picks |p|^2 <= 1e-3).
    compat: None, or a release whose model settings fill every field not given explicitly.
    check_finite: NaN/Inf input check: None = CPU inputs only (no host sync), True, False.
    """

    encoder: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    num_categories: int = 16
    num_parts: int = 50
    num_groups: int = 128
    group_size: int = 32
    serialization: str = "hilbert"
    feature_blocks: list[int] | None = None
    propagation_widths: list[int] | None = None
    head_widths: list[int] | None = None
    head_dropout: float = 0.5
    category_dim: int = 64
    interpolation_k: int = 3
    fps_rule: str = "map3d"
    compat: str | None = None
    check_finite: bool | None = None

    def __post_init__(self):
        if self.num_categories < 1 or self.num_parts < 1:
            raise ValueError(
                f"num_categories and num_parts must be >= 1, got {self.num_categories} and "
                f"{self.num_parts}"
            )
        check_point_task_fields(self)
        depth = self.encoder.backbone.depth
        blocks = self.feature_blocks
        if blocks is not None and (not blocks or any(not 0 <= b < depth for b in blocks)):
            raise ValueError(
                f"feature_blocks={blocks} must be a non-empty list of block indices in [0, {depth})"
            )
        if self.interpolation_k < 1:
            raise ValueError(f"interpolation_k must be >= 1, got {self.interpolation_k}")

    def resolved_feature_blocks(self) -> list[int]:
        if self.feature_blocks is not None:
            return sorted(set(self.feature_blocks))
        depth = self.encoder.backbone.depth
        return sorted({max(0, round(depth * (i + 1) / 3) - 1) for i in range(3)})

    def _widths(self, widths: list[int] | None, factors: Sequence[float]) -> list[int]:
        if widths is not None:
            return list(widths)
        return [max(64, round(factor * self.encoder.dim)) for factor in factors]

    def resolved_propagation_widths(self) -> list[int]:
        return self._widths(self.propagation_widths, (4, 8 / 3))

    def resolved_head_widths(self) -> list[int]:
        return self._widths(self.head_widths, (4 / 3, 2 / 3))


class PointPartSegmenter(nn.Module):
    """(B,N,3) points and (B,) int64 categories -> (B,N,num_parts) part logits.

    Tokens: G groups in serialized order, no cls token. Per-token features: the outputs of
    `feature_blocks` (each through the encoder's final norm), concatenated (B,G,LC) with L levels.
    Global: max and mean over tokens of those, and the category embedding. Per point: features
    propagated from the centers (`FeaturePropagation`), joined with the global feature, then the
    head (Conv1d 1x1 + BN + ReLU layers, dropout after the first, Linear to parts).
    """

    def __init__(self, config: PointPartSegConfig):
        super().__init__()
        self.config = config
        self.tokenizer = build_point_tokenizer(config)
        self.encoder: TokenEncoder = build_point_encoder(config.encoder)
        self.feature_blocks = config.resolved_feature_blocks()
        token_dim = len(self.feature_blocks) * self.encoder.dim
        self.category_embed = nn.Sequential(
            nn.Embedding(config.num_categories, config.category_dim), nn.LeakyReLU(0.2)
        )
        propagation_widths = config.resolved_propagation_widths()
        self.propagation = FeaturePropagation(token_dim, propagation_widths, config.interpolation_k)
        head_in = propagation_widths[-1] + 2 * token_dim + config.category_dim
        hidden = config.resolved_head_widths()
        layers: list[nn.Module] = []
        for i, width in enumerate(hidden):
            layers += [nn.Conv1d(head_in, width, 1), nn.BatchNorm1d(width), nn.ReLU()]
            if i == 0:
                layers.append(nn.Dropout(config.head_dropout))
            head_in = width
        layers.append(nn.Conv1d(head_in, config.num_parts, 1))
        self.head = nn.Sequential(*layers)

    def token_features(
        self, points: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(B,N,3) -> (features (B,G,LC) of the chosen blocks, centers (B,G,3) serialized)."""
        tokens = self.tokenizer(points, generator)
        x, pos = self.encoder.embed(tokens)
        backbone = self.encoder.backbone
        outputs = backbone.forward_features(
            x, pos, tokens.centers, num_blocks=self.feature_blocks[-1] + 1
        )
        levels = [backbone.norm(outputs[index]) for index in self.feature_blocks]
        return torch.cat(levels, dim=-1), tokens.centers

    def forward(
        self, points: Tensor, category: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        if category.shape != points.shape[:1] or category.dtype != torch.int64:
            raise ValueError(
                f"category: expected an int64 tensor of shape ({points.shape[0]},), got "
                f"{category.dtype} of shape {tuple(category.shape)}"
            )
        features, centers = self.token_features(points, generator)
        global_feature = torch.cat(
            [
                features.amax(dim=1),
                features.mean(dim=1),
                self.category_embed(category).to(features.dtype),
            ],
            dim=-1,
        )  # (B, 2LC + category_dim)
        per_point = self.propagation(points, centers, features)  # (B,W,N)
        joined = torch.cat(
            [per_point, global_feature.unsqueeze(-1).expand(-1, -1, points.shape[1])], dim=1
        )
        return self.head(joined).transpose(1, 2)
