"""Point-cloud classifier: cls token + pretrained encoder + Mamba3D's finetuning head."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from map3d.models.encoder import (
    PointEncoderConfig,
    TokenEncoder,
    build_point_encoder,
    build_point_tokenizer,
)
from map3d.tokenize import SERIALIZATIONS


@dataclass
class PointClassifierConfig:
    """Classification finetuning. Defaults: ModelNet40 / ScanObjectNN setting of the paper.

    num_groups: G tokens (128 for finetuning); head: concat[cls, max+mean] (2C) -> head_hidden
    -> head_hidden -> num_classes, each hidden layer Linear, BatchNorm, ReLU, Dropout.
    check_finite: NaN/Inf input check: None = CPU inputs only (no host sync), True, False.
    """

    encoder: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    num_classes: int = 40
    num_groups: int = 128
    group_size: int = 32
    serialization: str = "hilbert"
    head_hidden: int = 256
    head_dropout: float = 0.5
    check_finite: bool | None = None

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.serialization not in SERIALIZATIONS:
            raise ValueError(
                f"serialization={self.serialization!r} must be one of {SERIALIZATIONS}"
            )


def classification_head(
    in_features: int, hidden: int, num_classes: int, dropout: float
) -> nn.Sequential:
    """Mamba3D's `cls_head_finetune`: two (Linear, BN, ReLU, Dropout) layers, then Linear."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class PointClassifier(nn.Module):
    """(B,N,3) points -> (B,num_classes) logits.

    Tokens in serialized order with a learned cls token (and cls position) in front; the cls
    token has no center, so LNP leaves it as is. Features: concat[cls, max + mean of tokens].
    """

    def __init__(self, config: PointClassifierConfig):
        super().__init__()
        self.config = config
        self.tokenizer = build_point_tokenizer(config)
        self.encoder: TokenEncoder = build_point_encoder(config.encoder)
        dim = self.encoder.dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)
        self.head = classification_head(
            2 * dim, config.head_hidden, config.num_classes, config.head_dropout
        )

    def features(self, points: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B,N,3) -> (B,1+G,C) encoder features, cls first."""
        tokens = self.tokenizer(points, generator)
        x, pos = self.encoder.embed(tokens)
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1).to(pos.dtype), pos], dim=1)
        return self.encoder(x, pos, tokens.centers)

    def forward(self, points: Tensor, generator: torch.Generator | None = None) -> Tensor:
        h = self.features(points, generator)
        tokens = h[:, 1:]
        return self.head(torch.cat([h[:, 0], tokens.amax(dim=1) + tokens.mean(dim=1)], dim=-1))
