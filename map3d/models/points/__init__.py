"""The point-cloud wing: grouping, mini-PointNet embedding, Chamfer objective, point tasks and
presets around the shared core (backbone, `TokenEncoder`, `MAPPretrainer`, registry)."""

from map3d.models.points.encoder import (
    PointEncoderConfig,
    PointTokenizerConfig,
    build_point_encoder,
    build_point_tokenizer,
)
from map3d.models.points.objective import ChamferObjective, Reconstruction
from map3d.models.points.pretrain import PointPretrainConfig, build_point_pretrainer

__all__ = [
    "ChamferObjective",
    "PointEncoderConfig",
    "PointPretrainConfig",
    "PointTokenizerConfig",
    "Reconstruction",
    "build_point_encoder",
    "build_point_pretrainer",
    "build_point_tokenizer",
]
