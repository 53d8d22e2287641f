"""Triton farthest point sampling kernel (imported only when Triton is used)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _fps_kernel(points_ptr, start_ptr, idx_ptr, N, S, sp_b, sp_n, sp_c, BLOCK_N: tl.constexpr):
    """One program per cloud: its N points stay in registers for all S steps.

    Same arithmetic as the reference (fp32 squared distances summed x, y, z in that order,
    no fused multiply-add: launch with enable_fp_fusion=False), chosen points marked -1,
    first index on ties: the indices match the reference exactly.
    """
    pid = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_N)
    mask = offs < N
    base = points_ptr + pid * sp_b
    px = tl.load(base + offs * sp_n, mask=mask, other=0.0).to(tl.float32)
    py = tl.load(base + offs * sp_n + sp_c, mask=mask, other=0.0).to(tl.float32)
    pz = tl.load(base + offs * sp_n + 2 * sp_c, mask=mask, other=0.0).to(tl.float32)
    min_d2 = tl.where(mask, float("inf"), float("-inf"))
    far = tl.load(start_ptr + pid).to(tl.int32)
    for i in range(S):
        tl.store(idx_ptr + pid * S + i, far.to(tl.int64))
        chosen = base + far.to(tl.int64) * sp_n
        cx = tl.load(chosen).to(tl.float32)
        cy = tl.load(chosen + sp_c).to(tl.float32)
        cz = tl.load(chosen + 2 * sp_c).to(tl.float32)
        dx = px - cx
        dy = py - cy
        dz = pz - cz
        d2 = (dx * dx + dy * dy) + dz * dz
        min_d2 = tl.minimum(min_d2, d2)
        min_d2 = tl.where(offs == far, -1.0, min_d2)
        far = tl.argmax(min_d2, axis=0, tie_break_left=True)
