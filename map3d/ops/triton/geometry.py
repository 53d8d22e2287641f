"""kNN and Chamfer distance with Triton neighbour selection.

Only the (non-differentiable) choice of neighbours runs in Triton; distances of the chosen
neighbours are recomputed by the reference's differentiable helpers, so values, gradients and
ordering follow `map3d.ops.reference.geometry` exactly (ties may pick another of the tied
points, as the reference allows). Triton is imported inside the functions.
"""

from __future__ import annotations

import torch

from map3d.ops.reference.geometry import gather, safe_sqrt, squared_distances_to

MAX_POINTS = 8192  # candidate points per cloud held in registers
MAX_K = 128
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def nearest(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """query (B,M,3), points (B,N,3) -> (B,M,k) int64 indices of the k nearest points,
    nearest first."""
    from map3d.ops.triton._geometry_kernels import _nearest_kernel

    B, M, _ = query.shape
    N = points.shape[1]
    idx = torch.empty(B, M, k, dtype=torch.long, device=query.device)
    if M == 0 or k == 0:
        return idx
    block_n = max(16, _pow2(N))
    block_m = max(1, min(_pow2(M), 4096 // block_n))
    grid = (B, -(-M // block_m))
    _nearest_kernel[grid](
        query,
        points,
        idx,
        M,
        N,
        k,
        *query.stride(),
        *points.stride(),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        num_warps=4 if block_m * block_n >= 2048 else 2,
    )
    return idx


def _fits(*clouds: torch.Tensor) -> bool:
    return all(
        c.is_cuda
        and c.dtype in _DTYPES
        and c.dim() == 3
        and c.shape[-1] == 3
        and 0 < c.shape[1] <= MAX_POINTS
        for c in clouds
    )


def knn_supports(query, points, **options) -> bool:
    return _fits(query, points) and options.get("k", 1) <= MAX_K


def chamfer_supports(x, y, **options) -> bool:
    return _fits(x, y)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as the reference knn: (dist2 (B,M,k) ascending, idx (B,M,k) int64)."""
    idx = nearest(query, points, k)
    dtype = _compute_dtype(points.dtype)
    dist2 = squared_distances_to(query.to(dtype), gather(points.to(dtype), idx))
    dist2, order = dist2.sort(dim=-1)
    return dist2.to(points.dtype), idx.gather(-1, order)


def chamfer_distance(x: torch.Tensor, y: torch.Tensor, *, norm: int = 2) -> torch.Tensor:
    """Same contract as the reference chamfer_distance: (B,) per cloud."""
    dtype = _compute_dtype(torch.promote_types(x.dtype, y.dtype))
    xs, ys = x.to(dtype), y.to(dtype)
    d_xy = squared_distances_to(xs, gather(ys, nearest(xs, ys, 1)))[..., 0]  # (B,P)
    d_yx = squared_distances_to(ys, gather(xs, nearest(ys, xs, 1)))[..., 0]  # (B,Q)
    if norm == 2:
        out = d_xy.mean(1) + d_yx.mean(1)
    else:
        out = (safe_sqrt(d_xy).mean(1) + safe_sqrt(d_yx).mean(1)) / 2
    return out.to(torch.promote_types(x.dtype, y.dtype))
