"""The adapters to causal-conv1d, pytorch3d and KNN_CUDA, on CPU against fake libraries that
reproduce what the real ones do (causal-conv1d 1.7.0, pytorch3d 0.7.9, KNN_CUDA 0.2): their
layouts, dtypes, distance conventions and refusals, as read in their sources. The real
libraries run in the GPU tests of tests/ops/test_dispatch.py."""

import sys
import types
from collections import namedtuple

import pytest
import torch

from map3d.ops import dispatch, reference
from map3d.ops import external as ext

HALF_AND_FLOAT = [torch.float32, torch.float16, torch.bfloat16]


def fake_module(monkeypatch, name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


@pytest.fixture
def cuda_tensors(monkeypatch):
    """Let the adapters' `supports` take CPU tensors for CUDA ones."""
    monkeypatch.setattr(ext, "_on_cuda", lambda *tensors: True)


# --- KNN_CUDA 0.2 ------------------------------------------------------------------------------


class FakeKNN:
    """knn_cuda.KNN: per cloud, (dim, n) float32 matrices; the k smallest of the full distance
    matrix by insertion sort, square-rooted (Euclidean), 0-based int64 indices, (k, M), then
    transposed back to (M, k) in transpose_mode; no gradients."""

    def __init__(self, k, transpose_mode=False):
        self.k, self.t = k, transpose_mode

    def __call__(self, ref, query):
        assert ref.size(0) == query.size(0)
        with torch.no_grad():
            dists, idxs = [], []
            for b in range(ref.size(0)):
                r, q = ref[b], query[b]
                if self.t:
                    r, q = r.transpose(0, 1).contiguous(), q.transpose(0, 1).contiguous()
                r, q = r.float(), q.float()
                dist = (r[:, :, None] - q[:, None, :]).square().sum(0)  # (ref_nb, query_nb)
                d, i = dist.sort(dim=0)
                d, i = d[: self.k].sqrt(), i[: self.k]
                if self.t:
                    d, i = d.transpose(0, 1).contiguous(), i.transpose(0, 1).contiguous()
                dists.append(d)
                idxs.append(i)
            return torch.stack(dists), torch.stack(idxs)


@pytest.mark.parametrize("dtype", HALF_AND_FLOAT)
def test_knn_cuda_adapter_gives_the_references_squared_distances(monkeypatch, generator, dtype):
    fake_module(monkeypatch, "knn_cuda", KNN=FakeKNN)
    points = torch.rand(2, 40, 3, generator=generator).to(dtype)
    query = points[:, :7].clone()
    leaves = {}
    for name, fn in (("knn_cuda", ext.knn_knn_cuda), ("reference", reference.knn)):
        q, p = query.clone().requires_grad_(), points.clone().requires_grad_()
        dist2, idx = fn(q, p, 5)
        (dist2.float() * torch.linspace(1, 2, 5)).sum().backward()
        leaves[name] = (dist2, idx, q.grad, p.grad)
    got, want = leaves["knn_cuda"], leaves["reference"]
    assert got[0].dtype == dtype and got[1].dtype == torch.int64
    assert got[1].shape == (2, 7, 5) and torch.equal(got[1][..., 0], torch.arange(7).expand(2, 7))
    for a, b in zip(got[:1] + got[2:], want[:1] + want[2:]):
        torch.testing.assert_close(a, b)


def test_knn_cuda_supports(cuda_tensors):
    cloud = torch.zeros(1, 16, 3)
    assert ext._knn_cuda_supports(cloud, cloud)
    assert ext._knn_cuda_supports(cloud.half(), cloud.bfloat16())
    assert not ext._knn_cuda_supports(cloud.double(), cloud.double())  # picks in float32
    big = torch.zeros(1, 65535 * 16 + 1, 3).expand(1, -1, -1)
    assert not ext._knn_cuda_supports(cloud, big)  # its grid's second dimension


# --- pytorch3d 0.7.9 ---------------------------------------------------------------------------


def fake_sample_farthest_points(points, lengths=None, K=50, random_start_point=False):
    """pytorch3d.ops.sample_farthest_points: float32, start 0, distances initialised to 1e10;
    each step takes the first point of largest distance to the chosen set, chosen points
    included (their distance is 0, so they can be picked again)."""
    assert lengths is None and isinstance(K, int) and not random_start_point
    points = points.float()
    N, P, _ = points.shape
    idx = torch.full((N, K), -1, dtype=torch.int64)
    for n in range(N):
        min_dist = torch.full((P,), 1e10)
        selected = 0
        idx[n, 0] = selected
        for k in range(1, min(K, P)):
            dist2 = (points[n, selected] - points[n]).square().sum(-1)
            min_dist = torch.minimum(dist2, min_dist)
            selected = int(min_dist.argmax())
            idx[n, k] = selected
    return reference.gather(points, idx.clamp(min=0)), idx


KNN = namedtuple("KNN", "dists idx knn")


def fake_knn_points(
    p1,
    p2,
    lengths1=None,
    lengths2=None,
    norm=2,
    K=1,
    version=-1,
    return_nn=False,
    return_sorted=True,
):
    """pytorch3d.ops.knn_points: float and double only, both clouds of one dtype (its kernel
    dispatch and checks), squared distances ascending, int64 indices, differentiable."""
    if p1.dtype != p2.dtype or p1.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(
            f"knn_points: expected float or double of one type, got {p1.dtype}, {p2.dtype}"
        )
    with torch.no_grad():
        idx = torch.cdist(p1, p2).topk(K, dim=-1, largest=False, sorted=True).indices
    dists = (p1.unsqueeze(2) - reference.gather(p2, idx)).square().sum(-1)
    return KNN(dists, idx, None)


@pytest.fixture
def fake_pytorch3d(monkeypatch):
    fake_module(monkeypatch, "pytorch3d")
    fake_module(
        monkeypatch,
        "pytorch3d.ops",
        knn_points=fake_knn_points,
        sample_farthest_points=fake_sample_farthest_points,
    )


@pytest.mark.parametrize("dtype", HALF_AND_FLOAT)
def test_pytorch3d_knn_and_chamfer_compute_in_float32_like_the_reference(
    fake_pytorch3d, generator, dtype
):
    x = torch.rand(2, 9, 3, generator=generator).to(dtype)
    y = torch.rand(2, 7, 3, generator=generator).to(dtype)
    for norm in (1, 2):
        got = ext.chamfer_distance_pytorch3d(x, y, norm=norm)
        assert got.dtype == dtype
        torch.testing.assert_close(got, reference.chamfer_distance(x, y, norm=norm))
    dist2, idx = ext.knn_pytorch3d(x, y, 3)
    ref_dist2, ref_idx = reference.knn(x, y, 3)
    assert dist2.dtype == dtype and idx.dtype == torch.int64 and torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist2, ref_dist2)


@pytest.mark.parametrize("dtype", HALF_AND_FLOAT)
def test_pytorch3d_fps_matches_reference_on_distinct_points(fake_pytorch3d, generator, dtype):
    x = torch.rand(3, 50, 3, generator=generator).to(dtype)
    assert torch.equal(ext.fps_pytorch3d(x, 12), reference.fps(x, 12))


def test_pytorch3d_fps_repeats_indices_so_it_runs_only_by_name(fake_pytorch3d):
    cloud = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]).repeat(4, 1)[None]  # 3 distinct
    got, want = ext.fps_pytorch3d(cloud, 5), reference.fps(cloud, 5)
    assert len(set(want[0].tolist())) == 5 and len(set(got[0].tolist())) < 5
    dispatch._load_backends()
    backends = dispatch._REGISTRY["fps"]
    assert backends["pytorch3d"].priority < backends["reference"].priority


def test_pytorch3d_supports(cuda_tensors):
    cloud = torch.zeros(2, 8, 3)
    assert ext._pytorch3d_fps_supports(cloud, num_samples=4)
    assert ext._pytorch3d_fps_supports(cloud.bfloat16(), num_samples=4)
    assert not ext._pytorch3d_fps_supports(cloud, num_samples=4, random_start=True)
    assert not ext._pytorch3d_fps_supports(cloud[:, :7], num_samples=4)  # its launch bug
    assert not ext._pytorch3d_fps_supports(cloud.double(), num_samples=4)  # float32 inside
    assert ext._pytorch3d_knn_supports(cloud, cloud, k=4)
    assert ext._pytorch3d_knn_supports(cloud.half(), cloud, k=4)
    assert not ext._pytorch3d_knn_supports(cloud.double(), cloud.double(), k=4)
    many = torch.zeros(1, 1, 3).expand(2**16, 2**10, 3)
    assert not ext._pytorch3d_knn_supports(many, cloud, k=32)  # 32-bit output offsets
    assert ext._pytorch3d_chamfer_supports(cloud, cloud[:, :5])
    assert not ext._pytorch3d_chamfer_supports(cloud, cloud.double())


def test_pytorch3d_is_passed_over_while_a_cuda_graph_is_captured(cuda_tensors, monkeypatch):
    """Its ops read values back to the host, which a capture forbids; knn_cuda launches only."""
    cloud = torch.rand(2, 16, 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert not ext._pytorch3d_fps_supports(cloud, num_samples=4)
    assert not ext._pytorch3d_knn_supports(cloud, cloud, k=4)
    assert not ext._pytorch3d_chamfer_supports(cloud, cloud)
    assert ext._knn_cuda_supports(cloud, cloud)


# --- causal-conv1d 1.7.0 ------------------------------------------------------------------------


def fake_causal_conv1d_fn(
    x,
    weight,
    bias=None,
    seq_idx=None,
    initial_states=None,
    return_final_states=False,
    final_states_out=None,
    activation=None,
):
    """causal_conv1d.causal_conv1d_fn: copies x only when neither E nor L has unit stride; its
    kernel checks dtypes, widths 2-4, a bias of the weight's dtype, and for channel-last x that
    E and the strides of B and L are multiples of 8; computes in float32, returns x's dtype."""
    if x.stride(2) != 1 and x.stride(1) != 1:
        x = x.contiguous()
    kinds = (torch.float32, torch.float16, torch.bfloat16)
    if x.dtype not in kinds or weight.dtype not in kinds:
        raise RuntimeError("causal_conv1d: dtype")
    if bias is not None and bias.dtype != weight.dtype:
        raise RuntimeError("causal_conv1d: bias.scalar_type() == weight_type")
    if x.stride(1) == 1 and x.stride(2) > 1:
        if x.shape[1] % 8 != 0:
            raise RuntimeError("causal_conv1d only supports channel dimension divisible by 8")
        if x.stride(2) % 8 != 0 or x.stride(0) % 8 != 0:
            raise RuntimeError("causal_conv1d with channel last layout requires strides ...")
    if not 2 <= weight.shape[1] <= 4:
        raise RuntimeError("causal_conv1d only supports width between 2 and 4")
    out = reference.causal_conv1d(
        x.float(), weight.float(), None if bias is None else bias.float(), activation
    )
    fake_causal_conv1d_fn.layouts.append(x.stride())
    return out.to(x.dtype)


@pytest.fixture
def fake_causal_conv1d(monkeypatch):
    fake_causal_conv1d_fn.layouts = []
    fake_module(monkeypatch, "causal_conv1d", causal_conv1d_fn=fake_causal_conv1d_fn)
    return fake_causal_conv1d_fn.layouts


@pytest.mark.parametrize("channels, copied", [(6, True), (16, False)])
def test_causal_conv1d_adapter_takes_channel_last_inputs(
    fake_causal_conv1d, generator, channels, copied
):
    x = torch.randn(2, 10, channels, generator=generator).transpose(1, 2)  # (B,E,L), E stride 1
    weight = torch.randn(channels, 4, generator=generator)
    bias = torch.randn(channels, generator=generator)
    got = ext.causal_conv1d_causal_conv1d(x, weight, bias, "silu")
    torch.testing.assert_close(got, reference.causal_conv1d(x, weight, bias, "silu"))
    assert (fake_causal_conv1d[-1][1] != 1) == copied  # aligned channel-last is passed as is


@pytest.mark.parametrize(
    "x_dtype, w_dtype", [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)]
)
def test_causal_conv1d_adapter_mixed_dtypes_match_reference(
    fake_causal_conv1d, generator, x_dtype, w_dtype
):
    x = torch.randn(2, 8, 12, generator=generator).to(x_dtype)
    weight = torch.randn(8, 3, generator=generator).to(w_dtype)
    bias = torch.randn(8, generator=generator).to(w_dtype)
    got = ext.causal_conv1d_causal_conv1d(x, weight, bias, None)
    assert got.dtype == x_dtype
    torch.testing.assert_close(got, reference.causal_conv1d(x, weight, bias, None))


def test_causal_conv1d_supports(cuda_tensors):
    x, w = torch.zeros(1, 8, 5), torch.zeros(8, 4)
    assert ext._causal_conv1d_supports(x, w, torch.zeros(8))
    assert ext._causal_conv1d_supports(x.bfloat16(), w, None)
    assert not ext._causal_conv1d_supports(x, w.bfloat16(), torch.zeros(8))  # bias dtype
    assert not ext._causal_conv1d_supports(x, torch.zeros(8, 1), None)
    assert not ext._causal_conv1d_supports(x, torch.zeros(8, 5), None)
    assert not ext._causal_conv1d_supports(x.double(), w.double(), None)


# --- the real libraries, where built -----------------------------------------------------------


def _require_backend(op, name):
    reason = dispatch.unavailable_reason(op, name)
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")


def _forward_backward(fn, *leaves):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in leaves]
    out = fn(*leaves)
    out = out[0] if isinstance(out, tuple) else out
    weights = torch.linspace(0.5, 1.5, out.numel(), device=out.device).view_as(out)
    (out.float() * weights).sum().backward()
    return [out.float()] + [t.grad.float() for t in leaves if t is not None]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels", [64, 12])
def test_causal_conv1d_library_layouts_and_gradients(generator, dtype, channels):
    from map3d import ops

    _require_backend("causal_conv1d", "causal_conv1d")
    x = torch.randn(2, 50, channels, generator=generator).to("cuda", dtype).transpose(1, 2)
    weight = torch.randn(channels, 4, generator=generator).to("cuda", dtype)
    bias = torch.randn(channels, generator=generator).to("cuda", dtype)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for width in (2, 3, 4):
        got, want = (
            _forward_backward(
                lambda *a, name=name: ops.causal_conv1d(*a, "silu", backend=name),
                x,
                weight[:, :width],
                bias,
            )
            for name in ("causal_conv1d", "reference")
        )
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max().item())


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["pytorch3d", "knn_cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_knn_libraries_dtypes_and_gradients(generator, name, dtype):
    from map3d import ops

    _require_backend("knn", name)
    points = torch.rand(3, 700, 3, generator=generator).to("cuda", dtype)
    query = points[:, :50]
    got, want = (
        _forward_backward(lambda q, p, b=b: ops.knn(q, p, 16, backend=b), query, points)
        for b in (name, "reference")
    )
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())
    _, idx = ops.knn(query, points, 16, backend=name)
    assert idx.dtype == torch.int64 and idx.shape == (3, 50, 16)


@pytest.mark.gpu
def test_pytorch3d_fps_small_clouds_and_duplicates(generator):
    from map3d import ops

    _require_backend("fps", "pytorch3d")
    cloud = torch.rand(16, 8, 3, generator=generator).cuda()  # the smallest it takes
    assert torch.equal(
        ops.fps(cloud, 8, backend="pytorch3d"), ops.fps(cloud, 8, backend="reference")
    )
    assert dispatch.resolve("fps", None, cloud, num_samples=4, random_start=False) is not (
        ext.fps_pytorch3d
    )  # by name only: with fewer distinct points than samples it repeats an index
    corners = torch.eye(3).repeat(1, 4, 1).cuda()  # 12 points, 3 distinct
    assert len(set(ops.fps(corners, 5, backend="pytorch3d")[0].tolist())) < 5
    assert len(set(ops.fps(corners, 5, backend="reference")[0].tolist())) == 5
    with pytest.raises(dispatch.BackendUnavailableError):
        ops.fps(cloud[:, :7], 4, backend="pytorch3d")
