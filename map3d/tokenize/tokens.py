"""`PatchTokens`: the one token type every tokenizer (points, images) produces."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class PatchTokens:
    """Patches in serialized order, with where they sit and how they were ordered.

    patches: (B,G,K,3) points relative to their center | images: (B,L,p*p*3) pixels.
    centers: (B,G,3) world coordinates | images: (B,L,2) patch grid coordinates.
    order:   (B,G) int64 permutation applied (serialized = original[order]).
    inverse: (B,G) int64 inverse permutation (original = serialized[inverse]).
    grid:    images: (H/p, W/p); points: None.
    """

    patches: Tensor
    centers: Tensor
    order: Tensor
    inverse: Tensor
    grid: tuple[int, int] | None = None

    @property
    def num_tokens(self) -> int:
        """G (or L): number of tokens per sample."""
        return self.centers.shape[1]
