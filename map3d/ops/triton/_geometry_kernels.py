"""Triton kernels for neighbour selection and the depthwise causal conv1d (imported only when
Triton is used)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _nearest_kernel(
    q_ptr,
    p_ptr,
    idx_ptr,
    M,
    N,
    K,
    sq_b,
    sq_m,
    sq_c,
    sp_b,
    sp_n,
    sp_c,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """idx (B,M,K) int64: the K nearest points of each query, nearest first. One program per
    (cloud, block of queries); all N points of the cloud stay in registers. Exact squared
    distances (no |q|^2 - 2qp + |p|^2 shortcut), K passes of an argmin."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    q = q_ptr + pid_b * sq_b + offs_m * sq_m
    p = p_ptr + pid_b * sp_b + offs_n * sp_n
    dx = (
        tl.load(q, mask=mask_m, other=0.0).to(tl.float32)[:, None]
        - tl.load(p, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    )
    dy = (
        tl.load(q + sq_c, mask=mask_m, other=0.0).to(tl.float32)[:, None]
        - tl.load(p + sp_c, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    )
    dz = (
        tl.load(q + 2 * sq_c, mask=mask_m, other=0.0).to(tl.float32)[:, None]
        - tl.load(p + 2 * sp_c, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    )
    d = (dx * dx + dy * dy) + dz * dz
    d = tl.where(mask_n[None, :], d, float("inf"))
    out = idx_ptr + (pid_b * M + offs_m) * K
    for j in range(K):
        nearest = tl.argmin(d, axis=1, tie_break_left=True)
        tl.store(out + j, nearest.to(tl.int64), mask=mask_m)
        d = tl.where(offs_n[None, :] == nearest[:, None], float("inf"), d)


@triton.jit
def _conv_fwd_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    E,
    L,
    sx_b,
    sx_e,
    sx_l,
    sw_e,
    sw_w,
    so_b,
    so_e,
    so_l,
    WIDTH: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    """out (B,E,L) = act(bias + sum_w weight[:, w] * x[t - WIDTH + 1 + w])."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_l = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_e = offs_e < E
    x_rows = x_ptr + pid_b * sx_b + offs_e[:, None] * sx_e
    acc = tl.zeros((BLOCK_E, BLOCK_L), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)[:, None]
    for w in tl.static_range(WIDTH):
        t = offs_l - (WIDTH - 1) + w
        wv = tl.load(w_ptr + offs_e * sw_e + w * sw_w, mask=mask_e, other=0.0).to(tl.float32)
        xv = tl.load(
            x_rows + t[None, :] * sx_l,
            mask=mask_e[:, None] & ((t >= 0) & (t < L))[None, :],
            other=0.0,
        )
        acc += wv[:, None] * xv.to(tl.float32)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    out = out_ptr + pid_b * so_b + offs_e[:, None] * so_e + offs_l[None, :] * so_l
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_e[:, None] & (offs_l < L)[None, :])


@triton.jit
def _conv_bwd_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    dout_ptr,
    dx_ptr,
    dw_ptr,
    db_ptr,
    E,
    L,
    n_lblocks,
    sx_b,
    sx_e,
    sx_l,
    sw_e,
    sw_w,
    sg_b,
    sg_e,
    sg_l,
    sdx_b,
    sdx_e,
    sdx_l,
    WIDTH: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    """dx (B,E,L); per-program partial sums of dweight (B,n_lblocks,E,WIDTH) and
    dbias (B,n_lblocks,E), fp32. The gradient at the pre-activation, g[t], is recomputed at
    the WIDTH positions t..t+WIDTH-1 that dx[t] reads (x is re-read from cache)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_l = tl.program_id(2)
    offs_e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_e = offs_e < E
    x_rows = x_ptr + pid_b * sx_b + offs_e[:, None] * sx_e
    g_rows = dout_ptr + pid_b * sg_b + offs_e[:, None] * sg_e
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    dx = tl.zeros((BLOCK_E, BLOCK_L), dtype=tl.float32)
    for s in tl.static_range(WIDTH):
        ts = offs_l + s
        valid = mask_e[:, None] & (ts < L)[None, :]
        g = tl.load(g_rows + ts[None, :] * sg_l, mask=valid, other=0.0).to(tl.float32)
        if SILU:
            pre = tl.zeros((BLOCK_E, BLOCK_L), dtype=tl.float32)
            if HAS_BIAS:
                pre += bias[:, None]
            for w in tl.static_range(WIDTH):
                t = ts - (WIDTH - 1) + w
                wv = tl.load(w_ptr + offs_e * sw_e + w * sw_w, mask=mask_e, other=0.0)
                xv = tl.load(
                    x_rows + t[None, :] * sx_l,
                    mask=mask_e[:, None] & ((t >= 0) & (t < L))[None, :],
                    other=0.0,
                )
                pre += wv.to(tl.float32)[:, None] * xv.to(tl.float32)
            sig = tl.sigmoid(pre)
            g = g * sig * (1.0 + pre * (1.0 - sig))
        w_s = tl.load(w_ptr + offs_e * sw_e + (WIDTH - 1 - s) * sw_w, mask=mask_e, other=0.0)
        dx += w_s.to(tl.float32)[:, None] * g
        if s == 0:  # g at the program's own positions: weight and bias gradients
            part = (pid_b * n_lblocks + pid_l) * E + offs_e
            if HAS_BIAS:
                tl.store(db_ptr + part, tl.sum(g, axis=1), mask=mask_e)
            for w in tl.static_range(WIDTH):
                t = offs_l - (WIDTH - 1) + w
                xv = tl.load(
                    x_rows + t[None, :] * sx_l,
                    mask=mask_e[:, None] & ((t >= 0) & (t < L))[None, :],
                    other=0.0,
                )
                tl.store(
                    dw_ptr + part * WIDTH + w, tl.sum(g * xv.to(tl.float32), axis=1), mask=mask_e
                )
    out = dx_ptr + pid_b * sdx_b + offs_e[:, None] * sdx_e + offs_l[None, :] * sdx_l
    tl.store(out, dx.to(dx_ptr.dtype.element_ty), mask=mask_e[:, None] & (offs_l < L)[None, :])
