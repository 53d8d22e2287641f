"""Building blocks: BiMamba, LNP, attention, drop path, embeddings and masks."""

from map3d.layers.attention import Attention, Mlp, TransformerBlock
from map3d.layers.bimamba import BIMAMBA_FLIPS, BiMamba
from map3d.layers.drop_path import DropPath
from map3d.layers.embed import PositionMLP
from map3d.layers.lnp import LNP, LNP_STD_SCOPES
from map3d.layers.masks import (
    MASK_TYPES,
    block_masking,
    check_mask_ratio,
    num_masked_tokens,
    random_masking,
    region_causal_mask,
    sample_mask_ratio,
)

__all__ = [
    "BIMAMBA_FLIPS",
    "LNP",
    "LNP_STD_SCOPES",
    "MASK_TYPES",
    "Attention",
    "BiMamba",
    "DropPath",
    "Mlp",
    "PositionMLP",
    "TransformerBlock",
    "block_masking",
    "check_mask_ratio",
    "num_masked_tokens",
    "random_masking",
    "region_causal_mask",
    "sample_mask_ratio",
]
