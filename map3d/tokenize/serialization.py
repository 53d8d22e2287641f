"""Serialization of 3D tokens along space-filling curves.

Small pure functions of integer grid coordinates (like Pointcept's serialization utilities):
`z_order_encode` and `hilbert_encode` map (...,3) int64 grid coordinates to (...) int64 curve
codes; `serialize` quantizes each sample's centers to a 2**depth grid and sorts by code. All of
it is batched on the device: no Python loop over the batch and no host sync.

Orders: "z", "hilbert", "z-trans", "hilbert-trans" (x and y axes swapped before encoding, as
Pointcept's transposed variants) and "none" (keep the input order, e.g. FPS order).
"""

from __future__ import annotations

import torch
from torch import Tensor

SERIALIZATIONS = ("hilbert", "z", "hilbert-trans", "z-trans", "none")
_TRANSPOSED_AXES = [1, 0, 2]


def _check_grid(grid: Tensor, depth: int) -> None:
    if grid.shape[-1] != 3:
        raise ValueError(f"grid coordinates must be (...,3), got shape {tuple(grid.shape)}")
    if not 1 <= depth <= 21:
        raise ValueError(f"depth must be in [1, 21] so that 3*depth bits fit int64, got {depth}")


def z_order_encode(grid: Tensor, depth: int) -> Tensor:
    """Morton code: interleave the bits of (x, y, z), x most significant. (...,3) -> (...) int64."""
    _check_grid(grid, depth)
    grid = grid.long()
    code = torch.zeros(grid.shape[:-1], dtype=torch.long, device=grid.device)
    for bit in range(depth - 1, -1, -1):
        for axis in range(3):
            code = (code << 1) | ((grid[..., axis] >> bit) & 1)
    return code


def hilbert_encode(grid: Tensor, depth: int) -> Tensor:
    """Hilbert-curve index of (...,3) int64 coordinates in [0, 2**depth) -> (...) int64.

    Skilling's transform ("Programming the Hilbert curve", 2004): undo the excess work of the
    Gray-code walk axis by axis, Gray-encode, then interleave the transposed bits.
    """
    _check_grid(grid, depth)
    x = [grid[..., axis].long() for axis in range(3)]
    q = 1 << (depth - 1)
    while q > 1:
        p = q - 1
        for i in range(3):
            high = (x[i] & q) != 0
            if i == 0:  # invert the low bits of x0 where the high bit is set
                x[0] = torch.where(high, x[0] ^ p, x[0])
                continue
            t = torch.where(high, torch.zeros_like(x[0]), (x[0] ^ x[i]) & p)  # else exchange
            x[0] = torch.where(high, x[0] ^ p, x[0] ^ t)
            x[i] = x[i] ^ t
        q >>= 1
    for i in range(1, 3):
        x[i] = x[i] ^ x[i - 1]
    t = torch.zeros_like(x[0])
    q = 1 << (depth - 1)
    while q > 1:
        t = torch.where((x[2] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    x = [xi ^ t for xi in x]
    code = torch.zeros_like(x[0])
    for bit in range(depth - 1, -1, -1):
        for axis in range(3):
            code = (code << 1) | ((x[axis] >> bit) & 1)
    return code


def quantize(points: Tensor, depth: int) -> Tensor:
    """Per-sample min-max quantization of (B,G,3) coordinates to int64 cells in [0, 2**depth)."""
    low = points.amin(dim=1, keepdim=True)
    extent = (points.amax(dim=1, keepdim=True) - low).amax(dim=-1, keepdim=True)
    cells = 1 << depth
    scaled = (points - low) / extent.clamp_min(torch.finfo(points.dtype).tiny) * cells
    return scaled.long().clamp_(0, cells - 1)


def curve_codes(grid: Tensor, method: str, depth: int) -> Tensor:
    """(...,3) int64 grid coordinates -> (...) int64 codes along the named curve."""
    if method.endswith("-trans"):
        grid = grid[..., _TRANSPOSED_AXES]
        method = method[: -len("-trans")]
    if method == "hilbert":
        return hilbert_encode(grid, depth)
    if method == "z":
        return z_order_encode(grid, depth)
    raise ValueError(f"unknown serialization {method!r}; choose one of {SERIALIZATIONS}")


def inverse_permutation(order: Tensor) -> Tensor:
    """(B,G) permutation -> (B,G) inverse, so that x[order][inverse] == x along dim 1."""
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def serialize(centers: Tensor, method: str = "hilbert", depth: int = 10) -> tuple[Tensor, Tensor]:
    """Order (B,G,3) centers along a curve -> (order (B,G), inverse (B,G)) int64.

    `serialized = centers.gather(1, order)`; ties (same cell) keep their input order.
    """
    if method not in SERIALIZATIONS:
        raise ValueError(f"unknown serialization {method!r}; choose one of {SERIALIZATIONS}")
    if centers.dim() != 3 or centers.shape[-1] != 3:
        raise ValueError(f"centers must be (B,G,3), got shape {tuple(centers.shape)}")
    b, g, _ = centers.shape
    if method == "none":
        order = torch.arange(g, device=centers.device).expand(b, g).contiguous()
        return order, order.clone()
    codes = curve_codes(quantize(centers, depth), method, depth)
    order = torch.sort(codes, dim=1, stable=True).indices
    return order, inverse_permutation(order)
