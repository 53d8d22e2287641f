"""The point-cloud wing: grouping, mini-PointNet embedding, Chamfer objective, point tasks and
presets around the shared core (backbone, `TokenEncoder`, `MAPPretrainer`, registry)."""

from map3d.models.points import presets  # noqa: F401  (registers the point presets and tasks)
from map3d.models.points.classifier import (
    PointClassifier,
    PointClassifierConfig,
    classification_head,
)
from map3d.models.points.embed import MiniPointNet
from map3d.models.points.encoder import (
    PointEncoderConfig,
    PointTokenizerConfig,
    build_point_encoder,
    build_point_tokenizer,
)
from map3d.models.points.objective import ChamferObjective, Reconstruction
from map3d.models.points.partseg import (
    FeaturePropagation,
    PointPartSegConfig,
    PointPartSegmenter,
    interpolate_features,
)
from map3d.models.points.pretrain import PointPretrainConfig, build_point_pretrainer

__all__ = [
    "ChamferObjective",
    "FeaturePropagation",
    "MiniPointNet",
    "PointClassifier",
    "PointClassifierConfig",
    "PointEncoderConfig",
    "PointPartSegConfig",
    "PointPartSegmenter",
    "PointPretrainConfig",
    "PointTokenizerConfig",
    "Reconstruction",
    "build_point_encoder",
    "build_point_pretrainer",
    "build_point_tokenizer",
    "classification_head",
    "interpolate_features",
]
