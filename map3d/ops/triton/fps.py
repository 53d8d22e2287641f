"""Farthest point sampling on Triton: one program per cloud, points held on chip.

Same contract and indices as `map3d.ops.reference.geometry.fps`. Triton is imported inside
the functions: this module imports on a machine without Triton.
"""

from __future__ import annotations

import torch

MAX_POINTS = 8192  # points per cloud held in registers by one program


def supports(points, **options) -> bool:
    """CUDA fp32/bf16/fp16 clouds of at most MAX_POINTS points."""
    return (
        points.is_cuda
        and points.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and points.dim() == 3
        and points.shape[-1] == 3
        and 0 < points.shape[1] <= MAX_POINTS
    )


def _num_warps(block: int) -> int:
    return 4 if block <= 1024 else 8 if block <= 2048 else 16


def fps(
    points: torch.Tensor,
    num_samples: int,
    *,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """points (B,N,3) -> idx (B,S) int64, S = num_samples; see the reference for semantics."""
    from map3d.ops.triton._fps_kernels import _fps_kernel

    B, N, _ = points.shape
    device = points.device
    if random_start:  # drawn exactly as the reference draws it
        gen_device = generator.device if generator is not None else "cpu"
        start = torch.randint(N, (B,), generator=generator, device=gen_device).to(device)
    else:
        start = torch.zeros(B, dtype=torch.long, device=device)
    idx = torch.empty(B, num_samples, dtype=torch.long, device=device)
    if num_samples == 0:
        return idx
    block = max(16, 1 << (N - 1).bit_length())
    pts = points.detach()
    _fps_kernel[(B,)](
        pts,
        start,
        idx,
        N,
        num_samples,
        *pts.stride(),
        BLOCK_N=block,
        num_warps=_num_warps(block),
        enable_fp_fusion=False,
    )
    return idx
