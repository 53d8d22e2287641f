"""Reference selective scan and causal conv1d against step-by-step loops; gradients; checks."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from map3d import ops


def scan_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Slow step-by-step selective scan (mamba-ssm's selective_scan_ref recurrence)."""
    dt = delta if delta_bias is None else delta + delta_bias[:, None]
    dt = F.softplus(dt) if delta_softplus else dt
    batch, channels, length = u.shape
    Bg = B.unsqueeze(1) if B.dim() == 3 else B
    Cg = C.unsqueeze(1) if C.dim() == 3 else C
    per_group = channels // Bg.shape[1]
    Be = Bg.repeat_interleave(per_group, dim=1)  # (B,E,N,L): channel e uses group e // per_group
    Ce = Cg.repeat_interleave(per_group, dim=1)
    h = torch.zeros(batch, channels, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(length):
        step = dt[:, :, t, None]
        h = torch.exp(step * A) * h + step * Be[..., t] * u[:, :, t, None]
        ys.append((h * Ce[..., t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y, h


def scan_inputs(gen, batch=2, channels=4, state=3, length=11, groups=0, dtype=torch.float64):
    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    bc_shape = (batch, state, length) if groups == 0 else (batch, groups, state, length)
    return {
        "u": rnd(batch, channels, length),
        "delta": rnd(batch, channels, length).abs() * 0.5,
        "A": -torch.rand(channels, state, generator=gen, dtype=torch.float64).to(dtype) * 4,
        "B": rnd(*bc_shape),
        "C": rnd(*bc_shape),
        "D": rnd(channels),
        "z": rnd(batch, channels, length),
        "delta_bias": rnd(channels) * 0.1,
    }


OPTIONS = [
    {},
    {"D": True},
    {"D": True, "z": True},
    {"delta_bias": True, "softplus": True},
    {"D": True, "z": True, "delta_bias": True, "softplus": True},
]


def pick(inputs, opts):
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    args += [inputs[k] if opts.get(k) else None for k in ("D", "z", "delta_bias")]
    return args


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("groups", [0, 1, 2])
@pytest.mark.parametrize("length", [1, 5, 16, 23])
def test_selective_scan_matches_loop(generator, opts, groups, length):
    inputs = scan_inputs(generator, length=length, groups=groups)
    args = pick(inputs, opts)
    softplus = opts.get("softplus", False)
    out, last = ops.selective_scan(*args, softplus, True)
    ref, ref_last = scan_loop(*args, delta_softplus=softplus)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-10)
    assert torch.equal(ops.selective_scan(*args, softplus), out)


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("groups", [0, 2])
def test_selective_scan_gradcheck(generator, opts, groups):
    inputs = scan_inputs(generator, batch=2, channels=4, state=2, length=9, groups=groups)
    args = [t if t is None else t.requires_grad_() for t in pick(inputs, opts)]
    softplus = opts.get("softplus", False)
    assert gradcheck(lambda *a: ops.selective_scan(*a, softplus), args, fast_mode=True)


def test_selective_scan_gradcheck_through_last_state(generator):
    inputs = scan_inputs(generator, batch=1, channels=2, state=2, length=7)
    args = [t if t is None else t.requires_grad_() for t in pick(inputs, {"D": True})]
    assert gradcheck(lambda *a: ops.selective_scan(*a, False, True), args, fast_mode=True)


def test_selective_scan_grads_match_loop(generator):
    inputs = scan_inputs(generator, batch=2, channels=4, state=3, length=20, groups=2)
    args = pick(inputs, {"D": True, "z": True, "delta_bias": True, "softplus": True})
    leaves = [t.clone().requires_grad_() for t in args]
    loops = [t.clone().requires_grad_() for t in args]
    weight = torch.randn(2, 4, 20, generator=generator, dtype=torch.float64)
    (ops.selective_scan(*leaves, True) * weight).sum().backward()
    (scan_loop(*loops, delta_softplus=True)[0] * weight).sum().backward()
    for a, b in zip(leaves, loops):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)


def test_selective_scan_low_precision_dtypes(generator):
    inputs = scan_inputs(generator, length=13, groups=2)
    args = pick(inputs, {"D": True, "z": True})
    ref, _ref_last = scan_loop(*args)
    args = args[:-1]  # no delta_bias
    out, last = ops.selective_scan(*[t.float() for t in args], return_last_state=True)
    assert out.dtype == torch.float32 and last.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    out16 = ops.selective_scan(*[t.bfloat16() if t.dim() == 3 else t.float() for t in args])
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.double(), ref, rtol=5e-2, atol=5e-2)


def test_selective_scan_is_stable_with_fast_decay(generator):
    inputs = scan_inputs(generator, length=64)
    A = inputs["A"] * 1000  # decays of exp(-2000) per step: a quotient-based scan overflows
    out, last = ops.selective_scan(
        inputs["u"], inputs["delta"] + 0.5, A, inputs["B"], inputs["C"], return_last_state=True
    )
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    ref, _ = scan_loop(
        inputs["u"][..., -3:],
        inputs["delta"][..., -3:] + 0.5,
        A,
        inputs["B"][..., -3:],
        inputs["C"][..., -3:],
    )
    torch.testing.assert_close(out[..., -1], ref[..., -1])  # only the last steps matter


def test_selective_scan_blocks_and_padding(generator, monkeypatch):
    from map3d.ops.reference import scan

    monkeypatch.setitem(scan._BLOCK_BUDGET, "cpu", 50)  # several channel blocks
    inputs = scan_inputs(generator, channels=6, length=10, groups=3)  # 10 = 3 chunks of 3, +1
    args = [t.clone().requires_grad_() for t in pick(inputs, {"D": True})[:6]]
    out = ops.selective_scan(*args)
    torch.testing.assert_close(out, scan_loop(*pick(inputs, {"D": True})[:6])[0])
    assert gradcheck(lambda *a: ops.selective_scan(*a), args, fast_mode=True)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"u": torch.zeros(2, 4)}, ["u", "(2, 4)"]),
        ({"delta": torch.zeros(2, 4, 5)}, ["delta", "(2, 4, 5)"]),
        ({"A": torch.zeros(3, 3)}, ["A", "(3, 3)"]),
        ({"B": torch.zeros(2, 2, 11)}, ["B", "(2, 2, 11)"]),
        ({"C": torch.zeros(2, 3, 3, 11)}, ["C", "divisible"]),
        ({"B": torch.zeros(1, 3, 11)}, ["B", "B=2"]),
        ({"D": torch.zeros(5)}, ["D", "(5,)"]),
        ({"z": torch.zeros(2, 4, 10)}, ["z"]),
    ],
)
def test_selective_scan_bad_inputs(generator, change, words):
    inputs = scan_inputs(generator, dtype=torch.float32)
    inputs.update(change)
    with pytest.raises(ValueError) as info:
        ops.selective_scan(**inputs)
    for word in words:
        assert word in str(info.value)


# --- causal conv1d ---------------------------------------------------------------------------


def conv_loop(x, weight, bias, activation):
    _batch, _channels, length = x.shape
    width = weight.shape[1]
    out = torch.zeros_like(x)
    for t in range(length):
        for w in range(width):
            s = t - (width - 1) + w
            if s >= 0:
                out[:, :, t] += weight[:, w] * x[:, :, s]
    if bias is not None:
        out = out + bias[:, None]
    return F.silu(out) if activation else out


@pytest.mark.parametrize("activation", [None, "silu", "swish"])
@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("use_bias", [False, True])
def test_causal_conv1d_matches_loop(generator, activation, width, use_bias):
    x = torch.randn(2, 5, 9, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, width, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64) if use_bias else None
    out = ops.causal_conv1d(x, weight, bias, activation)
    torch.testing.assert_close(out, conv_loop(x, weight, bias, activation))


@pytest.mark.parametrize("activation", [None, "silu"])
def test_causal_conv1d_gradcheck(generator, activation):
    x = torch.randn(1, 3, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert gradcheck(
        lambda *a: ops.causal_conv1d(*a, activation=activation), (x, weight, bias), fast_mode=True
    )


def test_causal_conv1d_keeps_input_dtype_and_checks(generator):
    x = torch.randn(1, 3, 6, generator=generator).bfloat16()
    weight = torch.randn(3, 4, generator=generator)
    assert ops.causal_conv1d(x, weight).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"weight \(4, 4\)"):
        ops.causal_conv1d(x, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="activation"):
        ops.causal_conv1d(x, weight, activation="relu")
    with pytest.raises(ValueError, match="bias"):
        ops.causal_conv1d(x, weight, torch.zeros(2))
