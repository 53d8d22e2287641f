"""Tokenizers: point grouping and serialization curves, image patchify -> `PatchTokens`."""

from map3d.tokenize.points import FPS_RULES, PointGrouper, check_point_batch
from map3d.tokenize.serialization import (
    SERIALIZATIONS,
    hilbert_encode,
    inverse_permutation,
    serialize,
    z_order_encode,
)
from map3d.tokenize.tokens import PatchTokens

__all__ = [
    "FPS_RULES",
    "SERIALIZATIONS",
    "PatchTokens",
    "PointGrouper",
    "check_point_batch",
    "hilbert_encode",
    "inverse_permutation",
    "serialize",
    "z_order_encode",
]
