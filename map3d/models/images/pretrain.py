"""MAP pretraining on images: the shared MAPPretrainer and MAPDecoder with image parts.

The decoder has R = H/p regions by default (one per image row) and positions from its own
`ImagePosition`; the objective is `PixelObjective`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from map3d.layers import check_mask_ratio
from map3d.models.images.encoder import (
    ImageEncoderConfig,
    ImagePosition,
    build_image_encoder,
    build_image_tokenizer,
)
from map3d.models.images.objective import PixelObjective
from map3d.models.pretrainer import MAPDecoder, MAPPretrainer


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
        build_image_tokenizer(enc),
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
