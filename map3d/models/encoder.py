"""The encoder every task shares (attribute `encoder`): embeddings + hybrid backbone.

`TokenEncoder` is modality-agnostic: it embeds a `PatchTokens` (patch embedding of `patches`,
position embedding of `centers`) and runs the backbone. Each wing plugs in its two embedding
modules: points the mini-PointNet and a center MLP (`map3d.models.points.encoder`), images a
linear patch embedding and a grid position table (`map3d.models.images.encoder`).
"""

from __future__ import annotations

from torch import Tensor, nn

from map3d.models.backbone import HybridBackbone
from map3d.tokenize import PatchTokens


class TokenEncoder(nn.Module):
    """patch_embed (patches -> (B,G,C)), pos_embed (centers -> (B,G,C)), backbone."""

    def __init__(self, patch_embed: nn.Module, pos_embed: nn.Module, backbone: HybridBackbone):
        super().__init__()
        self.patch_embed = patch_embed
        self.pos_embed = pos_embed
        self.backbone = backbone

    @property
    def dim(self) -> int:
        return self.backbone.config.dim

    def embed(self, tokens: PatchTokens) -> tuple[Tensor, Tensor]:
        """PatchTokens -> (tokens (B,G,C), pos (B,G,C))."""
        return self.patch_embed(tokens.patches), self.pos_embed(tokens.centers)

    def forward(self, x: Tensor, pos: Tensor, centers: Tensor | None = None) -> Tensor:
        """(B,L,C) tokens and positions, optional (B,G,3) centers -> (B,L,C) features."""
        return self.backbone(x, pos, centers)
