"""Point-cloud presets (HybridMT3D, Mamba3D, Point-MAE; paper size and tiny) and point tasks
(pretrain, classify, partseg).

The paper-size presets share C=384, 6 heads, MLP ratio 4: hybridmt3d_s is MAP's HybridMT3D
("MMMT" x 4: 12 Mamba3D blocks with a Transformer block after every third); mamba3d_s 12
Mamba3D blocks; pointmae_s 12 plain Transformer blocks (no LNP, GELU position MLP). The tiny
presets keep each block pattern at C=32 for tests and smoke runs.
"""

from __future__ import annotations

from map3d.models.backbone import BackboneConfig
from map3d.models.points.classifier import PointClassifier, PointClassifierConfig
from map3d.models.points.encoder import PointEncoderConfig
from map3d.models.points.partseg import PointPartSegConfig, PointPartSegmenter
from map3d.models.points.pretrain import PointPretrainConfig, build_point_pretrainer
from map3d.models.registry import register_head, register_model


@register_head("pretrain", modality="points", config=PointPretrainConfig)
def _build_pretrainer(config: PointPretrainConfig):
    return build_point_pretrainer(config)


@register_head("classify", modality="points", config=PointClassifierConfig)
def _build_classifier(config: PointClassifierConfig):
    return PointClassifier(config)


@register_head("partseg", modality="points", config=PointPartSegConfig)
def _build_partseg(config: PointPartSegConfig) -> PointPartSegmenter:
    return PointPartSegmenter(config)


_TINY = {"dim": 32, "num_heads": 2, "d_state": 4, "drop_path_rate": 0.0}


@register_model(modality="points")
def hybridmt3d_s() -> PointEncoderConfig:
    return PointEncoderConfig(BackboneConfig(pattern="MMMT" * 4), pos_activation="silu")


@register_model(modality="points")
def mamba3d_s() -> PointEncoderConfig:
    return PointEncoderConfig(BackboneConfig(pattern="M" * 12), pos_activation="silu")


@register_model(modality="points")
def pointmae_s() -> PointEncoderConfig:
    return PointEncoderConfig(
        BackboneConfig(pattern="T" * 12, local_aggregation=False), pos_activation="gelu"
    )


@register_model(modality="points")
def hybridmt3d_tiny() -> PointEncoderConfig:
    return PointEncoderConfig(BackboneConfig(pattern="MMMT", **_TINY), pos_activation="silu")


@register_model(modality="points")
def mamba3d_tiny() -> PointEncoderConfig:
    return PointEncoderConfig(BackboneConfig(pattern="MM", **_TINY), pos_activation="silu")


@register_model(modality="points")
def pointmae_tiny() -> PointEncoderConfig:
    return PointEncoderConfig(
        BackboneConfig(pattern="TT", local_aggregation=False, **_TINY), pos_activation="gelu"
    )
