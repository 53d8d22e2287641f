"""The image wing: MAP for 2D as a different set of parts around the shared core.

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

from map3d.models.images import presets  # noqa: F401  (registers the image presets and tasks)
from map3d.models.images.classifier import ImageClassifier, ImageClassifierConfig
from map3d.models.images.encoder import (
    POSITION_EMBEDDINGS,
    ImageEncoderConfig,
    ImagePatchEmbed,
    ImagePosition,
    build_image_encoder,
    build_image_tokenizer,
    sincos_position_2d,
)
from map3d.models.images.objective import ImageReconstruction, PixelObjective
from map3d.models.images.pretrain import ImagePretrainConfig, build_image_pretrainer

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
    "build_image_tokenizer",
    "sincos_position_2d",
]
