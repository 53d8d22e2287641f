"""Pure-PyTorch point-cloud ops: farthest point sampling, kNN, gather, Chamfer distance.

Inputs are assumed valid (`map3d.ops` checks them). Neighbours are selected on exact Euclidean
distances (`torch.cdist` without the |a|^2 - 2ab + |b|^2 shortcut, which cancels badly), in
chunks of queries to bound memory; the returned squared distances are then recomputed from the
selected points, so they are differentiable and only O(output) memory is kept for backward.
"""

from __future__ import annotations

import torch

# Largest number of pairwise distances held at once by `_nearest` (64 MiB of float32).
_PAIR_BUDGET = 1 << 24


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def squared_distances_to(query: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """query (B,M,D), neighbours (B,M,k,D) -> squared distances (B,M,k)."""
    return (query.unsqueeze(2) - neighbours).square().sum(-1)


@torch.no_grad()
def _nearest(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B,M,k) int64 of the k nearest `points` to each query (k=1: argmin)."""
    B, M, _ = query.shape
    N = points.shape[1]
    dtype = _compute_dtype(points.dtype)
    query, points = query.to(dtype), points.to(dtype)
    chunk = max(1, _PAIR_BUDGET // max(1, B * N))
    parts = []
    for start in range(0, M, chunk):
        dist = torch.cdist(
            query[:, start : start + chunk], points, compute_mode="donot_use_mm_for_euclid_dist"
        )
        if k == 1:
            parts.append(dist.argmin(dim=-1, keepdim=True))
        else:
            parts.append(dist.topk(k, dim=-1, largest=False, sorted=False).indices)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


@torch.no_grad()
def _nearest_both_ways(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest y of each x (B,P,1) and nearest x of each y (B,Q,1), from one distance matrix."""
    B, P, _ = x.shape
    Q = y.shape[1]
    chunk = max(1, _PAIR_BUDGET // max(1, B * Q))
    to_y, best, to_x = [], None, None
    for start in range(0, P, chunk):
        dist = torch.cdist(
            x[:, start : start + chunk], y, compute_mode="donot_use_mm_for_euclid_dist"
        )
        to_y.append(dist.argmin(dim=2, keepdim=True))
        value, index = dist.min(dim=1)  # (B,Q): best x of this chunk for each y
        if best is None:
            best, to_x = value, index
        else:
            closer = value < best
            best = torch.where(closer, value, best)
            to_x = torch.where(closer, index + start, to_x)
    return torch.cat(to_y, dim=1), to_x.unsqueeze(-1)


def gather(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values (B,N,C...), idx (B,...) int64 -> (B,...,C...): out[b, i...] = values[b, idx[b, i...]].

    Differentiable with respect to `values` (backward is a scatter-add).
    """
    B = values.shape[0]
    flat = idx.reshape(B, -1, *([1] * (values.dim() - 2)))
    flat = flat.expand(-1, -1, *values.shape[2:])
    out = torch.gather(values, 1, flat)
    return out.reshape(*idx.shape, *values.shape[2:])


def fps(
    points: torch.Tensor,
    num_samples: int,
    *,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Farthest point sampling: points (B,N,3) -> idx (B,S) int64, S = num_samples.

    Starts at index 0 (or a random index per cloud drawn from `generator` if `random_start`),
    then repeatedly takes the point whose distance to the chosen set is largest (first index on
    ties). Chosen points are never chosen again, so indices are distinct even with duplicates.
    `exclude` (B,N) bool: points never taken after the start (pointnet2_ops skips points with
    |p|^2 <= 1e-3 this way).
    """
    B, N, _ = points.shape
    device = points.device
    # one contiguous (B,N) plane per coordinate: each step is a few flat vector ops
    planes = points.detach().to(_compute_dtype(points.dtype)).unbind(-1)
    planes = [plane.contiguous() for plane in planes]
    if random_start:
        gen_device = generator.device if generator is not None else "cpu"
        farthest = torch.randint(N, (B, 1), generator=generator, device=gen_device).to(device)
    else:
        farthest = torch.zeros(B, 1, dtype=torch.long, device=device)
    idx = torch.empty(B, num_samples, dtype=torch.long, device=device)
    min_d2 = torch.full((B, N), float("inf"), dtype=planes[0].dtype, device=device)
    if exclude is not None:
        min_d2.masked_fill_(exclude.to(device), float("-inf"))
    for i in range(num_samples):
        idx[:, i : i + 1] = farthest
        d2 = None
        for plane in planes:
            diff = plane - plane.gather(1, farthest)
            d2 = diff.square_() if d2 is None else d2.add_(diff.square_())
        torch.minimum(min_d2, d2, out=min_d2)
        min_d2.scatter_(1, farthest, -1.0)  # never pick a chosen point again
        farthest = min_d2.argmax(dim=1, keepdim=True)
    return idx


def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours: query (B,M,3), points (B,N,3) -> (dist2 (B,M,k), idx (B,M,k) int64).

    dist2 are squared Euclidean distances in ascending order, differentiable with respect to
    `query` and `points`; ties are broken arbitrarily.
    """
    idx = _nearest(query, points, k)
    dtype = _compute_dtype(points.dtype)
    dist2 = squared_distances_to(query.to(dtype), gather(points.to(dtype), idx))
    dist2, order = dist2.sort(dim=-1)  # ascending on the returned values themselves
    return dist2.to(points.dtype), idx.gather(-1, order)


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 (not inf/NaN) at 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, 1.0)), 0.0)


def chamfer_distance(x: torch.Tensor, y: torch.Tensor, *, norm: int = 2) -> torch.Tensor:
    """Chamfer distance per cloud: x (B,P,3), y (B,Q,3) -> (B,).

    norm=2 ("cdl2" in Point-MAE): mean over x of the squared distance to the nearest y, plus
    mean over y of the squared distance to the nearest x.
    norm=1 ("cdl1" in Point-MAE): the same with Euclidean (not squared) distances, the sum
    halved: (mean_x ||x - nn_y(x)|| + mean_y ||y - nn_x(y)||) / 2. Its gradient at a zero
    distance is taken as 0.
    """
    dtype = _compute_dtype(torch.promote_types(x.dtype, y.dtype))
    xs, ys = x.to(dtype), y.to(dtype)
    to_y, to_x = _nearest_both_ways(xs, ys)
    d_xy = squared_distances_to(xs, gather(ys, to_y))[..., 0]  # (B,P)
    d_yx = squared_distances_to(ys, gather(xs, to_x))[..., 0]  # (B,Q)
    if norm == 2:
        out = d_xy.mean(1) + d_yx.mean(1)
    else:
        out = (safe_sqrt(d_xy).mean(1) + safe_sqrt(d_yx).mean(1)) / 2
    return out.to(torch.promote_types(x.dtype, y.dtype))
