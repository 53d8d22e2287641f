"""Point tokens: the grouping config every point task shares, and the point encoder
(mini-PointNet patch embedding + center MLP + hybrid backbone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from map3d.layers import PositionMLP
from map3d.models.backbone import BackboneConfig, HybridBackbone, init_weights
from map3d.models.compat import COMPATS, check_choice
from map3d.models.encoder import TokenEncoder
from map3d.models.points.embed import MiniPointNet
from map3d.tokenize import FPS_RULES, SERIALIZATIONS, PointGrouper


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


class PointTokenizerConfig(Protocol):
    """The grouping fields every point task config has."""

    num_groups: int
    group_size: int
    serialization: str
    fps_rule: str
    compat: str | None
    check_finite: bool | None


def check_point_task_fields(config: PointTokenizerConfig) -> None:
    """The checks every point task config shares (`__post_init__`): `serialization`,
    `fps_rule` and `compat` (None or a release) must be known choices; ValueError naming it."""
    check_choice("serialization", config.serialization, SERIALIZATIONS)
    check_choice("fps_rule", config.fps_rule, FPS_RULES)
    if config.compat is not None:
        check_choice("compat", config.compat, COMPATS)


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
        MiniPointNet(dim),
        PositionMLP(dim, 3, activation=config.pos_activation),
        HybridBackbone(config.backbone),
    )
    init_weights(encoder.patch_embed)
    init_weights(encoder.pos_embed)
    return encoder
