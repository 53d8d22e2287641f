"""Pure-PyTorch sequence ops of Mamba: the selective scan and the depthwise causal conv1d.

The selective scan computes, per batch b, channel e and state n (glossary: E inner channels,
N state size, L sequence length, G groups of B/C):

    h[t] = exp(delta[t] * A[e, n]) * h[t-1] + delta[t] * B[n, t] * u[t],   h[-1] = 0
    y[t] = sum_n C[n, t] * h[t] (+ D[e] * u[t]) (* silu(z[t]))

It is linear in L for forward and backward. Intermediates are laid out time-major (L, B, E, N),
so each time step is one contiguous slab, and the recurrence h[t] = a[t] h[t-1] + b[t] is
solved in chunks of T ~ sqrt(L) steps: one in-place step loop runs inside all chunks at once
(also accumulating each chunk's running product of decays), then one loop over chunks carries
the state. Only products of decays are formed, never quotients, so it is stable for any
delta * A <= 0. That is about 2 sqrt(L) vectorized ops, with no autograd graph: a custom
autograd function solves the adjoint recurrence g[t] = dy/dh[t] + a[t+1] g[t+1] the same way in
backward and recomputes the (L,B,E,N) intermediates block by block of channels, so memory stays
O(inputs) + one block.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Elements of one (L, B, E_block, N) intermediate: about 8 of them are alive at once.
_BLOCK_BUDGET = {"cpu": 1 << 22, "cuda": 1 << 25}


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _linear_recurrence(a: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Time-major h[t] = a[t] * h[t-1] + b[t] along dim 0, h[-1] = 0: (L, ...) -> (L, ...);
    with `reverse`, h[t] = a[t] * h[t+1] + b[t], h[L] = 0.

    Overwrites `b` (used as the output buffer) when it is contiguous.
    """
    L = a.shape[0]
    T = max(1, math.isqrt(L))
    pad = (-L) % T
    if pad:  # steps after the end that leave a forward scan unchanged and stay 0 in reverse
        a = torch.cat([a, a.new_ones((pad, *a.shape[1:]))])
        b = torch.cat([b, b.new_zeros((pad, *b.shape[1:]))])
    chunks = a.shape[0] // T
    a = a.reshape(chunks, T, *a.shape[1:])
    h = b.reshape(chunks, T, *b.shape[1:])
    back = 1 if reverse else -1  # offset of the step each state depends on
    decay = None  # product of a since the chunk's first step
    if chunks > 1:
        decay = torch.empty_like(a)
        first = T - 1 if reverse else 0
        decay[:, first] = a[:, first]
    for t in range(T - 2, -1, -1) if reverse else range(1, T):  # every chunk from a zero start
        h[:, t].addcmul_(a[:, t], h[:, t + back])
        if decay is not None:
            decay[:, t] = a[:, t] * decay[:, t + back]
    if decay is not None:  # carry each chunk's final state into the next chunk
        edge = slice(0, 1) if reverse else slice(T - 1, T)
        for c in range(chunks - 2, -1, -1) if reverse else range(1, chunks):
            h[c].addcmul_(decay[c], h[c + back, edge])
    return h.reshape(chunks * T, *h.shape[2:])[:L]


def _reverse_recurrence(a: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    """Adjoint of `_linear_recurrence`: g[t] = g_out[t] + a[t+1] * g[t+1], g[L] = 0.
    Overwrites `g_out` when it is contiguous."""
    a_next = torch.cat([a[1:], torch.zeros_like(a[:1])])
    return _linear_recurrence(a_next, g_out, reverse=True)


def _channel_blocks(u: torch.Tensor, state: int):
    """(start, stop) ranges of channels whose (L, B, E_block, N) tensors fit the budget."""
    length, batch, channels = u.shape
    budget = _BLOCK_BUDGET.get(u.device.type, _BLOCK_BUDGET["cuda"])
    size = max(1, budget // max(1, batch * state * length))
    for start in range(0, channels, size):
        yield start, min(start + size, channels)


def _groups_of(Bm: torch.Tensor, channels: int, start: int, stop: int) -> torch.Tensor | None:
    """Group index of each channel in [start, stop) (None when there is one group)."""
    groups = Bm.shape[2]
    if groups == 1:
        return None
    return torch.arange(start, stop, device=Bm.device) // (channels // groups)


def _take(x: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """(L,B,G,N) -> (L, B, E_block or 1, N) for the block's channels."""
    return x if groups is None else x.index_select(2, groups)


def _put(total: torch.Tensor, x: torch.Tensor, w: torch.Tensor, groups: torch.Tensor | None):
    """Add x * w, x (L,B,E_block,N), w (L,B,E_block,1), summed over the channels of each group,
    into `total` (L,B,G,N)."""
    if groups is None:  # one group: a batched (1 x E_block) @ (E_block x N) product
        total[:, :, 0] += torch.matmul(w.transpose(-1, -2), x).squeeze(-2)
    else:
        total.index_add_(2, groups, x * w)


def _state_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sum_n x * y: x (L,B,E_block,N), y (L,B,E_block or 1,N) -> (L,B,E_block)."""
    if y.shape[2] == 1:  # shared over channels: a batched matrix-vector product
        return torch.matmul(x, y.transpose(-1, -2)).squeeze(-1)
    return (x * y).sum(-1)


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """(B, ..., L) -> contiguous (L, B, ...)."""
    return x.movedim(-1, 0).contiguous()


class _SelectiveScanCore(torch.autograd.Function):
    """(u, dt (B,E,L), A (E,N), B, C (B,G,N,L)) -> (y (B,E,L), last state (B,E,N)); all one
    float dtype."""

    @staticmethod
    def forward(ctx, u, dt, A, Bm, Cm):
        uT, dtT, BT, CT = map(_time_major, (u, dt, Bm, Cm))  # (L,B,E), (L,B,G,N)
        channels = u.shape[1]
        yT = torch.empty_like(uT)
        last = u.new_empty(u.shape[0], channels, A.shape[1])
        for start, stop in _channel_blocks(uT, A.shape[1]):
            groups = _groups_of(BT, channels, start, stop)
            dt_b = dtT[:, :, start:stop, None]  # (L,B,Eb,1)
            a = torch.exp(dt_b * A[start:stop])  # (L,B,Eb,N)
            h = _linear_recurrence(a, (dt_b * uT[:, :, start:stop, None]) * _take(BT, groups))
            yT[:, :, start:stop] = _state_dot(h, _take(CT, groups))
            last[:, start:stop] = h[-1]
        ctx.save_for_backward(u, dt, A, Bm, Cm)
        return yT.movedim(0, -1), last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_last):
        u, dt, A, Bm, Cm = ctx.saved_tensors
        uT, dtT, BT, CT, gyT = map(_time_major, (u, dt, Bm, Cm, grad_y))
        channels = u.shape[1]
        grad_uT, grad_dtT, grad_BT, grad_CT = map(torch.zeros_like, (uT, dtT, BT, CT))
        grad_A = torch.zeros_like(A)
        for start, stop in _channel_blocks(uT, A.shape[1]):
            groups = _groups_of(BT, channels, start, stop)
            dt_b, u_b = dtT[:, :, start:stop, None], uT[:, :, start:stop, None]
            A_b, B_b, C_b = A[start:stop], _take(BT, groups), _take(CT, groups)
            gy = gyT[:, :, start:stop, None]
            a = torch.exp(dt_b * A_b)
            du = dt_b * u_b
            h = _linear_recurrence(a, du * B_b)
            grad_h = C_b * gy
            grad_h[-1] += grad_last[:, start:stop]
            g = _reverse_recurrence(a, grad_h)  # d loss / d h[t] through all later steps
            _put(grad_CT, h, gy, groups)
            _put(grad_BT, g, du, groups)
            grad_du = _state_dot(g, B_b)
            grad_uT[:, :, start:stop] = grad_du * dt_b[..., 0]
            grad_log_a = g.mul_(a)  # d loss / d (dt A) = g[t] a[t] h[t-1]
            grad_log_a[1:] *= h[:-1]
            grad_log_a[0] = 0
            grad_dtT[:, :, start:stop] = grad_du * u_b[..., 0] + (grad_log_a * A_b).sum(-1)
            grad_A[start:stop] = (grad_log_a * dt_b).sum((0, 1))
        grads = [x.movedim(0, -1) for x in (grad_uT, grad_dtT, grad_BT, grad_CT)]
        return grads[0], grads[1], grad_A, grads[2], grads[3]


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Selective scan with mamba-ssm's `selective_scan_fn` semantics (real-valued).

    u, delta, z: (B,E,L); A: (E,N); B, C: (B,N,L) or (B,G,N,L) with E % G == 0 (channel e uses
    group e // (E/G)); D, delta_bias: (E,). delta += delta_bias, then softplus if requested.
    Computed in float32 (float64 for float64 inputs); returns out (B,E,L) in u's dtype, and the
    final state (B,E,N) in the compute dtype if `return_last_state`.
    """
    dtype = _compute_dtype(u.dtype)
    u_c = u.to(dtype)
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bm = B.to(dtype) if B.dim() == 4 else B.to(dtype).unsqueeze(1)
    Cm = C.to(dtype) if C.dim() == 4 else C.to(dtype).unsqueeze(1)
    y, last = _SelectiveScanCore.apply(u_c, dt, A.to(dtype), Bm, Cm)
    if D is not None:
        y = y + u_c * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    return (out, last) if return_last_state else out


def bidirectional_from(scan: Callable) -> Callable:
    """The bidirectional scan made of two calls of `scan` (a `selective_scan` backend function,
    positional arguments of `map3d.ops.selective_scan`) with flips: how every backend without a
    fused one runs `map3d.ops.bidirectional_selective_scan` (`map3d.ops.dispatch.FOLLOWS`)."""

    def bidirectional_selective_scan(
        u, delta, A, B, C, D, delta_bias, u_b, delta_b, A_b, B_b, C_b, D_b, delta_bias_b,
        z=None, delta_softplus=True,
    ):  # fmt: skip
        out = scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, False)
        z_b = None if z is None else z.flip(-1)
        out_b = scan(u_b, delta_b, A_b, B_b, C_b, D_b, z_b, delta_bias_b, delta_softplus, False)
        return out + out_b.flip(-1)

    bidirectional_selective_scan.__qualname__ = f"bidirectional_from({scan.__qualname__})"
    return bidirectional_selective_scan


# The reference twin of `map3d.ops.bidirectional_selective_scan`:
#     out = selective_scan(u, delta, A, B, C, D, z, delta_bias)
#           + flip(selective_scan(u_b, delta_b, A_b, B_b, C_b, D_b, flip(z), delta_bias_b))
bidirectional_selective_scan = bidirectional_from(selective_scan)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """Depthwise causal conv1d: x (B,E,L), weight (E,W), bias (E,) -> (B,E,L) in x's dtype.

    out[b, e, t] = bias[e] + sum_w weight[e, w] * x[b, e, t - (W - 1) + w] (x = 0 before t = 0),
    then SiLU if activation is "silu" or "swish".
    """
    dtype = torch.promote_types(x.dtype, weight.dtype)
    channels, width = weight.shape
    out = F.conv1d(
        F.pad(x.to(dtype), (width - 1, 0)),
        weight.to(dtype).unsqueeze(1),
        None if bias is None else bias.to(dtype),
        groups=channels,
    )
    if activation in ("silu", "swish"):
        out = F.silu(out)
    return out.to(x.dtype)
