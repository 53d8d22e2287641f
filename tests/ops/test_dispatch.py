"""Backend selection: explicit argument > MAP3D_BACKEND > best available; errors; adapters."""

import argparse
import sys
import types

import pytest
import torch

from map3d import commands, ops
from map3d.commands import BACKENDS
from map3d.ops import dispatch, reference
from map3d.ops import external as ext


def fake_knn(tag):
    def knn(query, points, k):
        return torch.full((1,), float(tag)), None

    return knn


def register_fakes(available_reason=None):
    """`fast` (priority 50, available unless a reason is given) and `slow` (priority 5)."""
    dispatch.register(
        "knn",
        "fast",
        fake_knn(1),
        lambda: available_reason,
        lambda q, p: True,
        50,
        install="pip install fast",
    )
    dispatch.register("knn", "slow", fake_knn(2), lambda: None, lambda *t, **o: True, 5)


def used(points, **kwargs):
    """Which fake ran (1 fast, 2 slow), or 0 for the reference."""
    dist2, idx = ops.knn(points, points, 1, **kwargs)
    return int(dist2[0]) if idx is None else 0


@pytest.fixture
def points(generator):
    return torch.rand(1, 5, 3, generator=generator)


def test_best_available_wins(registry, points):
    register_fakes()
    assert used(points) == 1


def test_unavailable_backends_are_skipped(registry, points):
    register_fakes(available_reason="fast is not installed")
    assert used(points) == 2


def test_supports_decides_per_call(registry, points):
    dispatch.register("knn", "fast", fake_knn(1), lambda: None, lambda q, p, *, k: k > 3, 50)
    assert used(points) == 0  # k=1: not supported, falls to the reference (slow not registered)
    assert int(ops.knn(points, points, 4)[0][0]) == 1


def test_explicit_argument_beats_environment(registry, points, monkeypatch):
    register_fakes()
    monkeypatch.setenv("MAP3D_BACKEND", "slow")
    assert used(points) == 2
    assert used(points, backend="reference") == 0
    assert used(points, backend="auto") == 2


def test_environment_forms(registry, points, monkeypatch):
    register_fakes()
    monkeypatch.setenv("MAP3D_BACKEND", "knn=slow")
    assert used(points) == 2
    monkeypatch.setenv("MAP3D_BACKEND", "reference, fps=reference")
    assert used(points) == 0
    monkeypatch.setenv("MAP3D_BACKEND", "slow,knn=fast")
    assert used(points) == 1
    monkeypatch.setenv("MAP3D_BACKEND", "triton")  # a default name only applies where usable
    assert used(points) == 1


def test_environment_per_op_entry_is_strict(registry, points, monkeypatch):
    register_fakes(available_reason="fast is not installed")
    monkeypatch.setenv("MAP3D_BACKEND", "knn=fast")
    with pytest.raises(dispatch.BackendUnavailableError, match="MAP3D_BACKEND=.*pip install fast"):
        used(points)


@pytest.mark.parametrize(
    "value, words",
    [
        ("knnn=reference", "unknown op"),
        ("nonesuch", "unknown backend"),
        ("reference,slow", "more than one"),
    ],
)
def test_bad_environment_values(registry, points, monkeypatch, value, words):
    register_fakes()
    monkeypatch.setenv("MAP3D_BACKEND", value)
    with pytest.raises(ValueError, match=words):
        used(points)


def test_explicit_unavailable_backend_says_why_and_how_to_install(registry, points):
    register_fakes(available_reason="fast is not installed")
    with pytest.raises(dispatch.BackendUnavailableError) as info:
        used(points, backend="fast")
    message = str(info.value)
    assert "fast is not installed" in message and "pip install fast" in message


def test_explicit_backend_that_rejects_inputs(registry, points):
    dispatch.register("knn", "picky", fake_knn(3), lambda: None, lambda *t: False, 1)
    with pytest.raises(dispatch.BackendUnavailableError, match="does not support these inputs"):
        used(points, backend="picky")


def test_unknown_backend_name(registry, points):
    with pytest.raises(ValueError, match="knn has no backend 'cuda'.*reference"):
        used(points, backend="cuda")


@pytest.mark.parametrize("name", ["mamba_ssm", "causal_conv1d", "pytorch3d", "knn_cuda"])
def test_real_external_backends_unavailable_here_raise_with_install_hint(registry, name):
    if torch.cuda.is_available():
        pytest.skip("this machine may have the library")
    op = {
        "mamba_ssm": "selective_scan",
        "causal_conv1d": "causal_conv1d",
        "pytorch3d": "fps",
        "knn_cuda": "knn",
    }[name]
    assert dispatch.unavailable_reason(op, name) is not None
    assert dispatch.unavailable_reason(op, "reference") is None
    with pytest.raises(dispatch.BackendUnavailableError, match="install"):
        dispatch.resolve(op, name, torch.zeros(1, 4, 3))


def test_availability_is_checked_once(registry, points):
    calls = []

    def available():
        calls.append(1)

    dispatch.register("knn", "counted", fake_knn(4), available, lambda *t: True, 99)
    for _ in range(3):
        used(points)
    assert len(calls) == 1
    dispatch.refresh()
    used(points)
    assert len(calls) == 2


def test_reference_is_default_on_cpu_for_every_op(registry):
    for op in dispatch.OPS:
        fn = dispatch.resolve(op, None, torch.zeros(1, 4, 3))
        assert fn is getattr(reference, op)


def test_backend_table_and_command(registry, capsys):
    register_fakes(available_reason="fast is not installed")
    rows = dispatch.backend_table()
    pairs = {(r.op, r.backend): r for r in rows}
    assert pairs[("knn", "fast")].reason == "fast is not installed"
    assert pairs[("selective_scan", "reference")].available
    assert {r.op for r in rows} == set(dispatch.OPS)
    assert BACKENDS.run(argparse.Namespace(op="knn", check=False)) == 0
    out = capsys.readouterr().out
    assert "no: fast is not installed" in out and "selective_scan" not in out
    header = out.splitlines()[0]
    assert header.split() == ["op", "backend", "priority", "available"]


def test_backends_command_lists_the_ops_of_dispatch():
    assert commands._OPS == dispatch.OPS and commands._ENV_VAR == dispatch.ENV_VAR


def test_register_rejects_unknown_op():
    with pytest.raises(ValueError, match="op must be one of"):
        dispatch.register("fft", "x", print, lambda: None, lambda *t: True, 0)


# --- external adapters, against fake libraries on CPU ----------------------------------------


def fake_module(monkeypatch, name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_mamba_ssm_adapter_casts_and_checks_compiled_module(monkeypatch, generator):
    seen = {}

    def selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        seen.update(
            dtypes=[getattr(t, "dtype", None) for t in (u, delta, A, B, C, D, z, delta_bias)]
        )
        return reference.selective_scan(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )

    fake_module(monkeypatch, "mamba_ssm")
    fake_module(monkeypatch, "mamba_ssm.ops")
    fake_module(
        monkeypatch, "mamba_ssm.ops.selective_scan_interface", selective_scan_fn=selective_scan_fn
    )
    assert "selective_scan_cuda" in ext._mamba_ssm_available()  # the package alone is not enough
    fake_module(monkeypatch, "selective_scan_cuda")
    assert ext._mamba_ssm_available() in (None, "no CUDA device")
    ext._selective_scan_fn.cache_clear()
    try:
        u = torch.randn(1, 4, 6, generator=generator).bfloat16()
        A = -torch.rand(4, 2, generator=generator, dtype=torch.float64)
        B = torch.randn(1, 2, 6, generator=generator)
        out = ext.selective_scan_mamba_ssm(
            u, u.float(), A, B, B, torch.ones(4).bfloat16(), None, torch.zeros(4), True
        )
    finally:
        ext._selective_scan_fn.cache_clear()
    f32, bf16 = torch.float32, torch.bfloat16
    assert seen["dtypes"] == [bf16, bf16, f32, bf16, bf16, f32, None, f32]
    assert out.dtype == bf16


def test_external_supports_need_cuda_tensors(generator):
    x = torch.zeros(1, 4, 8)
    assert not ext._causal_conv1d_supports(x, torch.zeros(4, 3), None)
    assert not ext._mamba_ssm_supports(
        x, x, torch.zeros(4, 2), torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), None, None, None
    )
    assert not ext._knn_cuda_supports(x, x)
    assert not ext._pytorch3d_knn_supports(x, x, k=1)
    assert not ext._pytorch3d_fps_supports(x, num_samples=1)
    assert not ext._pytorch3d_chamfer_supports(x, x)


@pytest.mark.gpu
def test_best_backend_on_cuda_agrees_with_reference(generator):
    points = torch.rand(2, 256, 3, generator=generator).cuda()
    for backend in (None, "reference"):
        assert ops.fps(points, 16, backend=backend).shape == (2, 16)
    d_auto, _ = ops.knn(points[:, :8], points, 4)
    d_ref, _ = ops.knn(points[:, :8], points, 4, backend="reference")
    torch.testing.assert_close(d_auto, d_ref)
    torch.testing.assert_close(
        ops.chamfer_distance(points, points.flip(1)),
        ops.chamfer_distance(points, points.flip(1), backend="reference"),
    )


def test_ops_compile_without_graph_breaks(generator):
    points = torch.rand(2, 16, 3, generator=generator)
    u = torch.randn(1, 4, 5, generator=generator)
    A, B, w = -torch.rand(4, 2), torch.randn(1, 2, 5), torch.randn(4, 3)

    def step(points, u):
        centers = ops.gather(points, ops.fps(points, 4))
        dist2, _ = ops.knn(centers, points, 3)
        x = ops.causal_conv1d(u, w, None, "silu")
        scan = ops.selective_scan(x, u, A, B, B, delta_softplus=True)
        return ops.chamfer_distance(centers, points).sum() + dist2.sum() + scan.sum()

    expected = step(points, u)  # eager first: availability is known before tracing
    compiled = torch.compile(step, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(points, u), expected)


def _require_backend(op, name):
    reason = dispatch.unavailable_reason(op, name)
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_mamba_ssm_matches_reference_on_cuda(generator, dtype, tol):
    _require_backend("selective_scan", "mamba_ssm")
    Bb, E, N, L = 2, 64, 16, 100
    leaves = [
        torch.randn(Bb, E, L, generator=generator).to("cuda", dtype),
        (torch.rand(Bb, E, L, generator=generator) * 0.5).to("cuda", dtype),
        (-torch.rand(E, N, generator=generator) * 8).cuda(),
        torch.randn(Bb, 2, N, L, generator=generator).to("cuda", dtype),
        torch.randn(Bb, 2, N, L, generator=generator).to("cuda", dtype),
        torch.randn(E, generator=generator).cuda(),
        torch.randn(Bb, E, L, generator=generator).to("cuda", dtype),
        (torch.randn(E, generator=generator) * 0.1).cuda(),
    ]
    outs = {}
    for name in ("mamba_ssm", "reference"):
        args = [t.clone().requires_grad_() for t in leaves]
        out = ops.selective_scan(*args, True, backend=name)
        out.float().square().sum().backward()
        outs[name] = [out.float()] + [a.grad.float() for a in args]
    for got, want in zip(outs["mamba_ssm"], outs["reference"]):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item())


@pytest.mark.gpu
def test_causal_conv1d_library_matches_reference_on_cuda(generator):
    _require_backend("causal_conv1d", "causal_conv1d")
    x = torch.randn(2, 64, 50, generator=generator).cuda()
    weight = torch.randn(64, 4, generator=generator).cuda()
    bias = torch.randn(64, generator=generator).cuda()
    for activation in (None, "silu"):
        torch.testing.assert_close(
            ops.causal_conv1d(x, weight, bias, activation, backend="causal_conv1d"),
            ops.causal_conv1d(x, weight, bias, activation, backend="reference"),
        )


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["pytorch3d", "knn_cuda"])
def test_knn_libraries_match_reference_on_cuda(generator, name):
    _require_backend("knn", name)
    points = torch.rand(2, 1024, 3, generator=generator).cuda()
    query = points[:, :64]
    d_lib, i_lib = ops.knn(query, points, 32, backend=name)
    d_ref, _ = ops.knn(query, points, 32, backend="reference")
    torch.testing.assert_close(d_lib, d_ref)
    assert i_lib.dtype == torch.int64 and (i_lib[..., 0] == torch.arange(64).cuda()).all()


@pytest.mark.gpu
@pytest.mark.parametrize("norm", [1, 2])
def test_pytorch3d_chamfer_and_fps_match_reference_on_cuda(generator, norm):
    _require_backend("chamfer_distance", "pytorch3d")
    x = torch.rand(8, 64, 3, generator=generator).cuda()
    y = torch.rand(8, 48, 3, generator=generator).cuda()
    torch.testing.assert_close(
        ops.chamfer_distance(x, y, norm=norm, backend="pytorch3d"),
        ops.chamfer_distance(x, y, norm=norm, backend="reference"),
    )
    assert torch.equal(ops.fps(x, 16, backend="pytorch3d"), ops.fps(x, 16, backend="reference"))
