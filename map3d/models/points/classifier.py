"""Point-cloud classifier: cls token + pretrained encoder + Mamba3D's finetuning head."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from map3d.models.compat import HEAD_POOLINGS, check_choice
from map3d.models.encoder import TokenEncoder
from map3d.models.points.encoder import (
    PointEncoderConfig,
    build_point_encoder,
    build_point_tokenizer,
    check_point_task_fields,
)


@dataclass
class PointClassifierConfig:
    """Classification finetuning. Defaults: ModelNet40 / ScanObjectNN setting of the paper.

    num_groups: G tokens (128 for finetuning); head: pooled features (2C) -> head_hidden
    -> head_hidden -> num_classes, each hidden layer Linear, BatchNorm, ReLU, Dropout.
    head_pooling: "cls_max_mean" (default: concat[cls, max + mean of the tokens], what the
      Mamba3D/PointMAP code means), "cls_max" (Point-MAE: concat[cls, max]) or "release_exact"
      (Mamba3D/PointMAP as written: `.mean(1)[0]` adds the token mean of sample 0 to every
      sample, so a cloud's logits depend on its batch; for bit-level comparisons only).
    fps_rule: "map3d" (default) or "release" (pointnet2_ops never picks |p|^2 <= 1e-3).
    compat: None, or a release ("pointmap", "mamba3d", "pointmae") whose settings fill every
      field not given explicitly (`map3d.models.compat`).
    check_finite: NaN/Inf input check: None = CPU inputs only (no host sync), True, False.
    """

    encoder: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    num_classes: int = 40
    num_groups: int = 128
    group_size: int = 32
    serialization: str = "hilbert"
    head_hidden: int = 256
    head_dropout: float = 0.5
    head_pooling: str = "cls_max_mean"
    fps_rule: str = "map3d"
    compat: str | None = None
    check_finite: bool | None = None

    def __post_init__(self):
        check_choice("head_pooling", self.head_pooling, HEAD_POOLINGS)
        check_point_task_fields(self)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")


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
    token has no center, so LNP leaves it as is. Features: `pool` (see `head_pooling`).
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

    def pool(self, h: Tensor) -> Tensor:
        """(B,1+G,C) features, cls first -> (B,2C) head input, by `config.head_pooling`."""
        cls, tokens = h[:, 0], h[:, 1:]
        pooled = tokens.amax(dim=1)
        if self.config.head_pooling == "cls_max_mean":
            pooled = pooled + tokens.mean(dim=1)
        elif self.config.head_pooling == "release_exact":
            pooled = pooled + tokens.mean(dim=1)[0]  # sample 0's mean, broadcast to the batch
        return torch.cat([cls, pooled], dim=-1)

    def forward(self, points: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.head(self.pool(self.features(points, generator)))
