"""Image presets (the MAP 2D release's sizes and a nano one for CPU runs) and image tasks."""

from __future__ import annotations

from map3d.models.backbone import BackboneConfig
from map3d.models.images.classifier import ImageClassifier, ImageClassifierConfig
from map3d.models.images.encoder import ImageEncoderConfig, release_backbone
from map3d.models.images.pretrain import ImagePretrainConfig, build_image_pretrainer
from map3d.models.pretrainer import MAPPretrainer
from map3d.models.registry import register_head, register_model


@register_head("pretrain", modality="images", config=ImagePretrainConfig)
def _build_pretrainer(config: ImagePretrainConfig) -> MAPPretrainer:
    return build_image_pretrainer(config)


@register_head("classify", modality="images", config=ImageClassifierConfig)
def _build_classifier(config: ImageClassifierConfig) -> ImageClassifier:
    return ImageClassifier(config)


def _release(dim: int, repeats: int, num_heads: int = 12) -> ImageEncoderConfig:
    return ImageEncoderConfig(release_backbone(dim, "MMMT" * repeats, num_heads))


@register_model(modality="images")
def map_tiny_patch16_224() -> ImageEncoderConfig:
    return _release(192, 8)


@register_model(modality="images")
def map_small_patch16_224() -> ImageEncoderConfig:
    return _release(384, 8)


@register_model(modality="images")
def map_base_patch16_224() -> ImageEncoderConfig:
    return _release(768, 8)


@register_model(modality="images")
def map_large_patch16_224() -> ImageEncoderConfig:
    return _release(1024, 16, num_heads=16)


@register_model(modality="images")
def map_huge_patch16_224() -> ImageEncoderConfig:
    return _release(1536, 12)


@register_model(modality="images")
def map_nano_patch4_16() -> ImageEncoderConfig:
    backbone = BackboneConfig(
        dim=32,
        pattern="MMMT",
        num_heads=2,
        mlp_ratio=2.0,
        qkv_bias=True,
        d_state=4,
        drop_path_rate=0.0,
        local_aggregation=False,
    )
    return ImageEncoderConfig(backbone, image_size=16, patch_size=4)
