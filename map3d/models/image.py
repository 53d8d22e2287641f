"""The image path: MAP for 2D as a different set of parts around the shared core.

    images (B,3,H,W) -> ImagePatchifier (raster order, L = (H/p)(W/p) tokens of p*p*3 pixels)
    -> ImagePatchEmbed (linear) + ImagePosition (learned table or 2D sin-cos) -> TokenEncoder
    -> the shared HybridBackbone (no local aggregation), MAPPretrainer, MAPDecoder with
       R = H/p regions (one per image row) -> PixelObjective (normalized-pixel MSE, masked only)

Presets follow the MAP 2D release (github yunzeliu/MAP, `models_mamba.py`): `map_tiny_patch16_224`
is C=192 with 24 BiMamba blocks and an attention block after every third ("MMMT" x 8), attention
blocks with 12 heads, MLP ratio 2 and qkv bias; small/base are C=384/768 with the same stack;
large is C=1024 with "MMMT" x 16 and huge C=1536 with "MMMT" x 12. Documented deviations:
large uses 16 heads (the release's default 12 does not divide 1024); the shared backbone adds the
position embedding before every block (the release adds it once), and its blocks are
pre-norm residual blocks (the release's Vim blocks fuse add+norm); the classifier pools the mean
token (MAE's finetuning protocol) instead of the release's 12 MambaR register tokens; the
decoder width defaults to the encoder's (the release uses 192 for every size: set
`decoder_dim=192`). `map_nano_patch4_16` (C=32, "MMMT", 16x16 images) is for tests and CPU runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from map3d.layers import check_mask_ratio
from map3d.models.backbone import BackboneConfig, HybridBackbone, init_weights
from map3d.models.encoder import TokenEncoder
from map3d.models.pretrainer import MAPDecoder, MAPPretrainer, place, take
from map3d.models.registry import register_model, register_task
from map3d.tokenize import PatchTokens
from map3d.tokenize.image import ImagePatchifier, normalized_pixel_target, unpatchify

POSITION_EMBEDDINGS = ("learned", "sincos")


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"image_size must be an int or (height, width), got {size!r}")


def _release_backbone(dim: int, pattern: str, num_heads: int = 12) -> BackboneConfig:
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

    backbone: BackboneConfig = field(default_factory=lambda: _release_backbone(192, "MMMT" * 8))
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


def _tokenizer(config: ImageEncoderConfig) -> ImagePatchifier:
    return ImagePatchifier(config.patch_size, image_size=_pair(config.image_size))


# ----------------------------------------------------------------------------- pretraining


@dataclass
class ImageReconstruction:
    """For visualization, in raster order and input pixel space.

    images (B,C,H,W): the input; mask (B,L) bool, True = masked; pred_images (B,C,H,W):
    predictions at masked patches (mapped back from normalized pixels with each patch's own
    mean and std when the target is normalized), the input at visible ones; loss (B,):
    per-image loss on the masked patches; patch_size p.
    """

    images: Tensor
    mask: Tensor
    pred_images: Tensor
    loss: Tensor
    patch_size: int


class PixelObjective(nn.Module):
    """Each masked token regresses its p*p*C pixels; mean squared error on masked tokens only.

    norm_pix=True: the target is each patch standardized by its own mean and std (MAE's
    `norm_pix_loss`, the MAP 2D release's setting); False: raw pixels.
    """

    def __init__(self, patch_size: int, channels: int = 3, norm_pix: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.channels = channels
        self.norm_pix = norm_pix
        self.out_features = patch_size * patch_size * channels

    def target(self, tokens: PatchTokens) -> Tensor:
        """(B,L,p*p*C) regression target of every token."""
        return normalized_pixel_target(tokens.patches) if self.norm_pix else tokens.patches

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target (B,M,p*p*C) of the masked tokens -> (B,) mean squared error."""
        dtype = torch.promote_types(pred.dtype, torch.float32)  # half precision -> float32
        return (pred.to(dtype) - target.to(dtype)).pow(2).mean(dim=(1, 2))

    def reconstruction(
        self,
        tokens: PatchTokens,
        mask: Tensor,
        masked_idx: Tensor,
        pred: Tensor,
        per_sample_loss: Tensor,
    ) -> ImageReconstruction:
        patches = tokens.patches
        pred = pred.to(patches.dtype)
        if self.norm_pix:
            gt = take(patches, masked_idx)
            pred = pred * (gt.var(dim=-1, keepdim=True) + 1e-6).sqrt() + gt.mean(-1, keepdim=True)
        p, grid = self.patch_size, tokens.grid
        return ImageReconstruction(
            images=unpatchify(patches, p, grid),
            mask=mask,
            pred_images=unpatchify(place(patches, masked_idx, pred), p, grid),
            loss=per_sample_loss,
            patch_size=p,
        )

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, channels={self.channels}, norm_pix={self.norm_pix}"


@dataclass
class ImagePretrainConfig:
    """MAP pretraining on images. Defaults: the MAP 2D release.

    mask_ratio: float, or (min, max) drawn once per batch from a normal of std
      `mask_ratio_std` around the middle, truncated to the range (release: 0.3-0.7, std 0.25).
    num_regions: decoder regions R; None = H/p, one region per image row (MAP); 1 = an MAE
      decoder (full attention); L = token-level AR. L % R must be 0.
    decoder_dim / decoder_num_heads: None = the encoder's (release: 192 and 16).
    norm_pix: per-patch normalized pixel target (release) or raw pixels.
    """

    encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    mask_ratio: float | tuple[float, float] = (0.3, 0.7)
    mask_ratio_std: float = 0.25
    num_regions: int | None = None
    decoder_depth: int = 4
    decoder_dim: int | None = None
    decoder_num_heads: int | None = None
    decoder_mlp_ratio: float = 4.0
    decoder_drop_path_rate: float = 0.0
    norm_pix: bool = True

    def __post_init__(self):
        if isinstance(self.mask_ratio, list):
            self.mask_ratio = tuple(self.mask_ratio)
        check_mask_ratio(self.mask_ratio)
        rows, cols = self.encoder.grid
        if self.num_regions is not None and (
            self.num_regions < 1 or (rows * cols) % self.num_regions
        ):
            raise ValueError(
                f"num_regions={self.num_regions} must divide the L={rows}*{cols}={rows * cols} "
                "patch tokens (L % R == 0)"
            )

    @property
    def regions(self) -> int:
        """R actually used: `num_regions`, or the number of patch rows H/p."""
        return self.num_regions if self.num_regions is not None else self.encoder.grid[0]


def build_image_pretrainer(config: ImagePretrainConfig) -> MAPPretrainer:
    enc = config.encoder
    dim = config.decoder_dim or enc.dim
    model = MAPPretrainer(
        _tokenizer(enc),
        build_image_encoder(enc),
        MAPDecoder(
            enc.dim,
            dim,
            config.decoder_depth,
            config.decoder_num_heads or enc.backbone.num_heads,
            config.regions,
            ImagePosition(dim, enc.grid, enc.pos_embed),
            mlp_ratio=config.decoder_mlp_ratio,
            drop_path_rate=config.decoder_drop_path_rate,
        ),
        PixelObjective(enc.patch_size, enc.in_channels, config.norm_pix),
        mask_ratio=config.mask_ratio,
        mask_ratio_std=config.mask_ratio_std,
    )
    model.config = config
    return model


# ----------------------------------------------------------------------------- classification


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
        self.tokenizer = _tokenizer(config.encoder)
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


# ----------------------------------------------------------------------------- registry


@register_task("pretrain", modality="images", config=ImagePretrainConfig)
def _build_pretrainer(config: ImagePretrainConfig) -> MAPPretrainer:
    return build_image_pretrainer(config)


@register_task("classify", modality="images", config=ImageClassifierConfig)
def _build_classifier(config: ImageClassifierConfig) -> ImageClassifier:
    return ImageClassifier(config)


def _release(dim: int, repeats: int, num_heads: int = 12) -> ImageEncoderConfig:
    return ImageEncoderConfig(_release_backbone(dim, "MMMT" * repeats, num_heads))


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


__all__ = [
    "POSITION_EMBEDDINGS",
    "ImageClassifier",
    "ImageClassifierConfig",
    "ImageEncoderConfig",
    "ImagePatchEmbed",
    "ImagePosition",
    "ImagePretrainConfig",
    "ImageReconstruction",
    "PixelObjective",
    "build_image_encoder",
    "build_image_pretrainer",
    "sincos_position_2d",
]
