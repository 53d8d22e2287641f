"""Triton kNN / Chamfer neighbour selection and causal conv1d vs the reference."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _triton():
    pytest.importorskip("triton")
    from map3d.ops import triton as tri

    return tri


@pytest.mark.parametrize(
    "B,M,N,k", [(16, 64, 1024, 32), (4, 37, 1000, 5), (8, 26, 26, 4), (2, 128, 8192, 16)]
)
def test_knn_matches_reference(B, M, N, k):
    _triton()
    from map3d.ops.reference.geometry import knn as reference
    from map3d.ops.triton.geometry import knn

    g = torch.Generator("cuda").manual_seed(N + k)
    points = torch.randn(B, N, 3, device="cuda", generator=g)
    query = torch.randn(B, M, 3, device="cuda", generator=g)
    d, i = knn(query, points, k)
    d_ref, i_ref = reference(query, points, k)
    assert i.dtype == torch.int64 and i.shape == (B, M, k)
    torch.testing.assert_close(d, d_ref, rtol=1e-6, atol=1e-7)
    assert torch.equal(i.sort(-1).values, i_ref.sort(-1).values)


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chamfer_matches_reference_with_grads(norm, dtype):
    _triton()
    from map3d.ops.reference.geometry import chamfer_distance as reference
    from map3d.ops.triton.geometry import chamfer_distance

    g = torch.Generator("cuda").manual_seed(norm)
    x = torch.randn(300, 32, 3, device="cuda", generator=g).to(dtype).requires_grad_(True)
    y = torch.randn(300, 29, 3, device="cuda", generator=g).to(dtype).requires_grad_(True)
    out = chamfer_distance(x, y, norm=norm)
    gx, gy = torch.autograd.grad(out.sum(), (x, y))
    ref = reference(x, y, norm=norm)
    rx, ry = torch.autograd.grad(ref.sum(), (x, y))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gy, ry)


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("L", [1, 26, 64, 200])
@pytest.mark.parametrize("layout", ["mixer", "contiguous"])
def test_causal_conv1d_matches_reference(activation, dtype, L, layout):
    _triton()
    from map3d.ops.reference.scan import causal_conv1d as reference
    from map3d.ops.triton.conv import causal_conv1d

    g = torch.Generator("cuda").manual_seed(L)
    B, E, W = 3, 80, 4
    xz = torch.randn(B, L, 2 * E, device="cuda", generator=g).to(dtype)
    x = xz[..., :E].transpose(1, 2)  # a mixer's strided layout
    x = (x if layout == "mixer" else x.contiguous()).detach().requires_grad_(True)
    weight = torch.randn(E, W, device="cuda", generator=g).requires_grad_(True)
    bias = torch.randn(E, device="cuda", generator=g).requires_grad_(True)
    dout = torch.randn(B, E, L, device="cuda", generator=g).to(dtype)
    out = causal_conv1d(x, weight, bias, activation)
    grads = torch.autograd.grad(out, (x, weight, bias), dout)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, weight, bias))
    ref = reference(x64, w64, b64, activation)
    ref_grads = torch.autograd.grad(ref, (x64, w64, b64), dout.double())
    assert out.dtype == dtype and out.shape == (B, E, L)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for a, b in [(out, ref), *zip(grads, ref_grads)]:
        rel = ((a.double() - b).norm() / b.norm()).item()
        assert rel < tol, rel
    assert grads[0].dtype == dtype and grads[1].dtype == torch.float32
    if L > 1:  # out and dx keep x's layout: channels-last (B,L,E) memory for a mixer
        assert (out.stride(1) == 1) == (layout == "mixer") == (grads[0].stride(1) == 1)
