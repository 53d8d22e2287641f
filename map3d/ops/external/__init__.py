"""Thin adapters to optional compiled libraries, registered as backends of `map3d.ops`.

Nothing optional is imported here at module level: each library is imported inside its
availability check (once, cached by `map3d.ops.dispatch`) and inside its adapter. Every adapter
takes the public op's arguments and returns exactly what the reference returns (same
semantics, shapes and dtypes), converting where the library differs.

| backend         | ops                         | library entry points                                 |
|-----------------|-----------------------------|------------------------------------------------------|
| `mamba_ssm`     | selective_scan              | `mamba_ssm.ops.selective_scan_interface.selective_scan_fn` (+ `selective_scan_cuda`) |
| `causal_conv1d` | causal_conv1d               | `causal_conv1d.causal_conv1d_fn` (+ `causal_conv1d_cuda`) |
| `pytorch3d`     | fps, knn, chamfer_distance  | `pytorch3d.ops.sample_farthest_points`, `pytorch3d.ops.knn_points` |
| `knn_cuda`      | knn                         | `knn_cuda.KNN`                                       |
"""

from __future__ import annotations

import functools

import torch

from map3d.ops import dispatch
from map3d.ops.reference.geometry import gather, safe_sqrt, squared_distances_to

_HALF_FLOAT = (torch.float32, torch.float16, torch.bfloat16)


def _import_failure(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _cuda_missing() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA device"


def _on_cuda(*tensors) -> bool:
    return all(t.is_cuda for t in tensors if t is not None)


# --- mamba-ssm -------------------------------------------------------------------------------


def _mamba_ssm_available() -> str | None:
    try:  # the compiled extension must load, not only the Python package
        import selective_scan_cuda  # noqa: F401
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception as error:  # noqa: BLE001 - ImportError, OSError (ABI), CUDA init errors
        return f"mamba_ssm's compiled selective scan does not load ({_import_failure(error)})"
    return _cuda_missing()


@functools.cache
def _selective_scan_fn():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn


def _mamba_ssm_supports(u, delta, A, B, C, D, z, delta_bias, **options) -> bool:
    return (
        _on_cuda(u, delta, A, B, C, D, z, delta_bias)
        and u.dtype in _HALF_FLOAT
        and A.shape[1] <= 256
    )


def selective_scan_mamba_ssm(
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
    """mamba-ssm's CUDA selective scan. Its kernel wants delta, B, C, z in u's dtype and A, D,
    delta_bias in float32; casts are inserted (they are differentiable). Note: mamba-ssm does
    not back-propagate through `last_state` (the reference does)."""
    dtype, f32 = u.dtype, torch.float32
    return _selective_scan_fn()(
        u,
        delta.to(dtype),
        A.to(f32),
        B.to(dtype),
        C.to(dtype),
        None if D is None else D.to(f32),
        None if z is None else z.to(dtype),
        None if delta_bias is None else delta_bias.to(f32),
        delta_softplus,
        return_last_state,
    )


# --- causal-conv1d ---------------------------------------------------------------------------


def _causal_conv1d_available() -> str | None:
    try:
        import causal_conv1d_cuda  # noqa: F401
        from causal_conv1d import causal_conv1d_fn  # noqa: F401
    except Exception as error:  # noqa: BLE001
        return f"causal_conv1d's compiled kernel does not load ({_import_failure(error)})"
    return _cuda_missing()


def _causal_conv1d_supports(x, weight, bias, **options) -> bool:
    """causal-conv1d 1.7 takes widths 2 to 4 and fp32/fp16/bf16 x and weight (each of its own
    dtype; it computes in float32), but a bias only of the weight's dtype (its kernel checks)."""
    return (
        _on_cuda(x, weight, bias)
        and x.dtype in _HALF_FLOAT
        and weight.dtype in _HALF_FLOAT
        and (bias is None or bias.dtype == weight.dtype)
        and 2 <= weight.shape[1] <= 4
    )


def _conv_layout_ok(x) -> bool:
    """causal-conv1d runs x (B,E,L) either with unit stride along L, or channel-last (unit
    stride along E) when E and the strides of B and L are multiples of 8; it makes other
    layouts contiguous itself, but refuses a channel-last x without that alignment."""
    channel_last = x.stride(1) == 1 and x.stride(2) > 1
    return not channel_last or (
        x.shape[1] % 8 == 0 and x.stride(0) % 8 == 0 and x.stride(2) % 8 == 0
    )


def causal_conv1d_causal_conv1d(x, weight, bias=None, activation=None):
    """causal-conv1d's CUDA depthwise causal conv (widths 2 to 4). A channel-last x that its
    kernel would refuse (E or strides not multiples of 8) is made contiguous first."""
    from causal_conv1d import causal_conv1d_fn

    if not _conv_layout_ok(x):
        x = x.contiguous()
    return causal_conv1d_fn(x, weight, bias, activation=activation)


# --- pytorch3d -------------------------------------------------------------------------------


def _pytorch3d_available() -> str | None:
    try:
        from pytorch3d import _C  # noqa: F401  (the compiled extension)
        from pytorch3d.ops import knn_points, sample_farthest_points  # noqa: F401
    except Exception as error:  # noqa: BLE001
        return f"pytorch3d's compiled ops do not load ({_import_failure(error)})"
    return _cuda_missing()


# pytorch3d's CUDA kernels index with 32-bit ints (knn: batch * queries * k outputs and
# batch * points * dim inputs), so larger problems are left to other backends.
_INT32 = 2**31


def _float_not_double(*tensors) -> bool:
    return all(t.dtype in _HALF_FLOAT for t in tensors)


def _not_capturing() -> bool:
    """pytorch3d 0.7.9's ops read values back to the host (knn_points checks `lengths.min() <
    K`, sample_farthest_points sizes its output from `K.max()`), which a CUDA-graph capture
    forbids: while one is being captured, dispatch passes them over."""
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def _pytorch3d_fps_supports(points, random_start: bool = False, **options) -> bool:
    """pytorch3d 0.7.9's FPS computes in float32 (as the reference does for fp16/bf16/fp32),
    starts at index 0 unless it draws its own random start (ignoring our generator), and
    launches too few blocks for clouds under 8 points (its 2- and 4-thread cases use the thread
    count as the grid size), leaving some clouds unsampled."""
    return (
        not random_start
        and _on_cuda(points)
        and _float_not_double(points)
        and points.shape[1] >= 8
        and _not_capturing()
    )


def _pytorch3d_knn_supports(query, points, k: int = 1, **options) -> bool:
    """float64 is left out: pytorch3d's knn backward casts to float32 (once_differentiable)."""
    return (
        _on_cuda(query, points)
        and _float_not_double(query, points)
        and query.shape[0] * query.shape[1] * k < _INT32
        and points.numel() < _INT32
        and query.numel() < _INT32
        and _not_capturing()
    )


def _pytorch3d_chamfer_supports(x, y, **options) -> bool:
    return _pytorch3d_knn_supports(x, y, k=1) and _pytorch3d_knn_supports(y, x, k=1)


def fps_pytorch3d(points, num_samples, *, random_start=False, generator=None):
    """pytorch3d's farthest point sampling (start index 0; random_start is not supported).

    Unlike the reference it does not exclude chosen points: once every remaining point
    duplicates a chosen one (a cloud with fewer distinct points than `num_samples`), it picks
    an already chosen index again. That cannot be checked without a host sync, so this backend
    ranks below the reference and runs only when asked for by name.
    """
    from pytorch3d.ops import sample_farthest_points

    return sample_farthest_points(points, K=int(num_samples), random_start_point=False)[1]


def knn_pytorch3d(query, points, k):
    """pytorch3d's kNN (squared distances, sorted, differentiable), computed in float32 like
    the reference for fp16/bf16/fp32 inputs (pytorch3d's kernels take float and double only,
    the same dtype for both clouds); distances are returned in `points`' dtype."""
    from pytorch3d.ops import knn_points

    f32 = torch.float32
    nn = knn_points(query.to(f32), points.to(f32), K=k, return_nn=False, return_sorted=True)
    return nn.dists.to(points.dtype), nn.idx


def chamfer_distance_pytorch3d(x, y, *, norm=2):
    """Chamfer distance from pytorch3d's nearest-neighbour kernel, with map3d's definition.

    pytorch3d's own `chamfer_distance` means L1 (not Euclidean) distances for norm=1 and syncs
    with the host; so only its `knn_points` is used here, for both norms, in float32.
    """
    from pytorch3d.ops import knn_points

    dtype = torch.promote_types(x.dtype, y.dtype)
    xs, ys = x.float(), y.float()
    d_xy = knn_points(xs, ys, K=1).dists[..., 0]  # (B,P) squared
    d_yx = knn_points(ys, xs, K=1).dists[..., 0]  # (B,Q)
    if norm == 2:
        out = d_xy.mean(1) + d_yx.mean(1)
    else:
        out = (safe_sqrt(d_xy).mean(1) + safe_sqrt(d_yx).mean(1)) / 2
    return out.to(dtype)


# --- KNN_CUDA --------------------------------------------------------------------------------


def _knn_cuda_available() -> str | None:
    if not torch.cuda.is_available():  # knn_cuda asserts CUDA at import time
        return "no CUDA device"
    try:  # first import compiles the extension (may take minutes)
        from knn_cuda import KNN  # noqa: F401
    except Exception as error:  # noqa: BLE001
        return f"knn_cuda does not load ({_import_failure(error)})"
    return None


def _knn_cuda_supports(query, points, **options) -> bool:
    """KNN_CUDA 0.2 computes in float32 (float64 is left out: its neighbour choice would be
    float32's); its full (N, M) distance matrix is indexed with 32-bit ints, and N / 16 is a
    grid dimension (at most 65535)."""
    return (
        _on_cuda(query, points)
        and _float_not_double(query, points)
        and query.shape[1] * points.shape[1] < _INT32
        and points.shape[1] <= 65535 * 16
    )


def knn_knn_cuda(query, points, k):
    """KNN_CUDA's brute-force kNN for the indices. Its `KNN(k, transpose_mode=True)(ref,
    query)` returns Euclidean (not squared) distances and int64 indices, (B,M,k), ascending,
    without gradients; so the squared distances are recomputed from the points as the
    reference does (float32, differentiable) and sorted, and returned in `points`' dtype."""
    from knn_cuda import KNN

    _, idx = KNN(k=k, transpose_mode=True)(points, query)  # (ref, query) -> (B,M,k)
    idx = idx.long()
    f32 = torch.float32
    dist2 = squared_distances_to(query.to(f32), gather(points.to(f32), idx))
    dist2, order = dist2.sort(dim=-1)
    return dist2.to(points.dtype), idx.gather(-1, order)


# --- registration ----------------------------------------------------------------------------

_BACKENDS = [
    (
        "selective_scan",
        "mamba_ssm",
        selective_scan_mamba_ssm,
        _mamba_ssm_available,
        _mamba_ssm_supports,
        20,
    ),
    (
        "causal_conv1d",
        "causal_conv1d",
        causal_conv1d_causal_conv1d,
        _causal_conv1d_available,
        _causal_conv1d_supports,
        20,
    ),
    # below the reference (0): by name only, see fps_pytorch3d
    ("fps", "pytorch3d", fps_pytorch3d, _pytorch3d_available, _pytorch3d_fps_supports, -1),
    ("knn", "pytorch3d", knn_pytorch3d, _pytorch3d_available, _pytorch3d_knn_supports, 15),
    (
        "chamfer_distance",
        "pytorch3d",
        chamfer_distance_pytorch3d,
        _pytorch3d_available,
        _pytorch3d_chamfer_supports,
        10,
    ),
    ("knn", "knn_cuda", knn_knn_cuda, _knn_cuda_available, _knn_cuda_supports, 10),
]

for _op, _name, _fn, _available, _supports, _priority in _BACKENDS:
    dispatch.register(_op, _name, _fn, _available, _supports, _priority)
