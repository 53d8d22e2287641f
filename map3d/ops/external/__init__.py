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
    return (
        _on_cuda(x, weight, bias)
        and x.dtype in _HALF_FLOAT
        and weight.dtype in _HALF_FLOAT
        and 2 <= weight.shape[1] <= 4
    )


def causal_conv1d_causal_conv1d(x, weight, bias=None, activation=None):
    """causal-conv1d's CUDA depthwise causal conv (widths 2 to 4)."""
    from causal_conv1d import causal_conv1d_fn

    return causal_conv1d_fn(x, weight, bias, activation=activation)


# --- pytorch3d -------------------------------------------------------------------------------


def _pytorch3d_available() -> str | None:
    try:
        from pytorch3d import _C  # noqa: F401  (the compiled extension)
        from pytorch3d.ops import knn_points, sample_farthest_points  # noqa: F401
    except Exception as error:  # noqa: BLE001
        return f"pytorch3d's compiled ops do not load ({_import_failure(error)})"
    return _cuda_missing()


def _pytorch3d_supports(*tensors, random_start: bool = False, **options) -> bool:
    return (
        not random_start  # pytorch3d draws its own start point, ignoring our generator
        and _on_cuda(*tensors)
        and all(t.dtype in (torch.float32, torch.float64) for t in tensors)
    )


def fps_pytorch3d(points, num_samples, *, random_start=False, generator=None):
    """pytorch3d's farthest point sampling (start index 0; random_start is not supported).
    Unlike the reference, it may repeat an index once all remaining points are duplicates
    of chosen ones."""
    from pytorch3d.ops import sample_farthest_points

    return sample_farthest_points(points, K=num_samples, random_start_point=False)[1]


def knn_pytorch3d(query, points, k):
    """pytorch3d's kNN: squared distances, sorted, differentiable, as the reference."""
    from pytorch3d.ops import knn_points

    nn = knn_points(query, points, K=k, return_nn=False, return_sorted=True)
    return nn.dists, nn.idx


def chamfer_distance_pytorch3d(x, y, *, norm=2):
    """Chamfer distance from pytorch3d's nearest-neighbour kernel, with map3d's definition.

    pytorch3d's own `chamfer_distance` means L1 (not Euclidean) distances for norm=1 and syncs
    with the host; so only its `knn_points` is used here, for both norms.
    """
    from pytorch3d.ops import knn_points

    d_xy = knn_points(x, y, K=1).dists[..., 0]  # (B,P) squared
    d_yx = knn_points(y, x, K=1).dists[..., 0]  # (B,Q)
    if norm == 2:
        return d_xy.mean(1) + d_yx.mean(1)
    return (safe_sqrt(d_xy).mean(1) + safe_sqrt(d_yx).mean(1)) / 2


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
    return _on_cuda(query, points) and query.dtype in _HALF_FLOAT


def knn_knn_cuda(query, points, k):
    """KNN_CUDA's brute-force kNN for the indices; squared distances are recomputed from the
    points (differentiable) and the k neighbours sorted ascending."""
    from knn_cuda import KNN

    _, idx = KNN(k=k, transpose_mode=True)(points, query)  # (ref, query) -> (B,M,k)
    idx = idx.long()
    dist2 = squared_distances_to(query, gather(points, idx))
    dist2, order = dist2.sort(dim=-1)
    return dist2, idx.gather(-1, order)


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
    ("fps", "pytorch3d", fps_pytorch3d, _pytorch3d_available, _pytorch3d_supports, 10),
    ("knn", "pytorch3d", knn_pytorch3d, _pytorch3d_available, _pytorch3d_supports, 15),
    (
        "chamfer_distance",
        "pytorch3d",
        chamfer_distance_pytorch3d,
        _pytorch3d_available,
        _pytorch3d_supports,
        10,
    ),
    ("knn", "knn_cuda", knn_knn_cuda, _knn_cuda_available, _knn_cuda_supports, 10),
]

for _op, _name, _fn, _available, _supports, _priority in _BACKENDS:
    dispatch.register(_op, _name, _fn, _available, _supports, _priority)
