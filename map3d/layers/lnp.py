"""LNP: Mamba3D's local norm pooling over the k nearest token centers.

The elementwise heart of LNP (`lnp_pool`: gather, normalize, concatenate, affine, softmax pool)
is a dozen small kernels forward and twice that backward when run op by op. On CUDA it runs
as one `torch.compile`d region (fused kernels, no (B,G,k,2C) intermediates in memory), compiled
once per shape at first use; `MAP3D_COMPILE=0` keeps it eager.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from map3d import ops
from map3d.layers.compile import compile_problem

LNP_STD_SCOPES = ("sample", "batch")


def lnp_pool(
    feat: Tensor, idx: Tensor, alpha: Tensor, beta: Tensor, per_sample: bool, eps: float
) -> Tensor:
    """feat (B,G,C), idx (B,G,k) neighbour indices -> (B,G,2C).

    diff = feat[idx] - feat (B,G,k,C), divided by the standard deviation of diff (per sample
    or over the batch) + eps, concatenated with feat, affine `alpha * h + beta` (2C,), then the
    softmax-weighted mean over k.
    """
    b, k = feat.shape[0], idx.shape[-1]
    diff = ops.gather(feat, idx) - feat.unsqueeze(2)  # (B,G,k,C)
    std = diff.reshape(b, -1).std(dim=1).view(b, 1, 1, 1) if per_sample else diff.std()
    h = torch.cat([diff / (std + eps), feat.unsqueeze(2).expand(-1, -1, k, -1)], dim=-1)
    h = alpha * h + beta  # (B,G,k,2C)
    return (h * torch.softmax(h, dim=2)).sum(dim=2)


@functools.cache
def _compiled_lnp_pool():
    return torch.compile(lnp_pool, dynamic=False)


def _use_compiled(feat: Tensor) -> bool:
    return compile_problem(feat.device) is None


def center_neighbors(centers: Tensor, k: int) -> Tensor:
    """(B,G,3) centers -> (B,G,min(k,G)) int64 indices of each center's nearest centers
    (itself first)."""
    return ops.knn(centers, centers, min(k, centers.shape[1]))[1]


class LNP(nn.Module):
    """Local norm pooling. x (B,L,C), centers (B,G,3) with G <= L -> (B,L,C).

    For each of the last G tokens (those with a center): gather the features of its k nearest
    centers (itself included), subtract the token's own feature and divide by the standard
    deviation of those differences, concatenate the token's feature (2C), apply a learned
    affine, pool over k with a softmax-weighted mean (Mamba3D's K_Pool, computed stably),
    then LayerNorm(2C), Linear 2C -> C, SiLU.

    The first L-G tokens (e.g. a cls token) have no center and are returned unchanged, as
    Mamba3D's LNPBlock does (the block then adds them to its residual stream).

    `std_scope="sample"` (default) takes the standard deviation per sample, so a shape's output
    does not depend on the rest of the batch; `"batch"` takes one over the whole batch, as the
    Mamba3D / MAP release (`torch.std` of the full tensor).
    """

    def __init__(self, dim: int, k: int = 4, std_scope: str = "sample", eps: float = 1e-5):
        super().__init__()
        if std_scope not in LNP_STD_SCOPES:
            raise ValueError(f"unknown LNP std_scope {std_scope!r}; choose {LNP_STD_SCOPES}")
        if k < 1:
            raise ValueError(f"LNP k must be >= 1, got {k}")
        self.k = k
        self.std_scope = std_scope
        self.eps = eps
        self.affine_alpha = nn.Parameter(torch.ones(2 * dim))
        self.affine_beta = nn.Parameter(torch.zeros(2 * dim))
        self.norm = nn.LayerNorm(2 * dim)
        self.proj = nn.Linear(2 * dim, dim)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, centers: Tensor, neighbors: Tensor | None = None) -> Tensor:
        """`neighbors` (B,G,k) from `center_neighbors(centers, self.k)`, computed here if None
        (a backbone computes it once for all its blocks)."""
        b, length, _ = x.shape
        g = centers.shape[1]
        if centers.shape[0] != b or g > length or centers.shape[-1] != 3:
            raise ValueError(
                f"LNP needs centers (B,G,3) with G <= L for x (B,L,C) = {tuple(x.shape)}, "
                f"got centers of shape {tuple(centers.shape)}"
            )
        prefix, feat = x[:, : length - g], x[:, length - g :]
        idx = center_neighbors(centers, self.k) if neighbors is None else neighbors
        pool = _compiled_lnp_pool() if _use_compiled(feat) else lnp_pool
        h = pool(
            feat, idx, self.affine_alpha, self.affine_beta, self.std_scope == "sample", self.eps
        )
        h = self.act(self.proj(self.norm(h)))
        return torch.cat([prefix, h], dim=1)

    def extra_repr(self) -> str:
        return f"k={self.k}, std_scope={self.std_scope!r}"
