"""`map3d.ops.bidirectional_selective_scan`: the registered op bidirectional mixers call."""

import pytest
import torch

from map3d import ops
from map3d.ops import dispatch
from map3d.ops.reference import scan as reference


def _direction(generator, batch=2, channels=8, state=4, length=12, dtype=torch.float64):
    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    return (
        rand(batch, channels, length), rand(batch, channels, length),
        -torch.rand(channels, state, generator=generator, dtype=dtype) - 0.5,
        rand(batch, state, length), rand(batch, state, length), rand(channels), rand(channels),
    )  # fmt: skip


def _flipped_pair(first, second, z):
    """The definition, written out: a forward scan plus the flipped scan of the flipped
    sequence (`_b` tensors given in flipped order, z in natural order)."""
    u, delta, A, B, C, D, bias = first
    ub, deltab, Ab, Bb, Cb, Db, biasb = second
    out = reference.selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True)
    zb = None if z is None else z.flip(-1)
    out_b = reference.selective_scan(ub, deltab, Ab, Bb, Cb, Db, zb, biasb, delta_softplus=True)
    return out + out_b.flip(-1)


@pytest.mark.parametrize("with_z", [True, False])
def test_reference_twin_is_the_flipped_pair_forward_and_backward(generator, with_z):
    """Random inputs; outputs and the gradients of all 15 inputs agree with the definition."""
    first, second = _direction(generator), _direction(generator)
    z = torch.randn(first[0].shape, generator=generator, dtype=torch.float64) if with_z else None
    leaves = [t.clone().requires_grad_() for t in (*first, *second)]
    z_leaf = None if z is None else z.clone().requires_grad_()
    out = ops.bidirectional_selective_scan(*leaves, z=z_leaf, backend="reference")
    ref_leaves = [t.clone().requires_grad_() for t in (*first, *second)]
    ref_z = None if z is None else z.clone().requires_grad_()
    expected = _flipped_pair(ref_leaves[:7], ref_leaves[7:], ref_z)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    inputs = leaves + ([z_leaf] if with_z else [])
    ref_inputs = ref_leaves + ([ref_z] if with_z else [])
    grads = torch.autograd.grad((out * weights).sum(), inputs)
    ref_grads = torch.autograd.grad((expected * weights).sum(), ref_inputs)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_every_scan_backend_has_a_bidirectional_twin(generator, monkeypatch):
    """A selective_scan backend without a fused scan of its own runs the op as two of its own
    scans with flips, under its name and priority; a per-op MAP3D_BACKEND entry for
    selective_scan chooses it here too; registering a fused one replaces the pair."""
    calls = []

    def scan(*args):
        calls.append(args)
        return reference.selective_scan(*args)

    dispatch._load_backends()  # before the copies: later registrations must not land in them
    registry = {op: dict(backends) for op, backends in dispatch._REGISTRY.items()}
    monkeypatch.setattr(dispatch, "_REGISTRY", registry)
    monkeypatch.setattr(dispatch, "_REASONS", dict(dispatch._REASONS))
    monkeypatch.setattr(dispatch, "_ORDERED", dict(dispatch._ORDERED))
    monkeypatch.setattr(dispatch, "_PAIRED", set(dispatch._PAIRED))
    dispatch.register("selective_scan", "counting", scan, lambda: None, lambda *t: True, -5)
    twin = dispatch._REGISTRY["bidirectional_selective_scan"]["counting"]
    assert twin.priority == -5 and "counting" in dispatch._PAIRED

    first, second = _direction(generator), _direction(generator)
    z = torch.randn(first[0].shape, generator=generator, dtype=torch.float64)
    with dispatch.backend_env("selective_scan=counting"):
        out = ops.bidirectional_selective_scan(*first, *second, z=z)
    assert len(calls) == 2 and torch.equal(calls[1][6], z.flip(-1))
    torch.testing.assert_close(out, _flipped_pair(first, second, z), rtol=0, atol=0)

    fused = []
    dispatch.register(
        "bidirectional_selective_scan", "counting", lambda *a: fused.append(a) or "fused",
        lambda: None, lambda *t: True, -5,
    )  # fmt: skip
    dispatch.register("selective_scan", "counting", scan, lambda: None, lambda *t: True, -5)
    assert ops.bidirectional_selective_scan(*first, *second, z=z, backend="counting") == "fused"
    assert len(fused) == 1 and all(a is b for a, b in zip(fused[0], (*first, *second, z)))


def test_triton_backend_is_the_fused_kernel_and_listed():
    """The Triton backend of the op is the one-call kernel (no flips), registered whether or
    not Triton runs here; `map3d backends` lists the op with its backends."""
    import map3d.ops.triton  # noqa: F401  (registers; Triton itself is imported lazily)
    from map3d.ops.triton.selective_scan import bidirectional_selective_scan_triton

    triton = dispatch._REGISTRY["bidirectional_selective_scan"]["triton"]
    assert triton.fn is bidirectional_selective_scan_triton
    assert triton.priority == dispatch._REGISTRY["selective_scan"]["triton"].priority
    assert dispatch._REGISTRY["bidirectional_selective_scan"]["reference"].fn is (
        reference.bidirectional_selective_scan
    )
    rows = {r.backend for r in dispatch.backend_table() if r.op == "bidirectional_selective_scan"}
    scans = {r.backend for r in dispatch.backend_table() if r.op == "selective_scan"}
    assert rows == scans and {"reference", "triton"} <= rows
    assert "bidirectional_selective_scan" in dispatch.format_backend_table()


def test_shape_errors_name_the_op(generator):
    first, second = _direction(generator), _direction(generator)
    with pytest.raises(ValueError, match="^bidirectional_selective_scan: "):
        ops.bidirectional_selective_scan(*first, second[0][:, :, :5], *second[1:])


def test_triton_scan_outranks_mamba_ssm_where_its_sequential_kernels_run(monkeypatch):
    """Short sequences over many channels (the encoder's shapes) go to the Triton scan ahead of
    mamba-ssm's kernel; longer ones to mamba-ssm's when it is installed, else still to Triton.
    (CPU tensors stand in for CUDA ones: the device check is stubbed out.)"""
    import map3d.ops.triton as triton_ops
    from map3d.ops.triton import selective_scan as scan

    monkeypatch.setattr(scan, "supports", lambda *tensors, **options: True)
    mamba_missing = {"reason": None}
    real_reason = dispatch.unavailable_reason

    def reason(op, name):
        return mamba_missing["reason"] if name == "mamba_ssm" else real_reason(op, name)

    monkeypatch.setattr(dispatch, "unavailable_reason", reason)

    def scan_inputs(batch, E, L):
        u, B = torch.zeros(batch, E, L), torch.zeros(batch, 16, L)
        return u, u, torch.zeros(E, 16), B, B

    encoder, long_sequence = scan_inputs(32, 768, 26), scan_inputs(2, 768, 1024)
    assert triton_ops._scan_supports(*encoder)
    assert not triton_ops._scan_supports(*long_sequence)
    pair = (*encoder[:5], None, None, *encoder[:5], None, None)
    assert triton_ops._bidirectional_supports(*pair, z=None)
    mamba_missing["reason"] = "mamba-ssm is not installed"
    assert triton_ops._scan_supports(*long_sequence)
    registry = dispatch._REGISTRY["selective_scan"]
    assert registry["triton"].priority > registry["mamba_ssm"].priority


@pytest.mark.parametrize(
    "batch, E, L, sequential",
    [
        (128, 768, 26, True),  # the pretraining encoder
        (32, 768, 129, True),  # finetuning with a cls token
        (8, 768, 256, False),  # too few channels to fill the GPU
        (128, 768, 300, False),  # long: the chunked kernels
        (2048, 768, 256, False),  # the state history would exceed SEQUENTIAL_HISTORY_BYTES
    ],
)
def test_triton_scan_kernel_family_follows_the_shape(batch, E, L, sequential):
    from map3d.ops.triton import selective_scan as scan

    u, A = torch.empty(batch, E, L, device="meta"), torch.empty(E, 16, device="meta")
    assert scan.runs_sequential(u, A) is sequential
