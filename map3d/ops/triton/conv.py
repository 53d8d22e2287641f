"""Depthwise causal conv1d (causal-conv1d's `causal_conv1d_fn` semantics) on Triton kernels.

x (B,E,L) any strides, weight (E,W), bias (E,) -> (B,E,L) in x's dtype and layout (channels-last
(B,L,E) memory for a mixer's transposed projection, as the scan reads it), computed in fp32,
optional SiLU. Backward: one kernel for dx plus per-program partial sums of dweight/dbias.
Triton is imported inside the functions.
"""

from __future__ import annotations

import torch

from map3d.ops.triton.selective_scan import _pow2, empty_in_layout_of

# (BLOCK_E channels, at most BLOCK_L time steps, num_warps) per program (H200 sweep of a mixer's
# sizes, benchmarks/RESULTS.md: 59 us forward + backward at 128 x 768 x 26, cuDNN 185 us).
CONFIG = (64, 16, 2)
MAX_WIDTH = 8
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def supports(x, weight, bias=None, **options) -> bool:
    tensors = [t for t in (x, weight, bias) if t is not None]
    return (
        all(t.is_cuda and t.dtype in _DTYPES for t in tensors)
        and x.dim() == 3
        and weight.dim() == 2
        and 1 <= weight.shape[1] <= MAX_WIDTH
    )


def _blocks(x) -> tuple[int, int, int]:
    """(BLOCK_E, BLOCK_L, num_warps) for x (B,E,L): BLOCK_L no longer than the sequence."""
    block_e, block_l, warps = CONFIG
    return block_e, min(block_l, max(16, _pow2(x.shape[2]))), warps


def _grid(x, block_e: int, block_l: int):
    B, E, L = x.shape
    return (B, -(-E // block_e), -(-L // block_l))


class _CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        from map3d.ops.triton._geometry_kernels import _conv_fwd_kernel

        _, E, L = x.shape
        block_e, block_l, warps = _blocks(x)
        out = empty_in_layout_of(x)
        _conv_fwd_kernel[_grid(x, block_e, block_l)](
            x,
            weight,
            bias if bias is not None else weight,
            out,
            E,
            L,
            *x.stride(),
            *weight.stride(),
            *out.stride(),
            WIDTH=weight.shape[1],
            HAS_BIAS=bias is not None,
            SILU=silu,
            BLOCK_E=block_e,
            BLOCK_L=block_l,
            num_warps=warps,
        )
        ctx.silu = silu
        ctx.save_for_backward(x, weight, bias)
        return out

    @staticmethod
    def backward(ctx, dout):
        from map3d.ops.triton._geometry_kernels import _conv_bwd_kernel

        x, weight, bias = ctx.saved_tensors
        B, E, L = x.shape
        W = weight.shape[1]
        block_e, block_l, warps = _blocks(x)
        grid = _grid(x, block_e, block_l)
        n_lblocks = grid[2]
        dx = empty_in_layout_of(x)
        dw = torch.empty(B, n_lblocks, E, W, device=x.device, dtype=torch.float32)
        db = torch.empty(B, n_lblocks, E, device=x.device, dtype=torch.float32)
        _conv_bwd_kernel[grid](
            x,
            weight,
            bias if bias is not None else weight,
            dout,
            dx,
            dw,
            db,
            E,
            L,
            n_lblocks,
            *x.stride(),
            *weight.stride(),
            *dout.stride(),
            *dx.stride(),
            WIDTH=W,
            HAS_BIAS=bias is not None,
            SILU=ctx.silu,
            BLOCK_E=block_e,
            BLOCK_L=block_l,
            num_warps=warps,
        )
        dweight = dw.sum((0, 1)).to(weight.dtype)
        dbias = db.sum((0, 1)).to(bias.dtype) if bias is not None else None
        return dx, dweight, dbias, None


def causal_conv1d(x, weight, bias=None, activation=None):
    """x (B,E,L), weight (E,W), bias (E,) -> (B,E,L): out[t] = act(bias + sum_w weight[w] *
    x[t-W+1+w]), activation None, "silu" or "swish"."""
    return _CausalConv1d.apply(x, weight, bias, activation in ("silu", "swish"))
