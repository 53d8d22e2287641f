"""Models: hybrid backbone, MAP pretrainer, classifier, presets registry."""

from map3d.models.backbone import BackboneConfig, HybridBackbone
from map3d.models.checkpoint import load_pretrained
from map3d.models.classifier import PointClassifier, PointClassifierConfig
from map3d.models.encoder import PointEncoderConfig, TokenEncoder, build_point_encoder
from map3d.models.pretrainer import (
    ChamferObjective,
    MAPDecoder,
    MAPPretrainer,
    PointPretrainConfig,
    PretrainOutput,
    Reconstruction,
    build_point_pretrainer,
)
from map3d.models.registry import (
    apply_overrides,
    build_config,
    create_model,
    list_models,
    list_tasks,
    register_model,
    register_task,
)

__all__ = [
    "BackboneConfig",
    "ChamferObjective",
    "HybridBackbone",
    "MAPDecoder",
    "MAPPretrainer",
    "PointClassifier",
    "PointClassifierConfig",
    "PointEncoderConfig",
    "PointPretrainConfig",
    "PretrainOutput",
    "Reconstruction",
    "TokenEncoder",
    "apply_overrides",
    "build_config",
    "build_point_encoder",
    "build_point_pretrainer",
    "create_model",
    "list_models",
    "list_tasks",
    "load_pretrained",
    "register_model",
    "register_task",
]
