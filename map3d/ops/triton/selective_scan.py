"""Selective scan (mamba-ssm `selective_scan_fn` semantics) on Triton kernels.

Shapes (glossary: B batch, E inner channels, N state size, L sequence length, G groups):
u, delta, z (B,E,L); A (E,N) real; B, C (B,N,L) or grouped (B,G,N,L); D, delta_bias (E,).
Inputs may be fp32, bf16 or fp16 and strided in any way; the state and all accumulations are
fp32. Outputs: out (B,E,L) in u's dtype; gradients in each input's dtype. Short sequences over
many channels run the sequential kernels, which read one time step of BLOCK_E channels at a
time: out and the gradients of u, delta and z are then laid out as their inputs are (channels-
last (B,L,E) memory for a mixer's projections, so that no transposed copies are made).

`bidirectional_selective_scan_triton` (the Triton backend of
`map3d.ops.bidirectional_selective_scan`) runs the two directions of a Vision-Mamba style mixer
in two launches of one kernel with no flipped copies: the second direction reads z and writes
(adds into) the output at mirrored time positions.

Triton is imported inside the functions: this module imports on a machine without Triton.
"""

from __future__ import annotations

import torch

# Kernel configurations: CHUNK time steps per tile (the backward pass restarts from states
# saved at these boundaries) and (BLOCK_E channels per program, num_warps) of each kernel, for
# sequences of at most SHORT_L steps (one tile) and for longer ones; chosen from the sweeps of
# benchmarks/bench_kernels.py on an H100 (benchmarks/NOTES-gpu.md).
SHORT_L = 64
SHORT = {"chunk": 64, "fwd": (2, 4), "bwd": (4, 4)}
LONG = {"chunk": 32, "fwd": (2, 4), "bwd": (2, 4)}
# The sequential kernels: one thread per channel steps through time with the channel's states
# in registers. They beat the chunked kernels for sequences of at most SEQUENTIAL_L steps when
# batch x E is at least SEQUENTIAL_CHANNELS (enough threads to fill the GPU); H200 sweep in
# benchmarks/RESULTS.md. (BLOCK_E, num_warps, pipeline stages of the time loop) per pass; the
# forward halves BLOCK_E (down to 16) while it would run fewer than SEQUENTIAL_PROGRAMS programs.
SEQUENTIAL_L = 256
SEQUENTIAL_CHANNELS = 16384
SEQUENTIAL = {"fwd": (32, 1, 1), "bwd": (32, 1, 2)}
SEQUENTIAL_PROGRAMS = 2048
# Their backward holds every step's states (fp32, batch x L x E x N) for the length of one
# call: above this many bytes a scan runs on the chunked kernels, which need no such buffer.
SEQUENTIAL_HISTORY_BYTES = 1 << 30

# The last compiled kernel of each pass ("fwd", "bwd"), for resource reports in benchmarks
# (registers, spills, shared memory).
LAST_KERNELS: dict = {}

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_STATE = 256


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _block_e(E: int, chan_per_group: int, grouped: bool, want: int) -> int:
    """Channels per program: a power of two; with groups it must divide the group size."""
    block = min(want, _pow2(E))
    if grouped:
        while chan_per_group % block:
            block //= 2
    return max(block, 1)


def runs_sequential(u: torch.Tensor, A: torch.Tensor) -> bool:
    """Whether the sequential kernels scan u (B,E,L) with A (E,N) (else the chunked ones)."""
    batch, E, L = u.shape
    history_bytes = 4 * batch * L * E * max(2, _pow2(A.shape[1]))
    return (
        L <= SEQUENTIAL_L
        and batch * E >= SEQUENTIAL_CHANNELS
        and history_bytes <= SEQUENTIAL_HISTORY_BYTES
    )


def _config(L: int) -> dict:
    return SHORT if L <= SHORT_L else LONG


def _chunk(L: int) -> int:
    return min(_config(L)["chunk"], max(16, _pow2(L)))


def _groups(M: torch.Tensor) -> torch.Tensor:
    """B or C as (B,G,N,L) (a view)."""
    return M.unsqueeze(1) if M.dim() == 3 else M


def supports(u, delta, A, B, C, D=None, z=None, delta_bias=None, **options) -> bool:
    """Inputs the Triton scan takes: CUDA, real A, input-dependent B and C, N <= 256."""
    tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]
    if not all(t.is_cuda for t in tensors) or A.is_complex():
        return False
    if u.dtype not in _DTYPES or delta.dtype not in _DTYPES or B.dtype not in _DTYPES:
        return False
    if u.dim() != 3 or A.dim() != 2 or B.dim() not in (3, 4) or C.dim() not in (3, 4):
        return False
    if A.shape[1] > MAX_STATE or u.shape[-1] == 0:
        return False
    gb = 1 if B.dim() == 3 else B.shape[1]
    gc = 1 if C.dim() == 3 else C.shape[1]
    return gb == gc and u.shape[1] % gb == 0


def _check(u, delta, A, B, C, D, z, delta_bias) -> None:
    batch, E, L = u.shape
    N = A.shape[1]
    if delta.shape != u.shape or (z is not None and z.shape != u.shape):
        raise ValueError(
            f"u, delta and z must share shape (B,E,L); got u {tuple(u.shape)}, delta "
            f"{tuple(delta.shape)}, z {None if z is None else tuple(z.shape)}"
        )
    if A.shape != (E, N):
        raise ValueError(f"A must be (E,N)=({E},N), got {tuple(A.shape)}")
    for name, M in (("B", B), ("C", C)):
        Mg = _groups(M)
        if Mg.shape[0] != batch or Mg.shape[2:] != (N, L) or E % Mg.shape[1]:
            raise ValueError(
                f"{name} must be (B,N,L)=({batch},{N},{L}) or (B,G,N,L) with G dividing E={E};"
                f" got {tuple(M.shape)}"
            )
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and v.shape != (E,):
            raise ValueError(f"{name} must be (E,)=({E},), got {tuple(v.shape)}")


def _strides3(t: torch.Tensor | None) -> tuple[int, int, int]:
    return (0, 0, 0) if t is None else tuple(t.stride())


def _kernel_inputs(direction, z, *, softplus, mirror):
    """One direction's input pointers, their strides and the compile-time flags, as every scan
    kernel takes them: u, delta, A, B, C, D, z, delta_bias (absent ones stand in as u)."""
    u, delta, A, B, C, D, bias = direction
    B4, C4 = _groups(B), _groups(C)
    N = A.shape[1]
    present = [t if t is not None else u for t in (D, z, bias)]
    tensors = (u, delta, A, B4, C4, *present)
    strides = (*u.stride(), *delta.stride(), *A.stride(), *B4.stride(), *C4.stride(), *_strides3(z))
    flags = {
        "DSTATE": N,
        "BLOCK_N": max(2, _pow2(N)),
        "HAS_D": D is not None,
        "HAS_Z": z is not None,
        "HAS_BIAS": bias is not None,
        "SOFTPLUS": softplus,
        "MIRROR": mirror,
    }
    return tensors, strides, flags


def _launch_forward(direction, z, out, *, softplus, mirror, accumulate, store_states, last):
    """Run the forward kernel of one direction; returns the chunk-entry states (or None)."""
    from map3d.ops.triton import _scan_kernels as k

    u, A, B = direction[0], direction[2], direction[3]
    batch, E, L = u.shape
    G = _groups(B).shape[1]
    tensors, strides, flags = _kernel_inputs(direction, z, softplus=softplus, mirror=mirror)
    flags.update(ACCUMULATE=accumulate, STORE_LAST=last is not None)
    last = last if last is not None else out
    if runs_sequential(u, A):
        want_e, warps, stages = SEQUENTIAL["fwd"]
        while want_e > 16 and batch * -(-E // want_e) < SEQUENTIAL_PROGRAMS:
            want_e //= 2
        block_e = _block_e(E, E // G, G > 1, want_e)
        grid = (batch, -(-E // block_e))
        LAST_KERNELS["fwd"] = k._scan_seq_fwd_kernel[grid](
            *tensors, out, last, E, L, E // G, *strides, *out.stride(),
            **flags, BLOCK_E=block_e, STAGES=stages, num_warps=warps,
        )  # fmt: skip
        return None
    want_e, warps = _config(L)["fwd"]
    block_e = _block_e(E, E // G, G > 1, want_e)
    chunk = _chunk(L)
    n_chunks = -(-L // chunk)
    store_states = store_states and n_chunks > 1
    states = (
        torch.empty(batch, E, n_chunks, A.shape[1], device=u.device, dtype=torch.float32)
        if store_states
        else None
    )
    grid = (batch, -(-E // block_e))
    LAST_KERNELS["fwd"] = k._scan_fwd_kernel[grid](
        *tensors, out, states if states is not None else out, last, E, L, E // G, n_chunks,
        *strides, *out.stride(),
        **flags, STORE_STATES=store_states, BLOCK_E=block_e, CHUNK=chunk, num_warps=warps,
    )  # fmt: skip
    return states


def _launch_backward(direction, states, z, dout, dz, *, softplus, mirror, accumulate_dz):
    """Gradients of one direction: (du, ddelta, dA, dB, dC, dD, ddelta_bias); dz is written
    (or added to) in place."""
    from map3d.ops.triton import _scan_kernels as k

    u, delta, A, B, _, D, bias = direction
    batch, E, L = u.shape
    N = A.shape[1]
    G = _groups(B).shape[1]
    tensors, strides, flags = _kernel_inputs(direction, z, softplus=softplus, mirror=mirror)
    flags.update(ACCUMULATE_DZ=accumulate_dz)
    sequential = runs_sequential(u, A)
    want_e, warps, stages = SEQUENTIAL["bwd"] if sequential else (*_config(L)["bwd"], 1)
    block_e = _block_e(E, E // G, G > 1, want_e)
    n_eblocks = -(-E // block_e)
    f32 = {"device": u.device, "dtype": torch.float32}
    du = empty_in_layout_of(u)
    ddelta = empty_in_layout_of(delta)
    dB_part = torch.empty(batch, n_eblocks, N, L, **f32)
    dC_part = torch.empty(batch, n_eblocks, N, L, **f32)
    dA_part = torch.empty(batch, E, N, **f32)
    dD_part = torch.empty(batch, E, **f32) if D is not None else None
    dbias_part = torch.empty(batch, E, **f32) if bias is not None else None
    outputs = (
        du,
        ddelta,
        dz if dz is not None else du,
        dB_part,
        dC_part,
        dA_part,
        dD_part if dD_part is not None else dA_part,
        dbias_part if dbias_part is not None else dA_part,
    )
    grid = (batch, n_eblocks)
    if sequential:
        history = torch.empty(batch, n_eblocks, L, flags["BLOCK_N"], block_e, **f32)
        LAST_KERNELS["bwd"] = k._scan_seq_bwd_kernel[grid](
            *tensors, dout, history, *outputs, E, L, E // G, n_eblocks,
            *strides, *dout.stride(), *du.stride(), *ddelta.stride(), *_strides3(dz),
            **flags, BLOCK_E=block_e, STAGES=stages, num_warps=warps,
        )  # fmt: skip
    else:
        chunk = _chunk(L)
        n_chunks = -(-L // chunk)
        load_states = states is not None and n_chunks > 1
        LAST_KERNELS["bwd"] = k._scan_bwd_kernel[grid](
            *tensors, dout, states if load_states else du, *outputs, E, L, E // G, n_chunks,
            n_eblocks, *strides, *dout.stride(),
            **flags, LOAD_STATES=load_states, BLOCK_E=block_e, CHUNK=chunk, num_warps=warps,
        )  # fmt: skip
    return _reduce_partials(direction, du, ddelta, dB_part, dC_part, dA_part, dD_part, dbias_part)


def _reduce_partials(direction, du, ddelta, dB_part, dC_part, dA_part, dD_part, dbias_part):
    """The gradients from the kernels' per-program partial sums, in the inputs' dtypes."""
    _, _, A, B, C, D, bias = direction
    batch, n_eblocks, N, L = dB_part.shape
    G = _groups(B).shape[1]
    per_group = n_eblocks // G if G > 1 else n_eblocks
    dB = dB_part.view(batch, G, per_group, N, L).sum(2) if G > 1 else dB_part.sum(1, keepdim=True)
    dC = dC_part.view(batch, G, per_group, N, L).sum(2) if G > 1 else dC_part.sum(1, keepdim=True)
    dB = dB.reshape(B.shape).to(B.dtype)
    dC = dC.reshape(C.shape).to(C.dtype)
    dA = dA_part.sum(0).to(A.dtype)
    dD = dD_part.sum(0).to(D.dtype) if D is not None else None
    dbias = dbias_part.sum(0).to(bias.dtype) if bias is not None else None
    return du, ddelta, dA, dB, dC, dD, dbias


def _time_contiguous(A, *tensors):
    """For the chunked kernels, copies of (B,E,L) tensors (u first) whose time axis is strided
    (as a mixer's transposed projections are): their tiles then load whole sectors; the copy is
    one cheap pass. The sequential kernels read one time step of many channels at a time and
    take the tensors as they are."""
    if runs_sequential(tensors[0], A):
        return tensors
    return tuple(t if t is None or t.stride(-1) == 1 else t.contiguous() for t in tensors)


def empty_in_layout_of(t: torch.Tensor) -> torch.Tensor:
    """An empty (B,E,L) tensor like t, channels-last ((B,L,E) in memory) when t's channels are
    contiguous and its time axis is not (a mixer's transposed projections), else contiguous."""
    batch, E, L = t.shape
    if t.stride(1) == 1 and t.stride(2) != 1:
        return torch.empty(batch, L, E, device=t.device, dtype=t.dtype).transpose(1, 2)
    return torch.empty(batch, E, L, device=t.device, dtype=t.dtype)


_PER_DIRECTION = 7  # u, delta, A, B, C, D, delta_bias


class _ScanFunction(torch.autograd.Function):
    """One or two scan directions sharing z and summed into one output."""

    @staticmethod
    def forward(ctx, z, delta_softplus, return_last_state, *params):
        directions = [params[i : i + _PER_DIRECTION] for i in range(0, len(params), _PER_DIRECTION)]
        u = directions[0][0]
        batch, E, _ = u.shape
        out = empty_in_layout_of(u)
        need_grad = any(ctx.needs_input_grad)
        last = (
            torch.empty(batch, E, directions[0][2].shape[1], device=u.device, dtype=torch.float32)
            if return_last_state
            else None
        )
        saved_states = []
        for i, direction in enumerate(directions):
            states = _launch_forward(
                direction,
                z,
                out,
                softplus=delta_softplus,
                mirror=i == 1,
                accumulate=i == 1,
                store_states=need_grad,
                last=last,
            )
            saved_states.append(states)
        ctx.delta_softplus = delta_softplus
        ctx.num_directions = len(directions)
        ctx.save_for_backward(z, *params, *saved_states)
        if return_last_state:
            ctx.mark_non_differentiable(last)
            return out, last
        return out

    @staticmethod
    def backward(ctx, dout, *_ignored):
        z, *rest = ctx.saved_tensors
        count = ctx.num_directions * _PER_DIRECTION
        params, saved_states = rest[:count], rest[count:]
        dz = None
        if z is not None:
            dz = empty_in_layout_of(z)
        grads = []
        for i in range(ctx.num_directions):
            direction = params[i * _PER_DIRECTION : (i + 1) * _PER_DIRECTION]
            grads.extend(
                _launch_backward(
                    direction,
                    saved_states[i],
                    z,
                    dout,
                    dz,
                    softplus=ctx.delta_softplus,
                    mirror=i == 1,
                    accumulate_dz=i == 1,
                )
            )
        for i in range(len(grads)):
            if params[i] is None or not ctx.needs_input_grad[3 + i]:
                grads[i] = None
        return (dz if ctx.needs_input_grad[0] else None, None, None, *grads)


def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
):
    """mamba-ssm `selective_scan_fn` on Triton: out (B,E,L) [, last_state (B,E,N) fp32].

    h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = C_t h_t + D u_t;  out = y * silu(z),
    with delta = softplus(delta + delta_bias) when `delta_softplus`. The last state carries no
    gradient (as in mamba-ssm).
    """
    _check(u, delta, A, B, C, D, z, delta_bias)
    u, delta, z = _time_contiguous(A, u, delta, z)
    return _ScanFunction.apply(
        z, bool(delta_softplus), bool(return_last_state), u, delta, A, B, C, D, delta_bias
    )


def bidirectional_selective_scan_triton(
    u,
    delta,
    A,
    B,
    C,
    D,
    delta_bias,
    u_b,
    delta_b,
    A_b,
    B_b,
    C_b,
    D_b,
    delta_bias_b,
    z=None,
    delta_softplus=True,
):
    """Both directions of a bidirectional mixer in two launches of one kernel, no flips.

    out = scan(u, delta, A, B, C, D, z, delta_bias)
          + flip(scan(u_b, delta_b, A_b, B_b, C_b, D_b, flip(z), delta_bias_b))
    where flip reverses time and the `_b` tensors are already in flipped (scan) order, as a
    mixer computes them from the flipped sequence. z (B,E,L) is in natural order.
    """
    _check(u, delta, A, B, C, D, z, delta_bias)
    _check(u_b, delta_b, A_b, B_b, C_b, D_b, z, delta_bias_b)
    if u_b.shape != u.shape or u_b.dtype != u.dtype:
        raise ValueError(
            f"u_b must match u: got {tuple(u_b.shape)} {u_b.dtype} vs {tuple(u.shape)} {u.dtype}"
        )
    u, delta, z = _time_contiguous(A, u, delta, z)
    u_b, delta_b = _time_contiguous(A_b, u_b, delta_b)
    return _ScanFunction.apply(
        z,
        bool(delta_softplus),
        False,
        u,
        delta,
        A,
        B,
        C,
        D,
        delta_bias,
        u_b,
        delta_b,
        A_b,
        B_b,
        C_b,
        D_b,
        delta_bias_b,
    )
