"""Image classification finetuning: the shared encoder and MAE's global-pool head."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from map3d.models.backbone import init_weights
from map3d.models.encoder import TokenEncoder
from map3d.models.images.encoder import (
    ImageEncoderConfig,
    build_image_encoder,
    build_image_tokenizer,
)


@dataclass
class ImageClassifierConfig:
    """Image classification finetuning: mean of the encoder's tokens -> LayerNorm -> dropout
    -> Linear (MAE's global-pool finetuning head)."""

    encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    num_classes: int = 1000
    head_dropout: float = 0.0

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")


class ImageClassifier(nn.Module):
    """(B,C,H,W) images -> (B,num_classes) logits; the shared encoder is `encoder`."""

    def __init__(self, config: ImageClassifierConfig):
        super().__init__()
        self.config = config
        self.tokenizer = build_image_tokenizer(config.encoder)
        self.encoder: TokenEncoder = build_image_encoder(config.encoder)
        self.fc_norm = nn.LayerNorm(self.encoder.dim)
        self.head_drop = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(self.encoder.dim, config.num_classes)
        init_weights(self.head)

    def features(self, images: Tensor) -> Tensor:
        """(B,C,H,W) -> (B,L,C) encoder features in raster order."""
        x, pos = self.encoder.embed(self.tokenizer(images))
        return self.encoder(x, pos)

    def forward(self, images: Tensor) -> Tensor:
        pooled = self.fc_norm(self.features(images).mean(dim=1))
        return self.head(self.head_drop(pooled))
