"""Triton selective scan vs the float64 reference: forward and every gradient.

Tolerances (relative error ||triton - ref|| / ||ref||, reference computed in float64 on the
same inputs): 1e-5 for float32 inputs, 1e-2 for bfloat16/float16 inputs (outputs and
gradients are rounded to the input dtype). Fresh random inputs for every case.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def _triton_scan():
    pytest.importorskip("triton")
    from map3d.ops.triton import selective_scan as scan

    return scan


@pytest.fixture(params=["sequential", "chunked"])
def kernels(request, monkeypatch):
    """Every parity case runs on both kernel families (which one a shape gets by default is a
    speed choice): the sequential kernels for any length, the chunked ones for any width."""
    scan = _triton_scan()
    if request.param == "sequential":
        monkeypatch.setattr(scan, "SEQUENTIAL_L", 1 << 30)
        monkeypatch.setattr(scan, "SEQUENTIAL_CHANNELS", 0)
    else:
        monkeypatch.setattr(scan, "SEQUENTIAL_L", 0)
    return request.param


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _inputs(
    batch,
    E,
    N,
    L,
    dtype,
    *,
    groups=0,
    has_d=True,
    has_z=True,
    has_bias=True,
    strided=False,
    softplus=True,
    seed=0,
):
    """Mamba-like random inputs; `strided` lays u, delta, z out as a mixer does (channels
    contiguous, time strided) and B, C as transposed views."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    dev = "cuda"

    def rand(*shape, scale=1.0, offset=0.0):
        return (torch.rand(*shape, generator=g, device=dev) - 0.5) * 2 * scale + offset

    # delta enters softplus (any sign) or is used as is (then positive, as a step size is)
    d_scale, d_offset = (0.5, -1.0) if softplus else (0.25, 0.3)
    if strided:
        u = rand(batch, L, E).to(dtype).transpose(1, 2)
        delta = rand(batch, L, E, scale=d_scale, offset=d_offset).to(dtype).transpose(1, 2)
        z = rand(batch, L, 2 * E).to(dtype)[..., E:].transpose(1, 2) if has_z else None
    else:
        u = rand(batch, E, L).to(dtype)
        delta = rand(batch, E, L, scale=d_scale, offset=d_offset).to(dtype)
        z = rand(batch, E, L).to(dtype) if has_z else None
    A = -torch.exp(rand(E, N, scale=1.0))
    bc_shape = (batch, groups, N, L) if groups else (batch, N, L)
    if strided and not groups:
        Bm = rand(batch, L, N).to(dtype).transpose(1, 2)
        Cm = rand(batch, L, N).to(dtype).transpose(1, 2)
    else:
        Bm = rand(*bc_shape).to(dtype)
        Cm = rand(*bc_shape).to(dtype)
    D = rand(E) if has_d else None
    bias = rand(E, scale=0.5) if has_bias else None
    return [u, delta, A, Bm, Cm, D, z, bias]


def _reference(args, softplus):
    from map3d.ops.reference.scan import selective_scan as ref

    return ref(*args, delta_softplus=softplus)


def _leaves(args):
    return [None if a is None else a.detach().clone().requires_grad_(True) for a in args]


def _double(leaves):
    return [None if a is None else a.detach().double().requires_grad_(True) for a in leaves]


def _grads(out, leaves, dout):
    out.backward(dout)
    return [None if a is None else a.grad for a in leaves]


NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def _compare(tri_out, ref_out, tri_grads, ref_grads, dtype, label=""):
    tol = TOL[dtype]
    errors = {"out": _rel(tri_out, ref_out)}
    for name, a, b in zip(NAMES, tri_grads, ref_grads):
        if b is not None:
            assert a is not None, f"{label} missing gradient of {name}"
            errors[f"d{name}"] = _rel(a, b)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{label} relative errors above {tol}: {bad} (all: {errors})"


CASES = [
    # batch, E, N, L, groups, has_d, has_z, has_bias, softplus, strided
    (2, 32, 16, 64, 0, True, True, True, True, False),
    (2, 24, 16, 1, 0, True, True, True, True, False),
    (3, 40, 16, 37, 0, True, False, True, True, False),
    (2, 32, 16, 200, 0, True, True, True, True, False),  # several chunks + a partial one
    (2, 32, 16, 130, 2, True, True, False, False, False),  # grouped B/C
    (2, 64, 8, 96, 0, False, True, True, True, True),  # mixer layout (strided)
    (1, 16, 4, 700, 0, False, False, False, True, False),
    (2, 48, 16, 300, 0, True, True, True, True, True),  # several chunks, mixer layout
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES)
def test_selective_scan_matches_reference(case, dtype, kernels):
    scan = _triton_scan()
    batch, E, N, L, groups, has_d, has_z, has_bias, softplus, strided = case
    seed = zlib.crc32(repr((case, dtype)).encode()) % 10_000
    args = _inputs(
        batch,
        E,
        N,
        L,
        dtype,
        groups=groups,
        has_d=has_d,
        has_z=has_z,
        has_bias=has_bias,
        strided=strided,
        softplus=softplus,
        seed=seed,
    )
    tri = _leaves(args)
    ref = _double(args)
    out = scan.selective_scan(*tri, delta_softplus=softplus)
    assert out.dtype == dtype and out.shape == (batch, E, L)
    ref_out = _reference(ref, softplus)
    dout = torch.randn(
        out.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(seed)
    )
    tri_grads = _grads(out.float(), tri, dout)
    ref_grads = _grads(ref_out, ref, dout.double())
    for a, leaf in zip(tri_grads, tri):
        if leaf is not None:
            assert a.dtype == leaf.dtype and a.shape == leaf.shape
    _compare(out, ref_out, tri_grads, ref_grads, dtype, label=f"{case} {dtype}")


def test_last_state_matches_reference(kernels):
    scan = _triton_scan()
    from map3d.ops.reference.scan import selective_scan as ref

    args = _inputs(2, 32, 16, 150, torch.float32, seed=7)
    out, last = scan.selective_scan(*args, delta_softplus=True, return_last_state=True)
    ref_out, ref_last = ref(
        *[None if a is None else a.double() for a in args],
        delta_softplus=True,
        return_last_state=True,
    )
    assert last.dtype == torch.float32 and last.shape == (2, 32, 16)
    assert _rel(out, ref_out) < 1e-5 and _rel(last, ref_last) < 1e-5


def test_sequential_and_chunked_kernels_agree(monkeypatch):
    """Both kernel families on a mixer's shape: the sequential (the default there) and the
    chunked one (forced), forward and gradients; outputs follow the mixer's layout."""
    scan = _triton_scan()
    args = _inputs(32, 768, 16, 26, torch.float32, strided=True, seed=3)
    assert scan.runs_sequential(args[0], args[2])
    results = []
    for limit in (scan.SEQUENTIAL_L, 0):
        monkeypatch.setattr(scan, "SEQUENTIAL_L", limit)
        leaves = _leaves(args)
        out = scan.selective_scan(*leaves, delta_softplus=True)
        dout = torch.randn(
            out.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(0)
        )
        results.append((out, _grads(out, leaves, dout)))
    (seq_out, seq_grads), (chunk_out, chunk_grads) = results
    assert seq_out.stride(1) == 1, "the sequential scan writes channels-last for a mixer"
    assert _rel(seq_out, chunk_out) < 1e-5
    for name, a, b in zip(NAMES, seq_grads, chunk_grads):
        assert (a is None) == (b is None), name
        if a is not None:
            assert _rel(a, b) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("L", [26, 150, 300])
def test_bidirectional_matches_flipped_reference(dtype, L, kernels):
    _triton_scan()
    from map3d.ops import bidirectional_selective_scan

    fwd = _inputs(2, 32, 16, L, dtype, seed=L)
    bwd = _inputs(2, 32, 16, L, dtype, has_z=False, seed=L + 1)
    z = fwd[6]
    u, delta, A, Bm, Cm, D, _, bias = fwd
    ub, deltab, Ab, Bb, Cb, Db, _, biasb = bwd
    tri = _leaves([u, delta, A, Bm, Cm, D, bias, ub, deltab, Ab, Bb, Cb, Db, biasb, z])
    ref = _double(tri)
    out = bidirectional_selective_scan(*tri[:14], z=tri[14], delta_softplus=True, backend="triton")

    from map3d.ops.reference.scan import selective_scan as reference

    r = ref
    ref_out = reference(*r[:5], r[5], r[14], r[6], delta_softplus=True) + reference(
        *r[7:12], r[12], r[14].flip(-1), r[13], delta_softplus=True
    ).flip(-1)
    dout = torch.randn(out.shape, device="cuda")
    tri_grads = _grads(out.float(), tri, dout)
    ref_grads = _grads(ref_out, ref, dout.double())
    tol = TOL[dtype]
    errors = {i: _rel(a, b) for i, (a, b) in enumerate(zip(tri_grads, ref_grads))}
    errors["out"] = _rel(out, ref_out)
    assert all(v <= tol for v in errors.values()), errors


def test_dispatch_picks_triton_on_cuda():
    _triton_scan()
    from map3d.ops import dispatch
    from map3d.ops.triton import fps as triton_fps
    from map3d.ops.triton import selective_scan as scan

    args = _inputs(1, 8, 16, 16, torch.float32)
    chosen = dispatch.resolve(
        "selective_scan", None, *args, delta_softplus=True, return_last_state=False
    )
    mamba = dispatch._REGISTRY["selective_scan"].get("mamba_ssm")
    if mamba is not None and mamba.available() is None:  # the compiled kernel ranks first
        assert chosen is mamba.fn
    else:
        assert chosen is scan.selective_scan
    points = torch.rand(1, 64, 3, device="cuda")
    assert (
        dispatch.resolve("fps", None, points, num_samples=8, random_start=False) is triton_fps.fps
    )


def test_bimamba_triton_matches_reference_backend():
    """The whole mixer, forward and parameter gradients, Triton scan vs reference scan."""
    _triton_scan()
    from map3d.layers.bimamba import BiMamba

    torch.manual_seed(0)
    layer = BiMamba(64).cuda()
    x = torch.randn(2, 48, 64, device="cuda", requires_grad=True)
    results = {}
    for backend in ("reference", "triton"):
        layer.zero_grad()
        x.grad = None
        os.environ["MAP3D_BACKEND"] = f"selective_scan={backend}"
        try:
            y = layer(x)
            y.square().mean().backward()
        finally:
            del os.environ["MAP3D_BACKEND"]
        results[backend] = (
            y.detach(),
            x.grad.clone(),
            {n: p.grad.clone() for n, p in layer.named_parameters()},
        )
    ref, tri = results["reference"], results["triton"]
    assert _rel(tri[0], ref[0]) < 1e-5
    assert _rel(tri[1], ref[1]) < 1e-4
    for name in ref[2]:
        assert _rel(tri[2][name], ref[2][name]) < 1e-4, name


def test_bimamba_matches_mamba_ssm_backend():
    """Mixer output with the Triton scan vs the mamba-ssm compiled scan (when installed)."""
    _triton_scan()
    pytest.importorskip("mamba_ssm", reason="mamba-ssm not installed")
    from map3d.layers.bimamba import BiMamba
    from map3d.ops import dispatch

    try:
        dispatch.resolve(
            "selective_scan",
            "mamba_ssm",
            *_inputs(1, 8, 16, 16, torch.float32),
            delta_softplus=True,
            return_last_state=False,
        )
    except (ValueError, dispatch.BackendUnavailableError) as error:
        pytest.skip(f"no mamba_ssm selective_scan backend: {error}")

    torch.manual_seed(0)
    layer = BiMamba(64).cuda()
    x = torch.randn(2, 48, 64, device="cuda")
    outs = {}
    for backend in ("mamba_ssm", "triton"):
        os.environ["MAP3D_BACKEND"] = f"selective_scan={backend}"
        try:
            outs[backend] = layer(x).detach()
        finally:
            del os.environ["MAP3D_BACKEND"]
    assert _rel(outs["triton"], outs["mamba_ssm"]) < 1e-5
