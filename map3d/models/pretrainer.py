"""MAP: Masked Autoregressive Pretraining, built by composition.

    tokenizer -> encoder.embed -> random mask -> encoder (visible tokens, serialized order)
    -> MAPDecoder (full serialized sequence: visible features scattered back to their
       positions, a learned mask token elsewhere, decoder positions added before every block,
       region-causal attention) -> head -> objective loss on the masked tokens only.

A modality is a set of parts, built in its wing: points (`map3d.models.points.pretrain`) use
`PointGrouper`, the point encoder, a center MLP for decoder positions and `ChamferObjective`;
images (`map3d.models.images.pretrain`) swap in a patchifier, their embeddings and a pixel
objective. Decoder regions: R = 1 is an MAE decoder, R = G a token-level AR decoder.

Decoder order (`decoder_order`): "serialized" (default, as the MAP 2D release) keeps the full
sequence in serialized order; "release" feeds [visible ; masked] (each part in serialized order)
as the 3D release does, with the regions cut over that concatenation (the release uses
R = sqrt(G)). Masking (`mask_type`): "random" per sample, or "block" (the release's option).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from map3d import ops
from map3d.layers import (
    MASK_TYPES,
    block_masking,
    check_mask_ratio,
    num_masked_tokens,
    random_masking,
    region_causal_mask,
    sample_mask_ratio,
)
from map3d.models.backbone import BackboneConfig, HybridBackbone
from map3d.models.compat import DECODER_ORDERS, check_choice
from map3d.models.encoder import TokenEncoder
from map3d.tokenize import PatchTokens


def place(base: Tensor, idx: Tensor, rows: Tensor) -> Tensor:
    """Out-of-place scatter: base (B,G,...) with rows (B,M,...) written at idx (B,M); the
    inverse of `map3d.ops.gather` (per-sample rows)."""
    view = idx.reshape(idx.shape + (1,) * (base.dim() - 2))
    return base.scatter(1, view.expand(rows.shape), rows)


class PretrainObjective(Protocol):
    """What the pretrainer needs from a modality's target: sizes, target and loss."""

    out_features: int

    def target(self, tokens: PatchTokens) -> Tensor:
        """(B,G,...) regression target of every token."""

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred (B,M,out_features), target (B,M,...) of the masked tokens -> (B,) loss."""

    def reconstruction(
        self,
        tokens: PatchTokens,
        mask: Tensor,
        masked_idx: Tensor,
        pred: Tensor,
        per_sample_loss: Tensor,
    ) -> object:
        """What `MAPPretrainer.reconstruct` returns (points: `Reconstruction`)."""


@dataclass
class PretrainOutput:
    """loss: scalar mean over the batch; per_sample_loss: (B,); mask_ratio: the ratio used
    this step; num_masked: masked tokens per sample."""

    loss: Tensor
    per_sample_loss: Tensor
    mask_ratio: float
    num_masked: int


class MAPDecoder(nn.Module):
    """Region-causal Transformer decoder over the full serialized sequence.

    forward(visible (B,V,C_in), visible_idx (B,V), centers (B,G,...), order=None) -> (B,G,C):
    visible features (after `embed`) scattered to their positions, `mask_token` elsewhere;
    positions from `pos_embed(centers)` added before every block; attention mask from
    `region_causal_mask(G, num_regions)`. With `order` (B,G) = [visible_idx ; masked_idx] the
    decoder runs over [visible ; mask tokens] in that order instead (the 3D release); the output
    is scattered back, so it is in serialized order either way.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        num_regions: int,
        pos_embed: nn.Module,
        *,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
    ):
        super().__init__()
        self.num_regions = num_regions
        self.embed = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = pos_embed
        self.blocks = HybridBackbone(
            BackboneConfig(
                dim=dim,
                pattern="T" * depth,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                drop_path_rate=drop_path_rate,
                local_aggregation=False,
            ),
            init="xavier",
        )
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        if isinstance(self.embed, nn.Linear):
            nn.init.xavier_uniform_(self.embed.weight)
            nn.init.zeros_(self.embed.bias)

    @property
    def dim(self) -> int:
        return self.mask_token.shape[-1]

    def attention_mask(self, length: int, device: torch.device) -> Tensor:
        """(G,G) bool region-causal mask, True = may attend."""
        return region_causal_mask(length, self.num_regions, device=device)

    def forward(
        self, visible: Tensor, visible_idx: Tensor, centers: Tensor, order: Tensor | None = None
    ) -> Tensor:
        b, g = centers.shape[:2]
        x = self.embed(visible)
        attn_mask = self.attention_mask(g, centers.device)
        if order is None:
            full = place(self.mask_token.to(x.dtype).expand(b, g, -1), visible_idx, x)
            return self.blocks(full, self.pos_embed(centers), None, attn_mask)
        masks = self.mask_token.to(x.dtype).expand(b, g - x.shape[1], -1)
        out = self.blocks(
            torch.cat([x, masks], dim=1),
            self.pos_embed(ops.gather(centers, order)),
            None,
            attn_mask,
        )
        return place(out, order, out)


@dataclass
class _Pass:
    tokens: PatchTokens
    mask: Tensor
    masked_idx: Tensor
    pred: Tensor
    per_sample_loss: Tensor
    mask_ratio: float


class MAPPretrainer(nn.Module):
    """tokenizer + encoder + MAPDecoder + head + objective (see the module docstring).

    forward(inputs (B,N,3) points | images, generator=None) -> PretrainOutput;
    reconstruct(...) -> the objective's reconstruction (points: `Reconstruction`).
    decoder_order: "serialized" or "release" (see the module docstring); mask_type: "random"
    or "block" (`block_masking` over the token centers).
    Randomness (FPS start, masking, mask ratio) comes from `generator`; pass one on the
    model's device: then the forward has no host sync (a (min,max) mask ratio draws one
    number from it, a sync if it lives on an accelerator).
    """

    def __init__(
        self,
        tokenizer: Callable[..., PatchTokens],
        encoder: TokenEncoder,
        decoder: MAPDecoder,
        objective: nn.Module,
        *,
        mask_ratio=0.6,
        mask_ratio_std: float = 0.25,
        decoder_order: str = "serialized",
        mask_type: str = "random",
    ):
        super().__init__()
        check_mask_ratio(mask_ratio)
        check_choice("decoder_order", decoder_order, DECODER_ORDERS)
        check_choice("mask_type", mask_type, MASK_TYPES)
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.decoder = decoder
        self.head = nn.Linear(decoder.dim, objective.out_features)
        self.objective = objective
        self.mask_ratio = mask_ratio
        self.mask_ratio_std = mask_ratio_std
        self.decoder_order = decoder_order
        self.mask_type = mask_type
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _run(self, inputs: Tensor, generator: torch.Generator | None) -> _Pass:
        tokens = self.tokenizer(inputs, generator)
        x, pos = self.encoder.embed(tokens)  # (B,G,C) each
        b, g, _ = x.shape
        ratio = sample_mask_ratio(self.mask_ratio, std=self.mask_ratio_std, generator=generator)
        num_masked = num_masked_tokens(ratio, g)
        if self.mask_type == "block":
            mask = block_masking(tokens.centers, num_masked, generator=generator)
        else:
            mask = random_masking(b, g, num_masked, generator=generator, device=x.device)
        # visible tokens first, each group in increasing (serialized) position
        by_position = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
        visible_idx, masked_idx = by_position[:, : g - num_masked], by_position[:, g - num_masked :]
        features = self.encoder(
            ops.gather(x, visible_idx),
            ops.gather(pos, visible_idx),
            ops.gather(tokens.centers, visible_idx),
        )
        order = by_position if self.decoder_order == "release" else None
        decoded = self.decoder(features, visible_idx, tokens.centers, order)  # (B,G,C_dec)
        pred = self.head(ops.gather(decoded, masked_idx))  # (B,M,out_features)
        target = ops.gather(self.objective.target(tokens), masked_idx)
        per_sample = self.objective.loss(pred, target)
        return _Pass(tokens, mask, masked_idx, pred, per_sample, ratio)

    def forward(self, inputs: Tensor, generator: torch.Generator | None = None) -> PretrainOutput:
        out = self._run(inputs, generator)
        return PretrainOutput(
            loss=out.per_sample_loss.mean(),
            per_sample_loss=out.per_sample_loss,
            mask_ratio=out.mask_ratio,
            num_masked=out.masked_idx.shape[1],
        )

    @torch.no_grad()
    def reconstruct(self, inputs: Tensor, generator: torch.Generator | None = None):
        """Predictions for one random masking, for visualization (mode left to the caller)."""
        out = self._run(inputs, generator)
        return self.objective.reconstruction(
            out.tokens, out.mask, out.masked_idx, out.pred, out.per_sample_loss
        )
