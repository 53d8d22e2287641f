"""Triton kernels of the selective scan (imported only when Triton is used).

Two families, both with one program per (batch, block of BLOCK_E channels). The sequential
kernels (`_scan_seq_*`, short sequences over many channels) step through time one step at a
time, each channel's states in one thread's registers; their backward recomputes the states
into a per-program history buffer, then walks back through it. The chunked kernels
(`_scan_fwd_kernel`, `_scan_bwd_kernel`, long sequences) are time-parallel:

Chunked layout: the program walks the sequence in
chunks of CHUNK steps; inside a chunk the linear recurrence h_t = a_t * h_{t-1} + b_t over the
(BLOCK_E, BLOCK_N, CHUNK) tile is an associative scan (time-parallel), and the state carried
between chunks stays in registers in fp32. `MIRROR` reads z and dout and writes out and dz at
time L-1-t: the scan of a flipped sequence (the second direction of a bidirectional mixer)
then needs no flipped copies of z, out or their gradients, and `ACCUMULATE` adds its output
into the first direction's, so the two directions' sum costs no extra pass.

Backward: the same program grid walks the chunks in the opposite order, recomputes the states
of a chunk from the state saved at its entry by the forward pass (`states`, only when there is
more than one chunk), and runs the adjoint recurrence lam_t = g_t C_t + a_{t+1} lam_{t+1} as a
second scan. Per-program partial sums of dB, dC (over channels) and dA, dD, d(delta_bias) (over
time) go to fp32 buffers reduced by the caller, which keeps the result deterministic.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _linear_combine(a_prev, b_prev, a_next, b_next):
    """Compose h -> a_prev*h + b_prev, then h -> a_next*h + b_next (scan order)."""
    return a_prev * a_next, a_next * b_prev + b_next


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) as torch.nn.functional.softplus (threshold 20), accurate for x << 0."""
    m = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + m
    log1p = tl.where(w == 1.0, m, tl.log(w) * (m / (w - 1.0)))
    return tl.where(x <= 20.0, log1p, x)


@triton.jit
def _scan_fwd_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    out_ptr,
    states_ptr,
    last_ptr,
    E,
    L,
    chan_per_group,
    n_chunks,
    su_b,
    su_e,
    su_l,
    sd_b,
    sd_e,
    sd_l,
    sA_e,
    sA_n,
    sB_b,
    sB_g,
    sB_n,
    sB_l,
    sC_b,
    sC_g,
    sC_n,
    sC_l,
    sz_b,
    sz_e,
    sz_l,
    so_b,
    so_e,
    so_l,
    DSTATE: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    MIRROR: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    STORE_STATES: tl.constexpr,
    STORE_LAST: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_e = tl.program_id(1)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, CHUNK)
    mask_e = offs_e < E
    mask_n = offs_n < DSTATE
    mask_en = mask_e[:, None] & mask_n[None, :]
    group = (pid_e * BLOCK_E) // chan_per_group

    A2 = tl.load(A_ptr + offs_e[:, None] * sA_e + offs_n[None, :] * sA_n, mask=mask_en, other=0.0)
    A2 = A2.to(tl.float32) * LOG2E  # exp(dt*A) = exp2(dt*A*log2(e))
    if HAS_D:
        Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)

    u_rows = u_ptr + pid_b * su_b + offs_e[:, None] * su_e
    dt_rows = dt_ptr + pid_b * sd_b + offs_e[:, None] * sd_e
    z_rows = z_ptr + pid_b * sz_b + offs_e[:, None] * sz_e
    o_rows = out_ptr + pid_b * so_b + offs_e[:, None] * so_e
    B_rows = B_ptr + pid_b * sB_b + group * sB_g + offs_n[:, None] * sB_n
    C_rows = C_ptr + pid_b * sC_b + group * sC_g + offs_n[:, None] * sC_n
    state_rows = states_ptr + ((pid_b * E + offs_e[:, None]) * n_chunks) * DSTATE + offs_n[None, :]

    h = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    for chunk in range(n_chunks):
        t = chunk * CHUNK + offs_t
        if MIRROR:
            t_zo = L - 1 - t
        else:
            t_zo = t
        mask_t = t < L
        mask_et = mask_e[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        if STORE_STATES:
            tl.store(state_rows + chunk * DSTATE, h, mask=mask_en)

        u = tl.load(u_rows + t[None, :] * su_l, mask=mask_et, other=0.0).to(tl.float32)
        dt = tl.load(dt_rows + t[None, :] * sd_l, mask=mask_et, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        Bt = tl.load(B_rows + t[None, :] * sB_l, mask=mask_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_rows + t[None, :] * sC_l, mask=mask_nt, other=0.0).to(tl.float32)

        valid = mask_t[None, None, :]
        dA = tl.where(valid, tl.exp2(dt[:, None, :] * A2[:, :, None]), 1.0)
        dBu = tl.where(valid, (dt * u)[:, None, :] * Bt[None, :, :], 0.0)
        a_cum, h_part = tl.associative_scan((dA, dBu), 2, _linear_combine)
        hs = h_part + a_cum * h[:, :, None]  # (BLOCK_E, BLOCK_N, CHUNK) states
        y = tl.sum(hs * Ct[None, :, :], axis=1)  # (BLOCK_E, CHUNK)
        h = tl.sum(tl.where(offs_t[None, None, :] == CHUNK - 1, hs, 0.0), axis=2)

        if HAS_D:
            y = y + Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_rows + t_zo[None, :] * sz_l, mask=mask_et, other=0.0).to(tl.float32)
            y = y * (z * tl.sigmoid(z))
        o_ptrs = o_rows + t_zo[None, :] * so_l
        if ACCUMULATE:
            y = y + tl.load(o_ptrs, mask=mask_et, other=0.0).to(tl.float32)
        tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask_et)

    if STORE_LAST:
        tl.store(
            last_ptr + (pid_b * E + offs_e[:, None]) * DSTATE + offs_n[None, :], h, mask=mask_en
        )


@triton.jit
def _scan_bwd_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    dout_ptr,
    states_ptr,
    du_ptr,
    ddt_ptr,
    dz_ptr,
    dB_ptr,
    dC_ptr,
    dA_ptr,
    dD_ptr,
    dbias_ptr,
    E,
    L,
    chan_per_group,
    n_chunks,
    n_eblocks,
    su_b,
    su_e,
    su_l,
    sd_b,
    sd_e,
    sd_l,
    sA_e,
    sA_n,
    sB_b,
    sB_g,
    sB_n,
    sB_l,
    sC_b,
    sC_g,
    sC_n,
    sC_l,
    sz_b,
    sz_e,
    sz_l,
    sg_b,
    sg_e,
    sg_l,
    DSTATE: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    MIRROR: tl.constexpr,
    ACCUMULATE_DZ: tl.constexpr,
    LOAD_STATES: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Gradients. du, ddt, dz: (batch, E, L) contiguous. dB/dC partials: (batch, n_eblocks,
    DSTATE, L) fp32. dA partials: (batch, E, DSTATE) fp32; dD, dbias partials: (batch, E)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_e = tl.program_id(1)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, CHUNK)
    mask_e = offs_e < E
    mask_n = offs_n < DSTATE
    mask_en = mask_e[:, None] & mask_n[None, :]
    group = (pid_e * BLOCK_E) // chan_per_group

    A = tl.load(A_ptr + offs_e[:, None] * sA_e + offs_n[None, :] * sA_n, mask=mask_en, other=0.0)
    A = A.to(tl.float32)
    A2 = A * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)

    u_rows = u_ptr + pid_b * su_b + offs_e[:, None] * su_e
    dt_rows = dt_ptr + pid_b * sd_b + offs_e[:, None] * sd_e
    z_rows = z_ptr + pid_b * sz_b + offs_e[:, None] * sz_e
    g_rows = dout_ptr + pid_b * sg_b + offs_e[:, None] * sg_e
    grad_rows = (pid_b * E + offs_e[:, None]) * L  # du, ddt, dz are contiguous (batch, E, L)
    B_rows = B_ptr + pid_b * sB_b + group * sB_g + offs_n[:, None] * sB_n
    C_rows = C_ptr + pid_b * sC_b + group * sC_g + offs_n[:, None] * sC_n
    part_rows = ((pid_b * n_eblocks + pid_e) * DSTATE + offs_n[:, None]) * L
    state_rows = states_ptr + ((pid_b * E + offs_e[:, None]) * n_chunks) * DSTATE + offs_n[None, :]

    lam = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for c in range(n_chunks):
        chunk = n_chunks - 1 - c
        t = chunk * CHUNK + offs_t
        t_next = t + 1
        if MIRROR:
            t_zo = L - 1 - t
        else:
            t_zo = t
        mask_t = t < L
        mask_et = mask_e[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        valid = mask_t[None, None, :]

        # Recompute this chunk's states from the state at its entry.
        if LOAD_STATES:
            h_in = tl.load(state_rows + chunk * DSTATE, mask=mask_en, other=0.0)
        else:
            h_in = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
        u = tl.load(u_rows + t[None, :] * su_l, mask=mask_et, other=0.0).to(tl.float32)
        dt_raw = tl.load(dt_rows + t[None, :] * sd_l, mask=mask_et, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt_raw = dt_raw + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt_raw)
        else:
            dt = dt_raw
        Bt = tl.load(B_rows + t[None, :] * sB_l, mask=mask_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_rows + t[None, :] * sC_l, mask=mask_nt, other=0.0).to(tl.float32)
        dtu = dt * u
        dA = tl.where(valid, tl.exp2(dt[:, None, :] * A2[:, :, None]), 1.0)
        dBu = tl.where(valid, dtu[:, None, :] * Bt[None, :, :], 0.0)
        a_cum, h_part = tl.associative_scan((dA, dBu), 2, _linear_combine)
        hs = h_part + a_cum * h_in[:, :, None]

        # Output gradient -> gradient of y (g), of z and of D.
        dout = tl.load(g_rows + t_zo[None, :] * sg_l, mask=mask_et, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_rows + t_zo[None, :] * sz_l, mask=mask_et, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            pre = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                pre = pre + Dv[:, None] * u
            dz = dout * pre * sig * (1.0 + z * (1.0 - sig))
            dz_ptrs = dz_ptr + grad_rows + t_zo[None, :]
            if ACCUMULATE_DZ:
                dz = dz + tl.load(dz_ptrs, mask=mask_et, other=0.0).to(tl.float32)
            tl.store(dz_ptrs, dz.to(dz_ptr.dtype.element_ty), mask=mask_et)
            g = dout * (z * sig)
        else:
            g = dout
        # Finish with the states here, so that only one (BLOCK_E, BLOCK_N, CHUNK) tile of them
        # stays live through the adjoint scan (fewer registers, more programs per SM).
        dC_part = tl.sum(hs * g[:, None, :], axis=0)  # (BLOCK_N, CHUNK)
        tl.store(dC_ptr + part_rows + t[None, :], dC_part, mask=mask_nt)
        h_prev = hs - dBu  # a_t * h_{t-1}
        if HAS_D:
            dD_acc += tl.sum(g * u, axis=1)
            du = g * Dv[:, None]
        else:
            du = tl.zeros((BLOCK_E, CHUNK), dtype=tl.float32)

        # Adjoint: lam_t = g_t C_t + a_next_t * lam_next, scanned against the state order.
        mask_next = mask_e[:, None] & (t_next < L)[None, :]
        dtn = tl.load(dt_rows + t_next[None, :] * sd_l, mask=mask_next, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dtn = dtn + bias[:, None]
        if SOFTPLUS:
            dtn = _softplus(dtn)
        a_next = tl.where(mask_next[:, None, :], tl.exp2(dtn[:, None, :] * A2[:, :, None]), 0.0)
        x = g[:, None, :] * Ct[None, :, :]
        p_cum, lam_part = tl.associative_scan((a_next, x), 2, _linear_combine, reverse=True)
        lam_all = tl.where(valid, lam_part + p_cum * lam[:, :, None], 0.0)
        lam = tl.sum(tl.where(offs_t[None, None, :] == 0, lam_all, 0.0), axis=2)

        dB_part = tl.sum(lam_all * dtu[:, None, :], axis=0)  # (BLOCK_N, CHUNK)
        tl.store(dB_ptr + part_rows + t[None, :], dB_part, mask=mask_nt)
        lam_B = tl.sum(lam_all * Bt[None, :, :], axis=1)  # (BLOCK_E, CHUNK)
        du += dt * lam_B
        w = lam_all * h_prev
        dA_acc += tl.sum(w * dt[:, None, :], axis=2)
        ddt = tl.sum(w * A[:, :, None], axis=1) + u * lam_B
        if SOFTPLUS:
            ddt = tl.where(dt_raw <= 20.0, ddt * tl.sigmoid(dt_raw), ddt)
        ddt = tl.where(mask_et, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + grad_rows + t[None, :], du.to(du_ptr.dtype.element_ty), mask=mask_et)
        tl.store(ddt_ptr + grad_rows + t[None, :], ddt.to(ddt_ptr.dtype.element_ty), mask=mask_et)

    en_rows = (pid_b * E + offs_e) * DSTATE
    tl.store(dA_ptr + en_rows[:, None] + offs_n[None, :], dA_acc, mask=mask_en)
    if HAS_D:
        tl.store(dD_ptr + pid_b * E + offs_e, dD_acc, mask=mask_e)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * E + offs_e, dbias_acc, mask=mask_e)


@triton.jit
def _scan_seq_fwd_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    out_ptr,
    last_ptr,
    E,
    L,
    chan_per_group,
    su_b,
    su_e,
    su_l,
    sd_b,
    sd_e,
    sd_l,
    sA_e,
    sA_n,
    sB_b,
    sB_g,
    sB_n,
    sB_l,
    sC_b,
    sC_g,
    sC_n,
    sC_l,
    sz_b,
    sz_e,
    sz_l,
    so_b,
    so_e,
    so_l,
    DSTATE: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    MIRROR: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    STORE_LAST: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Sequential forward: the (BLOCK_N, BLOCK_E) state steps through time one step at a time,
    each channel's states in one thread's registers (the output's sum over states stays in
    the thread); one time step of u, dt, z, out is BLOCK_E channels (contiguous when the
    channel stride is 1)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_e = tl.program_id(1)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    mask_e = offs_e < E
    mask_n = offs_n < DSTATE
    mask_ne = mask_n[:, None] & mask_e[None, :]
    group = (pid_e * BLOCK_E) // chan_per_group

    A2 = tl.load(A_ptr + offs_n[:, None] * sA_n + offs_e[None, :] * sA_e, mask=mask_ne, other=0.0)
    A2 = A2.to(tl.float32) * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)

    u_row = u_ptr + pid_b * su_b + offs_e * su_e
    dt_row = dt_ptr + pid_b * sd_b + offs_e * sd_e
    z_row = z_ptr + pid_b * sz_b + offs_e * sz_e
    o_row = out_ptr + pid_b * so_b + offs_e * so_e
    B_col = B_ptr + pid_b * sB_b + group * sB_g + offs_n * sB_n
    C_col = C_ptr + pid_b * sC_b + group * sC_g + offs_n * sC_n

    h = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
    for t in tl.range(0, L, num_stages=STAGES):
        if MIRROR:
            t_zo = L - 1 - t
        else:
            t_zo = t
        u = tl.load(u_row + t * su_l, mask=mask_e, other=0.0).to(tl.float32)
        dt = tl.load(dt_row + t * sd_l, mask=mask_e, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias
        if SOFTPLUS:
            dt = _softplus(dt)
        Bt = tl.load(B_col + t * sB_l, mask=mask_n, other=0.0).to(tl.float32)
        Ct = tl.load(C_col + t * sC_l, mask=mask_n, other=0.0).to(tl.float32)
        h = tl.exp2(A2 * dt[None, :]) * h + Bt[:, None] * (dt * u)[None, :]
        y = tl.sum(h * Ct[:, None], axis=0)  # (BLOCK_E,)
        if HAS_D:
            y = y + Dv * u
        if HAS_Z:
            z = tl.load(z_row + t_zo * sz_l, mask=mask_e, other=0.0).to(tl.float32)
            y = y * (z * tl.sigmoid(z))
        o_ptrs = o_row + t_zo * so_l
        if ACCUMULATE:
            y = y + tl.load(o_ptrs, mask=mask_e, other=0.0).to(tl.float32)
        tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask_e)

    if STORE_LAST:
        tl.store(
            last_ptr + (pid_b * E + offs_e[None, :]) * DSTATE + offs_n[:, None], h, mask=mask_ne
        )


@triton.jit
def _scan_seq_bwd_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    dout_ptr,
    hist_ptr,
    du_ptr,
    ddt_ptr,
    dz_ptr,
    dB_ptr,
    dC_ptr,
    dA_ptr,
    dD_ptr,
    dbias_ptr,
    E,
    L,
    chan_per_group,
    n_eblocks,
    su_b,
    su_e,
    su_l,
    sd_b,
    sd_e,
    sd_l,
    sA_e,
    sA_n,
    sB_b,
    sB_g,
    sB_n,
    sB_l,
    sC_b,
    sC_g,
    sC_n,
    sC_l,
    sz_b,
    sz_e,
    sz_l,
    sg_b,
    sg_e,
    sg_l,
    sdu_b,
    sdu_e,
    sdu_l,
    sdd_b,
    sdd_e,
    sdd_l,
    sdz_b,
    sdz_e,
    sdz_l,
    DSTATE: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    MIRROR: tl.constexpr,
    ACCUMULATE_DZ: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Sequential backward: a first pass recomputes the states forward in time and writes each
    step's (BLOCK_N, BLOCK_E) state to this program's slice of `hist` (fp32, (batch, n_eblocks,
    L, BLOCK_N, BLOCK_E)); a second pass walks back in time with the adjoint
    lam_t = g_t C_t + a_{t+1} lam_{t+1}. dB/dC partials: (batch, n_eblocks, DSTATE, L) fp32
    (sums over this program's channels); dA partials (batch, E, DSTATE); dD, dbias (batch, E)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_e = tl.program_id(1)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    mask_e = offs_e < E
    mask_n = offs_n < DSTATE
    mask_ne = mask_n[:, None] & mask_e[None, :]
    group = (pid_e * BLOCK_E) // chan_per_group

    A = tl.load(A_ptr + offs_n[:, None] * sA_n + offs_e[None, :] * sA_e, mask=mask_ne, other=0.0)
    A = A.to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)

    u_row = u_ptr + pid_b * su_b + offs_e * su_e
    dt_row = dt_ptr + pid_b * sd_b + offs_e * sd_e
    z_row = z_ptr + pid_b * sz_b + offs_e * sz_e
    g_row = dout_ptr + pid_b * sg_b + offs_e * sg_e
    du_row = du_ptr + pid_b * sdu_b + offs_e * sdu_e
    ddt_row = ddt_ptr + pid_b * sdd_b + offs_e * sdd_e
    dz_row = dz_ptr + pid_b * sdz_b + offs_e * sdz_e
    B_col = B_ptr + pid_b * sB_b + group * sB_g + offs_n * sB_n
    C_col = C_ptr + pid_b * sC_b + group * sC_g + offs_n * sC_n
    program = pid_b * n_eblocks + pid_e
    hist = hist_ptr + program * L * (BLOCK_N * BLOCK_E)
    tile = offs_n[:, None] * BLOCK_E + tl.arange(0, BLOCK_E)[None, :]
    part_col = (program * DSTATE + offs_n) * L

    h = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
    for t in tl.range(0, L, num_stages=STAGES):
        u = tl.load(u_row + t * su_l, mask=mask_e, other=0.0).to(tl.float32)
        dt = tl.load(dt_row + t * sd_l, mask=mask_e, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias
        if SOFTPLUS:
            dt = _softplus(dt)
        Bt = tl.load(B_col + t * sB_l, mask=mask_n, other=0.0).to(tl.float32)
        h = tl.exp2(A * (dt * LOG2E)[None, :]) * h + Bt[:, None] * (dt * u)[None, :]
        tl.store(hist + t * (BLOCK_N * BLOCK_E) + tile, h)

    lam = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
    a_next = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    h = tl.load(hist + (L - 1) * (BLOCK_N * BLOCK_E) + tile)  # the state h_t of each step
    for s in tl.range(0, L, num_stages=STAGES):
        t = L - 1 - s
        if MIRROR:
            t_zo = s
        else:
            t_zo = t
        u = tl.load(u_row + t * su_l, mask=mask_e, other=0.0).to(tl.float32)
        dt_raw = tl.load(dt_row + t * sd_l, mask=mask_e, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt_raw = dt_raw + bias
        if SOFTPLUS:
            dt = _softplus(dt_raw)
        else:
            dt = dt_raw
        Bt = tl.load(B_col + t * sB_l, mask=mask_n, other=0.0).to(tl.float32)
        Ct = tl.load(C_col + t * sC_l, mask=mask_n, other=0.0).to(tl.float32)
        if t > 0:
            h_prev = tl.load(hist + (t - 1) * (BLOCK_N * BLOCK_E) + tile)
        else:
            h_prev = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
        a = tl.exp2(A * (dt * LOG2E)[None, :])
        dtu = dt * u

        # Output gradient -> gradient of y (g), of z and of D.
        dout = tl.load(g_row + t_zo * sg_l, mask=mask_e, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_row + t_zo * sz_l, mask=mask_e, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            pre = tl.sum(h * Ct[:, None], axis=0)
            if HAS_D:
                pre = pre + Dv * u
            dz = dout * pre * sig * (1.0 + z * (1.0 - sig))
            dz_ptrs = dz_row + t_zo * sdz_l
            if ACCUMULATE_DZ:
                dz = dz + tl.load(dz_ptrs, mask=mask_e, other=0.0).to(tl.float32)
            tl.store(dz_ptrs, dz.to(dz_ptr.dtype.element_ty), mask=mask_e)
            g = dout * (z * sig)
        else:
            g = dout
        if HAS_D:
            dD_acc += g * u
            du = g * Dv
        else:
            du = tl.zeros((BLOCK_E,), dtype=tl.float32)

        lam = a_next * lam + Ct[:, None] * g[None, :]
        tl.store(dC_ptr + part_col + t, tl.sum(h * g[None, :], axis=1), mask=mask_n)
        tl.store(dB_ptr + part_col + t, tl.sum(lam * dtu[None, :], axis=1), mask=mask_n)
        lam_B = tl.sum(lam * Bt[:, None], axis=0)  # (BLOCK_E,)
        du += dt * lam_B
        w = lam * a * h_prev
        dA_acc += w * dt[None, :]
        ddt = tl.sum(w * A, axis=0) + u * lam_B
        if SOFTPLUS:
            ddt = tl.where(dt_raw <= 20.0, ddt * tl.sigmoid(dt_raw), ddt)
        ddt = tl.where(mask_e, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += ddt
        tl.store(du_row + t * sdu_l, du.to(du_ptr.dtype.element_ty), mask=mask_e)
        tl.store(ddt_row + t * sdd_l, ddt.to(ddt_ptr.dtype.element_ty), mask=mask_e)
        a_next = a
        h = h_prev

    tl.store(
        dA_ptr + (pid_b * E + offs_e[None, :]) * DSTATE + offs_n[:, None], dA_acc, mask=mask_ne
    )
    if HAS_D:
        tl.store(dD_ptr + pid_b * E + offs_e, dD_acc, mask=mask_e)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * E + offs_e, dbias_acc, mask=mask_e)
