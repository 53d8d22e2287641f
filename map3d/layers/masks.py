"""Masks: per-sample random or block token masking and the MAP region-causal attention mask."""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from torch import Tensor

MaskRatio = float | tuple[float, float]


def check_mask_ratio(ratio: MaskRatio) -> None:
    """ValueError unless `ratio` is a float in (0,1) or a (min,max) pair with 0 < min <= max < 1."""
    if isinstance(ratio, (tuple, list)):
        if len(ratio) != 2 or not 0.0 < ratio[0] <= ratio[1] < 1.0:
            raise ValueError(
                f"mask_ratio range must be (min, max) with 0 < min <= max < 1, got {ratio!r}"
            )
    elif not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {ratio!r}")


def sample_mask_ratio(
    ratio: MaskRatio, *, std: float = 0.25, generator: torch.Generator | None = None
) -> float:
    """A float ratio is returned as is; a (min,max) range draws one ratio for the batch from a
    normal centered on (min+max)/2 with `std`, truncated to [min,max] (inverse-CDF sampling,
    as scipy's truncnorm in the MAP/MAGE releases). Uses one uniform from `generator`; draw
    it from a CPU generator to keep accelerator code free of host syncs.
    """
    check_mask_ratio(ratio)
    if not isinstance(ratio, (tuple, list)):
        return float(ratio)
    low, high = float(ratio[0]), float(ratio[1])
    if low == high:
        return low
    device = generator.device if generator is not None else "cpu"
    u = float(torch.rand((), generator=generator, device=device))
    normal = NormalDist(mu=(low + high) / 2, sigma=std)
    cdf_low, cdf_high = normal.cdf(low), normal.cdf(high)
    return min(max(normal.inv_cdf(cdf_low + u * (cdf_high - cdf_low)), low), high)


def num_masked_tokens(ratio: float, num_tokens: int) -> int:
    """floor(ratio * G) as Point-MAE, kept in [1, G-1] so both sets are non-empty."""
    if num_tokens < 2:
        raise ValueError(f"masking needs at least 2 tokens, got {num_tokens}")
    return min(max(math.floor(ratio * num_tokens), 1), num_tokens - 1)


def random_masking(
    batch: int,
    num_tokens: int,
    num_masked: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(B,G) bool mask, True = masked: each sample gets its own random `num_masked` tokens.

    The noise is drawn on the generator's device (so a CPU generator works for GPU models) and
    moved to `device`.
    """
    if not 0 <= num_masked <= num_tokens:
        raise ValueError(f"num_masked={num_masked} must be in [0, {num_tokens}]")
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch, num_tokens, generator=generator, device=noise_device).to(device)
    chosen = noise.argsort(dim=1)[:, :num_masked]
    mask = torch.zeros(batch, num_tokens, dtype=torch.bool, device=noise.device)
    return mask.scatter_(1, chosen, True)


MASK_TYPES = ("random", "block")


def block_masking(
    centers: Tensor, num_masked: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """(B,G) bool mask, True = masked: per sample, the `num_masked` tokens whose centers are
    nearest to one random token's center (a contiguous blob; the release's `mask_type: block`).

    centers (B,G,D); the seed token is drawn on the generator's device.
    """
    b, g = centers.shape[:2]
    if not 0 <= num_masked <= g:
        raise ValueError(f"num_masked={num_masked} must be in [0, {g}]")
    gen_device = generator.device if generator is not None else centers.device
    seed = torch.randint(g, (b,), generator=generator, device=gen_device).to(centers.device)
    anchor = centers[torch.arange(b, device=centers.device), seed].unsqueeze(1)  # (B,1,D)
    dist = (centers - anchor).norm(dim=-1)  # (B,G)
    chosen = dist.argsort(dim=1)[:, :num_masked]
    mask = torch.zeros(b, g, dtype=torch.bool, device=centers.device)
    return mask.scatter_(1, chosen, True)


def region_causal_mask(
    length: int, num_regions: int, *, device: torch.device | str | None = None
) -> Tensor:
    """(L,L) bool attention mask, True = may attend, for R equal contiguous regions.

    Token i (region i // (L/R)) attends to every token of its own region and of all earlier
    regions. R = 1: full attention (MAE decoder); R = L: token-level causal (AR decoder).
    """
    if num_regions < 1 or length % num_regions:
        raise ValueError(
            f"sequence length L={length} must be divisible by the number of decoder regions "
            f"R={num_regions} (G % R == 0)"
        )
    region = torch.arange(length, device=device) // (length // num_regions)
    return region.unsqueeze(1) >= region.unsqueeze(0)
