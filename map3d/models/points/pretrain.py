"""MAP pretraining on point clouds: the shared MAPPretrainer and MAPDecoder with point parts.

`PointGrouper` tokens, the point encoder, a center MLP for decoder positions and
`ChamferObjective`. The 3D release cuts R = sqrt(G) decoder regions over [visible ; masked]
(`decoder_order="release"`); map3d's default keeps the serialized order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from map3d.layers import MASK_TYPES, PositionMLP, check_mask_ratio
from map3d.models.compat import DECODER_ORDERS, check_choice
from map3d.models.points.encoder import (
    PointEncoderConfig,
    build_point_encoder,
    build_point_tokenizer,
    check_point_task_fields,
)
from map3d.models.points.objective import ChamferObjective
from map3d.models.pretrainer import MAPDecoder, MAPPretrainer


@dataclass
class PointPretrainConfig:
    """MAP pretraining on point clouds. Defaults: the paper's ShapeNet-55 setting.

    serialization: curve ordering the G tokens ("hilbert" default; "none" keeps FPS order,
      which is what the 3D release effectively does).
    mask_ratio: float, or (min, max) sampled per batch from a normal of std `mask_ratio_std`
      around the middle, truncated to the range.
    num_regions: decoder regions R (G % R == 0); 1 = MAE decoder, num_groups = AR decoder.
    decoder_dim / decoder_num_heads: None = the encoder's (384 / 6 in the paper).
    chamfer_norm: 2 = squared-L2 Chamfer "cdl2" (release configs), 1 = Euclidean "cdl1".
    decoder_order: "serialized" (default: full sequence in serialized order) or "release"
      ([visible ; masked], the 3D release; it uses R = sqrt(G), 8 for G = 64).
    mask_type: "random" (default, per sample) or "block" (nearest tokens of a random center).
    fps_rule: "map3d" (default) or "release" (pointnet2_ops never picks |p|^2 <= 1e-3).
    compat: None, or a release ("pointmap", "mamba3d", "pointmae") whose settings fill every
      field not given explicitly (`map3d.models.compat`).
    check_finite: NaN/Inf input check: None = CPU inputs only (no host sync), True, False.
    """

    encoder: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    num_groups: int = 64
    group_size: int = 32
    serialization: str = "hilbert"
    mask_ratio: float | tuple[float, float] = 0.6
    mask_ratio_std: float = 0.25
    num_regions: int = 8
    decoder_depth: int = 4
    decoder_dim: int | None = None
    decoder_num_heads: int | None = None
    decoder_drop_path_rate: float = 0.1
    chamfer_norm: int = 2
    decoder_order: str = "serialized"
    mask_type: str = "random"
    fps_rule: str = "map3d"
    compat: str | None = None
    check_finite: bool | None = None

    def __post_init__(self):
        check_choice("decoder_order", self.decoder_order, DECODER_ORDERS)
        check_choice("mask_type", self.mask_type, MASK_TYPES)
        check_point_task_fields(self)
        if isinstance(self.mask_ratio, list):
            self.mask_ratio = tuple(self.mask_ratio)
        check_mask_ratio(self.mask_ratio)
        if self.num_regions < 1 or self.num_groups % self.num_regions:
            raise ValueError(
                f"num_groups={self.num_groups} must be divisible by "
                f"num_regions={self.num_regions} (G % R == 0)"
            )
        if self.chamfer_norm not in (1, 2):
            raise ValueError(f"chamfer_norm must be 1 or 2, got {self.chamfer_norm}")


def build_point_pretrainer(config: PointPretrainConfig) -> MAPPretrainer:
    encoder_dim = config.encoder.dim
    dim = config.decoder_dim or encoder_dim
    model = MAPPretrainer(
        build_point_tokenizer(config),
        build_point_encoder(config.encoder),
        MAPDecoder(
            encoder_dim,
            dim,
            config.decoder_depth,
            config.decoder_num_heads or config.encoder.backbone.num_heads,
            config.num_regions,
            PositionMLP(dim, 3, activation="gelu"),
            mlp_ratio=config.encoder.backbone.mlp_ratio,
            drop_path_rate=config.decoder_drop_path_rate,
        ),
        ChamferObjective(config.group_size, config.chamfer_norm),
        mask_ratio=config.mask_ratio,
        mask_ratio_std=config.mask_ratio_std,
        decoder_order=config.decoder_order,
        mask_type=config.mask_type,
    )
    model.config = config
    return model
