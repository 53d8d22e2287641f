"""Pure-PyTorch sequence ops of Mamba: the selective scan and the depthwise causal conv1d.

The selective scan computes, per batch b, channel e and state n (glossary: E inner channels,
N state size, L sequence length, G groups of B/C):

    h[t] = exp(delta[t] * A[e, n]) * h[t-1] + delta[t] * B[n, t] * u[t],   h[-1] = 0
    y[t] = sum_n C[n, t] * h[t] (+ D[e] * u[t]) (* silu(z[t]))

It is linear in L for forward and backward: the recurrence h[t] = a[t] h[t-1] + b[t] is solved
by chunks of `_CHUNK` steps (a log-depth doubling scan inside all chunks at once, then one short
loop over chunks carrying the state); the backward pass is the adjoint recurrence solved the same
way (g[t] = dy/dh[t] + a[t+1] g[t+1]) inside a custom autograd function that recomputes the
(B,E,N,L) intermediates per block of channels, so memory stays O(inputs) + one block. Only
products of decays are formed (no division by cumulative products), so it is stable for any
delta * A <= 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

_CHUNK = 16  # steps per chunk of the recurrence
_BLOCK_BUDGET = 1 << 23  # elements of one (B, E_block, N, L) intermediate


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h[t] = a[t] * h[t-1] + b[t] along the last dim, h[-1] = 0: (..., L) -> (..., L)."""
    L = a.shape[-1]
    T = min(_CHUNK, L)
    pad = (-L) % T
    if pad:
        a = F.pad(a, (0, pad), value=1.0)
        b = F.pad(b, (0, pad))
    a = a.unflatten(-1, (-1, T))  # (..., L/T, T)
    b = b.unflatten(-1, (-1, T))
    step = 1
    while step < T:  # after this: a = decay since chunk start, b = state from a zero chunk start
        b = torch.cat(
            [b[..., :step], torch.addcmul(b[..., step:], a[..., step:], b[..., :-step])], -1
        )
        a = torch.cat([a[..., :step], a[..., step:] * a[..., :-step]], -1)
        step *= 2
    for c in range(1, b.shape[-2]):  # carry each chunk's final state into the next chunk
        b[..., c, :].addcmul_(a[..., c, :], b[..., c - 1, -1:])
    return b.flatten(-2)[..., :L]


def _reverse_recurrence(a: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    """Adjoint of `_linear_recurrence`: g[t] = g_out[t] + a[t+1] * g[t+1], g[L] = 0."""
    a_next = torch.cat([a[..., 1:], torch.zeros_like(a[..., :1])], -1)
    return _linear_recurrence(a_next.flip(-1), g_out.flip(-1)).flip(-1)


def _channel_blocks(batch: int, channels: int, inner: int):
    """Yield (start, stop) ranges of channels whose (B, E_block, N, L) tensors fit the budget."""
    size = max(1, _BLOCK_BUDGET // max(1, batch * inner))
    for start in range(0, channels, size):
        yield start, min(start + size, channels)


def _groups_of(Bm: torch.Tensor, channels: int, start: int, stop: int) -> torch.Tensor | None:
    """Group index of each channel in [start, stop) (None when there is one group)."""
    groups = Bm.shape[1]
    if groups == 1:
        return None
    per_group = channels // groups
    return torch.arange(start, stop, device=Bm.device) // per_group


def _take(x: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """(B,G,N,L) -> (B, E_block or 1, N, L) for the block's channels."""
    return x if groups is None else x.index_select(1, groups)


def _put(total: torch.Tensor, part: torch.Tensor, groups: torch.Tensor | None) -> None:
    """Add a block's (B, E_block, N, L) gradient into its groups of `total` (B,G,N,L)."""
    if groups is None:
        total[:, 0] += part.sum(1)
    else:
        total.index_add_(1, groups, part)


class _SelectiveScanCore(torch.autograd.Function):
    """(u, dt (B,E,L), A (E,N), B, C (B,G,N,L)) -> (y (B,E,L), last state (B,E,N)); all one
    float dtype."""

    @staticmethod
    def forward(ctx, u, dt, A, Bm, Cm):
        batch, channels, _ = u.shape
        state = A.shape[1]
        y = torch.empty_like(u)
        last = u.new_empty(batch, channels, state)
        for start, stop in _channel_blocks(batch, channels, state * u.shape[2]):
            groups = _groups_of(Bm, channels, start, stop)
            dt_b, u_b = dt[:, start:stop, None, :], u[:, start:stop, None, :]
            a = torch.exp(dt_b * A[None, start:stop, :, None])
            h = _linear_recurrence(a, dt_b * u_b * _take(Bm, groups))
            y[:, start:stop] = (h * _take(Cm, groups)).sum(2)
            last[:, start:stop] = h[..., -1]
        ctx.save_for_backward(u, dt, A, Bm, Cm)
        return y, last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_last):
        u, dt, A, Bm, Cm = ctx.saved_tensors
        batch, channels, _ = u.shape
        state = A.shape[1]
        grads = [torch.zeros_like(t) for t in (u, dt, A, Bm, Cm)]
        grad_u, grad_dt, grad_A, grad_B, grad_C = grads
        for start, stop in _channel_blocks(batch, channels, state * u.shape[2]):
            groups = _groups_of(Bm, channels, start, stop)
            dt_b, u_b = dt[:, start:stop, None, :], u[:, start:stop, None, :]
            A_b = A[None, start:stop, :, None]
            B_b, C_b = _take(Bm, groups), _take(Cm, groups)
            gy = grad_y[:, start:stop, None, :]
            a = torch.exp(dt_b * A_b)
            du = dt_b * u_b
            h = _linear_recurrence(a, du * B_b)
            grad_h = C_b * gy
            grad_h[..., -1] += grad_last[:, start:stop]
            g = _reverse_recurrence(a, grad_h)  # d loss / d h[t], all paths
            _put(grad_C, h * gy, groups)
            _put(grad_B, g * du, groups)
            grad_du = (g * B_b).sum(2)
            grad_u[:, start:stop] = grad_du * dt_b[:, :, 0]
            h_prev = torch.cat([torch.zeros_like(h[..., :1]), h[..., :-1]], -1)
            grad_log_a = g * h_prev * a  # d loss / d (dt * A)
            grad_dt[:, start:stop] = grad_du * u_b[:, :, 0] + (grad_log_a * A_b).sum(2)
            grad_A[start:stop] = (grad_log_a * dt_b).sum((0, 3))
        return tuple(grads)


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
