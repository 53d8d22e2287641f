"""The encoder every task shares (attribute `encoder`): embeddings + hybrid backbone.

`TokenEncoder` is modality-agnostic: it embeds a `PatchTokens` (patch embedding of `patches`,
position embedding of `centers`) and runs the backbone. Points use the mini-PointNet and a
center MLP; the image path plugs in its own two embedding modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor, nn

from map3d.layers import PatchEmbed, PositionMLP
from map3d.models.backbone import BackboneConfig, HybridBackbone, init_weights
from map3d.tokenize import PatchTokens, PointGrouper


@dataclass
class PointEncoderConfig:
    """Point encoder = mini-PointNet patch embedding + center MLP + hybrid backbone.

    pos_activation: activation of the center MLP; Mamba3D/PointMAP use "silu", Point-MAE "gelu".
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pos_activation: str = "silu"

    @property
    def dim(self) -> int:
        return self.backbone.dim


class TokenEncoder(nn.Module):
    """patch_embed (patches -> (B,G,C)), pos_embed (centers -> (B,G,C)), backbone."""

    def __init__(self, patch_embed: nn.Module, pos_embed: nn.Module, backbone: HybridBackbone):
        super().__init__()
        self.patch_embed = patch_embed
        self.pos_embed = pos_embed
        self.backbone = backbone

    @property
    def dim(self) -> int:
        return self.backbone.config.dim

    def embed(self, tokens: PatchTokens) -> tuple[Tensor, Tensor]:
        """PatchTokens -> (tokens (B,G,C), pos (B,G,C))."""
        return self.patch_embed(tokens.patches), self.pos_embed(tokens.centers)

    def forward(self, x: Tensor, pos: Tensor, centers: Tensor | None = None) -> Tensor:
        """(B,L,C) tokens and positions, optional (B,G,3) centers -> (B,L,C) features."""
        return self.backbone(x, pos, centers)


class PointTokenizerConfig(Protocol):
    """The grouping fields every point task config has."""

    num_groups: int
    group_size: int
    serialization: str
    fps_rule: str
    check_finite: bool | None


def build_point_tokenizer(config: PointTokenizerConfig) -> PointGrouper:
    """The `PointGrouper` of a point task: G groups of K points in `serialization` order."""
    return PointGrouper(
        config.num_groups,
        config.group_size,
        config.serialization,
        check_finite=config.check_finite,
        fps_rule=config.fps_rule,
    )


def build_point_encoder(config: PointEncoderConfig) -> TokenEncoder:
    dim = config.backbone.dim
    encoder = TokenEncoder(
        PatchEmbed(dim),
        PositionMLP(dim, 3, activation=config.pos_activation),
        HybridBackbone(config.backbone),
    )
    init_weights(encoder.patch_embed)
    init_weights(encoder.pos_embed)
    return encoder
