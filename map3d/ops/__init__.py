"""Accelerated ops behind one public function each; callers never choose an implementation.

Every op checks its inputs (cheap shape checks; fps/knn also reject NaN points, see
`set_nan_checks`), then runs the backend chosen by `map3d.ops.dispatch`: the `backend=`
argument, else the `MAP3D_BACKEND` environment variable, else the best one available for the
tensors' device and dtype. The pure-PyTorch "reference" backend runs everywhere.
`map3d backends` prints which backends are available here.

Shapes: B batch, N points, M queries, S samples, E inner channels, L sequence length.
"""

from __future__ import annotations

from numbers import Integral

import torch

from map3d.ops import dispatch
from map3d.ops.dispatch import BackendUnavailableError

__all__ = [
    "BackendUnavailableError",
    "bidirectional_selective_scan",
    "causal_conv1d",
    "chamfer_distance",
    "fps",
    "gather",
    "knn",
    "selective_scan",
    "set_nan_checks",
]

_check_nan = True


def set_nan_checks(enabled: bool) -> bool:
    """Turn the NaN checks of `fps` and `knn` on or off; returns the previous setting.

    Each check is one `torch.isnan(points).any()`, which waits for the device (a host sync) on
    CUDA. They are skipped automatically while `torch.compile` traces.
    """
    global _check_nan
    previous, _check_nan = _check_nan, bool(enabled)
    return previous


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _require_tensor(op: str, name: str, t, ndim: int, layout: str, floating: bool = True) -> None:
    if not (isinstance(t, torch.Tensor) and t.dim() == ndim):
        raise ValueError(f"{op}: {name} must be a {ndim}-D tensor {layout}, got shape {_shape(t)}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{op}: {name} must be floating point {layout}, got dtype {t.dtype}")


def _require_same_batch_and_dim(op: str, a_name: str, a, b_name: str, b) -> None:
    """Two point clouds (B,P,D), (B,Q,D) of one op must agree in B and D."""
    if not (a.shape[0] == b.shape[0] and a.shape[2] == b.shape[2]):
        raise ValueError(
            f"{op}: {a_name} {_shape(a)} and {b_name} {_shape(b)} must agree in batch size and "
            "point dimension"
        )


def _require_finite_points(op: str, name: str, t: torch.Tensor) -> None:
    if _check_nan and not torch.compiler.is_compiling() and torch.isnan(t).any():
        raise ValueError(f"{op}: {name} {_shape(t)} contains NaN")


def fps(
    points: torch.Tensor,
    num_samples: int,
    *,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Farthest point sampling: points (B,N,3) -> idx (B,S) int64, S = num_samples <= N.

    The first index is 0, or one random index per cloud drawn with `generator` if
    `random_start`; each next index is the point farthest from those already chosen.
    """
    _require_tensor("fps", "points", points, 3, "(B,N,3)")
    N = points.shape[1]
    if not (isinstance(num_samples, Integral) and 1 <= num_samples <= N):
        raise ValueError(
            f"fps: num_samples={num_samples!r} must be an int in [1, N={N}] "
            f"(points shape {_shape(points)})"
        )
    _require_finite_points("fps", "points", points)
    fn = dispatch.resolve(
        "fps", backend, points, num_samples=num_samples, random_start=random_start
    )
    return fn(points, int(num_samples), random_start=random_start, generator=generator)


def knn(
    query: torch.Tensor, points: torch.Tensor, k: int, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours: query (B,M,3), points (B,N,3) -> (dist2 (B,M,k), idx (B,M,k) int64).

    dist2: squared Euclidean distances, ascending along the last dim (differentiable);
    idx: indices into `points`. Ties are broken arbitrarily (backends may differ on ties).
    """
    _require_tensor("knn", "query", query, 3, "(B,M,3)")
    _require_tensor("knn", "points", points, 3, "(B,N,3)")
    _require_same_batch_and_dim("knn", "query", query, "points", points)
    N = points.shape[1]
    if not (isinstance(k, Integral) and 1 <= k <= N):
        raise ValueError(
            f"knn: k={k!r} must be an int in [1, N={N}] (points shape {_shape(points)})"
        )
    _require_finite_points("knn", "query", query)
    _require_finite_points("knn", "points", points)
    k = int(k)
    return dispatch.resolve("knn", backend, query, points, k=k)(query, points, k)


def gather(values: torch.Tensor, idx: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """values (B,N,C), idx (B,...) int64 -> (B,...,C) with out[b, i...] = values[b, idx[b, i...]].

    Differentiable with respect to `values`. Indices are not range-checked here (that would
    need a host sync); out-of-range indices fail inside the backend.
    """
    if not (isinstance(values, torch.Tensor) and values.dim() >= 2):
        raise ValueError(f"gather: values must be a tensor (B,N,C), got shape {_shape(values)}")
    if not (isinstance(idx, torch.Tensor) and idx.dim() >= 1 and idx.dtype == torch.int64):
        raise ValueError(
            f"gather: idx must be an int64 tensor (B,...), got shape {_shape(idx)} and dtype "
            f"{getattr(idx, 'dtype', None)}"
        )
    if not (idx.shape[0] == values.shape[0]):
        raise ValueError(
            f"gather: idx {_shape(idx)} and values {_shape(values)} must have the same batch size"
        )
    return dispatch.resolve("gather", backend, values, idx)(values, idx)


def chamfer_distance(
    x: torch.Tensor, y: torch.Tensor, *, norm: int = 2, backend: str | None = None
) -> torch.Tensor:
    """Chamfer distance per cloud: x (B,P,3), y (B,Q,3) -> (B,).

    norm=2 (Point-MAE's "cdl2"): mean_x min_y ||x - y||^2 + mean_y min_x ||x - y||^2.
    norm=1 (Point-MAE's "cdl1"): (mean_x min_y ||x - y|| + mean_y min_x ||x - y||) / 2, i.e.
    the same with Euclidean (not squared, not L1) distances, halved.
    """
    _require_tensor("chamfer_distance", "x", x, 3, "(B,P,3)")
    _require_tensor("chamfer_distance", "y", y, 3, "(B,Q,3)")
    _require_same_batch_and_dim("chamfer_distance", "x", x, "y", y)
    if not (x.shape[1] > 0 and y.shape[1] > 0):
        raise ValueError(
            f"chamfer_distance: x {_shape(x)} and y {_shape(y)} must have at least one point"
        )
    if norm not in (1, 2):
        raise ValueError(f"chamfer_distance: norm must be 1 or 2, got {norm!r}")
    fn = dispatch.resolve("chamfer_distance", backend, x, y, norm=norm)
    return fn(x, y, norm=norm)


def _require_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias) -> None:
    """The shape checks of one direction of a selective scan (ValueError naming `op`)."""
    _require_tensor(op, "u", u, 3, "(B,E,L)")
    batch, channels, length = u.shape
    if not (isinstance(delta, torch.Tensor) and delta.shape == u.shape):
        raise ValueError(f"{op}: delta must have u's shape {_shape(u)}, got {_shape(delta)}")
    _require_tensor(op, "A", A, 2, "(E,N)")
    if not (A.shape[0] == channels and not A.is_complex()):
        raise ValueError(
            f"{op}: A must be real (E={channels},N), got shape {_shape(A)} dtype {A.dtype}"
        )
    state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        ok = isinstance(t, torch.Tensor) and t.dim() in (3, 4) and not t.is_complex()
        ok = ok and t.shape[0] == batch and t.shape[-2:] == (state, length)
        ok = ok and (t.dim() == 3 or channels % t.shape[1] == 0)
        if not (ok):
            raise ValueError(
                f"{op}: {name} must be real (B={batch},N={state},L={length}) or (B,G,N,L) with "
                f"E={channels} divisible by G, got shape {_shape(t)}"
            )
    for name, t, shape in (
        ("D", D, (channels,)),
        ("delta_bias", delta_bias, (channels,)),
        ("z", z, tuple(u.shape)),
    ):
        if not (t is None or (isinstance(t, torch.Tensor) and tuple(t.shape) == shape)):
            raise ValueError(f"{op}: {name} must have shape {shape}, got {_shape(t)}")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    backend: str | None = None,
):
    """Mamba's selective scan, with the signature and semantics of mamba-ssm's
    `selective_scan_fn` (real-valued A).

    u, delta: (B,E,L); A: (E,N); B, C: (B,N,L), or (B,G,N,L) grouped (channel e uses group
    e // (E/G)); D, delta_bias: (E,); z: (B,E,L). With dt = delta (+ delta_bias)
    (softplus'ed if `delta_softplus`), per channel e and state n:
        h[t] = exp(dt[t] A[e,n]) h[t-1] + dt[t] B[n,t] u[t],  h[-1] = 0
        out[t] = (sum_n C[n,t] h[t] + D[e] u[t]) * silu(z[t])
    State in float32 (float64 for float64 inputs); returns out (B,E,L) in u's dtype, and
    (out, last_state (B,E,N)) if `return_last_state`. The reference back-propagates through
    last_state; mamba-ssm's kernel does not.
    """
    op = "selective_scan"
    _require_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias)
    fn = dispatch.resolve(
        op,
        backend,
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def bidirectional_selective_scan(
    u, delta, A, B, C, D, delta_bias, u_b, delta_b, A_b, B_b, C_b, D_b, delta_bias_b,
    z=None, delta_softplus=True, *, backend=None,
):  # fmt: skip
    """Both directions of a bidirectional (Vision-Mamba style) mixer: (B,E,L).

    out = selective_scan(u, delta, A, B, C, D, z, delta_bias)
          + flip(selective_scan(u_b, delta_b, A_b, B_b, C_b, D_b, flip(z), delta_bias_b))
    flip reverses the last (time) axis; the `_b` tensors are given in flipped order (computed
    from the flipped sequence), z in natural order; shapes as in `selective_scan`. Backends
    follow `selective_scan`'s (same names and selection; a `MAP3D_BACKEND` entry for
    `selective_scan` applies here too): the Triton backend runs both directions in two
    launches of one kernel with no flipped copies of z or of the output; any other backend
    runs two of its scans with flips.
    """
    op = "bidirectional_selective_scan"
    _require_scan_inputs(op, u, delta, A, B, C, D, z, delta_bias)
    _require_scan_inputs(op, u_b, delta_b, A_b, B_b, C_b, D_b, z, delta_bias_b)
    if u_b.shape != u.shape:
        raise ValueError(f"{op}: u_b must have u's shape {_shape(u)}, got {_shape(u_b)}")
    tensors = (u, delta, A, B, C, D, delta_bias, u_b, delta_b, A_b, B_b, C_b, D_b, delta_bias_b)
    fn = dispatch.resolve(op, backend, *tensors, z, delta_softplus=delta_softplus)
    return fn(*tensors, z, delta_softplus)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Depthwise causal conv1d (causal-conv1d's `causal_conv1d_fn`): x (B,E,L), weight (E,W),
    bias (E,) -> (B,E,L); out[t] depends on x[t-W+1..t]; activation None, "silu" or "swish"."""
    op = "causal_conv1d"
    _require_tensor(op, "x", x, 3, "(B,E,L)")
    _require_tensor(op, "weight", weight, 2, "(E,W)")
    if not (weight.shape[0] == x.shape[1]):
        raise ValueError(
            f"{op}: weight {_shape(weight)} must have E={x.shape[1]} rows (x shape {_shape(x)})"
        )
    if not (
        bias is None or (isinstance(bias, torch.Tensor) and tuple(bias.shape) == (x.shape[1],))
    ):
        raise ValueError(f"{op}: bias must have shape ({x.shape[1]},), got {_shape(bias)}")
    if not (activation in (None, "silu", "swish")):
        raise ValueError(f"{op}: activation must be None, 'silu' or 'swish', got {activation!r}")
    fn = dispatch.resolve(op, backend, x, weight, bias, activation=activation)
    return fn(x, weight, bias, activation)
