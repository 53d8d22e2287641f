"""Image tokens: patchify config, linear patch embedding, grid position embedding, encoder.

images (B,3,H,W) -> ImagePatchifier (raster order, L = (H/p)(W/p) tokens of p*p*3 pixels)
-> ImagePatchEmbed (linear) + ImagePosition (learned table or 2D sin-cos) -> TokenEncoder
(the shared HybridBackbone, without local aggregation)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from map3d.models.backbone import BackboneConfig, HybridBackbone, init_weights
from map3d.models.encoder import TokenEncoder
from map3d.tokenize.image import ImagePatchifier

POSITION_EMBEDDINGS = ("learned", "sincos")


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"image_size must be an int or (height, width), got {size!r}")


def release_backbone(dim: int, pattern: str, num_heads: int = 12) -> BackboneConfig:
    """The MAP 2D release's stack: MLP ratio 2, qkv bias, drop path 0.1, no local aggregation."""
    return BackboneConfig(
        dim=dim,
        pattern=pattern,
        num_heads=num_heads,
        mlp_ratio=2.0,
        qkv_bias=True,
        drop_path_rate=0.1,
        local_aggregation=False,
    )


@dataclass
class ImageEncoderConfig:
    """Image encoder = linear patch embedding + position embedding + hybrid backbone.

    image_size: int or (H, W), each divisible by `patch_size`; inputs must have this size.
    pos_embed: "learned" (a table per grid position, the release's) or "sincos" (fixed 2D
    sine-cosine of the patch-center coordinates, MAE's; needs C % 4 == 0).
    """

    backbone: BackboneConfig = field(default_factory=lambda: release_backbone(192, "MMMT" * 8))
    image_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_channels: int = 3
    pos_embed: str = "learned"

    def __post_init__(self):
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        height, width = _pair(self.image_size)
        if self.patch_size < 1 or height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} must be divisible by patch_size={self.patch_size}"
            )
        if self.pos_embed not in POSITION_EMBEDDINGS:
            raise ValueError(f"pos_embed={self.pos_embed!r} must be one of {POSITION_EMBEDDINGS}")
        if self.pos_embed == "sincos" and self.backbone.dim % 4:
            raise ValueError(f"sincos pos_embed needs dim % 4 == 0, got dim={self.backbone.dim}")
        if self.backbone.local_aggregation:
            raise ValueError(
                "images have no 3D local aggregation: set backbone.local_aggregation=False"
            )

    @property
    def dim(self) -> int:
        return self.backbone.dim

    @property
    def grid(self) -> tuple[int, int]:
        """(H/p, W/p): patch rows and columns."""
        height, width = _pair(self.image_size)
        return (height // self.patch_size, width // self.patch_size)

    @property
    def patch_features(self) -> int:
        """p*p*channels values per token."""
        return self.patch_size * self.patch_size * self.in_channels


class ImagePatchEmbed(nn.Module):
    """Linear patch embedding: (B,L,p*p*channels) pixels -> (B,L,C) tokens."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_features, dim)

    def forward(self, patches: Tensor) -> Tensor:
        return self.proj(patches)


def sincos_position_2d(centers: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """MAE's 2D sine-cosine embedding of patch grid positions: (B,L,2) -> (B,L,C).

    Half the channels encode the row, half the column, each as [sin, cos] of C/4 frequencies
    1 / temperature^(k / (C/4)); positions are the integer grid indices (centers - 0.5).
    """
    quarter = dim // 4
    omega = 1.0 / temperature ** (
        torch.arange(quarter, device=centers.device, dtype=torch.float32) / quarter
    )
    pos = (centers.float() - 0.5).unsqueeze(-1) * omega  # (B,L,2,C/4)
    emb = torch.cat([pos.sin(), pos.cos()], dim=-1)  # (B,L,2,C/2): [sin, cos] per axis
    return emb.flatten(-2).to(centers.dtype)


class ImagePosition(nn.Module):
    """Patch-center coordinates (B,L,2) (row, col in patch units) -> (B,L,C) positions.

    "learned": a (rows*cols, C) table indexed by grid cell (trunc-normal 0.02 init), so any
    subset of tokens (e.g. the visible ones) gets its own entries; "sincos": fixed.
    """

    def __init__(self, dim: int, grid: tuple[int, int], kind: str = "learned"):
        super().__init__()
        if kind not in POSITION_EMBEDDINGS:
            raise ValueError(f"position embedding {kind!r} must be one of {POSITION_EMBEDDINGS}")
        self.dim, self.grid, self.kind = dim, tuple(grid), kind
        if kind == "learned":
            self.table = nn.Parameter(torch.zeros(grid[0] * grid[1], dim))
            nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, centers: Tensor) -> Tensor:
        if self.kind == "sincos":
            return sincos_position_2d(centers, self.dim)
        cell = centers.detach().floor().long()
        return self.table[cell[..., 0] * self.grid[1] + cell[..., 1]]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, grid={self.grid}, kind={self.kind}"


def build_image_encoder(config: ImageEncoderConfig) -> TokenEncoder:
    encoder = TokenEncoder(
        ImagePatchEmbed(config.patch_features, config.dim),
        ImagePosition(config.dim, config.grid, config.pos_embed),
        HybridBackbone(config.backbone),
    )
    init_weights(encoder.patch_embed)
    return encoder


def build_image_tokenizer(config: ImageEncoderConfig) -> ImagePatchifier:
    """The `ImagePatchifier` of an image task: p x p patches of `image_size` inputs."""
    return ImagePatchifier(config.patch_size, image_size=_pair(config.image_size))
