"""map3d's own GPU kernels in Triton: selective scan (forward and backward), FPS, neighbour
selection for kNN and Chamfer distance, depthwise causal conv1d.

Importing this package registers the `triton` backend of `selective_scan`, `fps`, `knn`,
`chamfer_distance` and `causal_conv1d` with `map3d.ops.dispatch`; it is available when Triton
imports and a CUDA device is present. Priorities follow the H100 measurements in
benchmarks/RESULTS.md: the default for fps, knn, chamfer_distance and (unless mamba-ssm's
compiled scan is installed) selective_scan; causal_conv1d only when asked for by name. Triton
itself is imported only inside functions, so this package imports on any machine.

`bidirectional_selective_scan` is the entry point for bidirectional (Vision-Mamba style) mixers:
both directions in two launches of one kernel without flipped copies of z or of the output,
with a portable fallback (flips around `map3d.ops.selective_scan`) elsewhere.
"""

from __future__ import annotations

import functools

import torch

from map3d.ops import dispatch
from map3d.ops.triton import conv as _conv
from map3d.ops.triton import fps as _fps
from map3d.ops.triton import geometry as _geometry
from map3d.ops.triton import selective_scan as _scan

PRIORITY = 30  # above the compiled-extension adapters (10-20)
# The scan ranks below mamba-ssm's compiled kernel (20), measured faster at L >= 128 on an H100
# (benchmarks/RESULTS.md): Triton is the default wherever mamba-ssm is not built.
SCAN_PRIORITY = 15
# The causal conv1d kernel measured no faster than cuDNN's depthwise conv inside the training
# step (~2.5 ms/step either way on an H100): available by name (MAP3D_BACKEND=
# causal_conv1d=triton), below the reference in automatic selection.
CONV_PRIORITY = -1


@functools.cache
def triton_unavailable_reason() -> str | None:
    """None if Triton kernels can run here, else why not."""
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return f"triton is not importable ({error})"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def bidirectional_selective_scan(
    u, delta, A, B, C, D, delta_bias, u_b, delta_b, A_b, B_b, C_b, D_b, delta_bias_b,
    z=None, delta_softplus=True, *, backend=None,
):
    """Sum of a forward scan and of a scan of the time-flipped sequence: (B,E,L).

    out = selective_scan(u, delta, A, B, C, D, z, delta_bias)
          + flip(selective_scan(u_b, delta_b, A_b, B_b, C_b, D_b, flip(z), delta_bias_b))
    flip reverses the last (time) axis; the `_b` tensors are given in flipped order (computed
    from the flipped sequence), z in natural order. With the Triton backend this is two
    launches of one kernel and no flipped copies; otherwise `map3d.ops.selective_scan` with
    flips (the same `backend` selection rules).
    """
    from map3d import ops

    chosen = dispatch.resolve(
        "selective_scan", backend, u, delta, A, B, C, D, z, delta_bias,
        delta_softplus=delta_softplus, return_last_state=False,
    )
    if chosen is _scan.selective_scan and _scan.supports(u_b, delta_b, A_b, B_b, C_b, D_b):
        return _scan.bidirectional_selective_scan_triton(
            u, delta, A, B, C, D, delta_bias, u_b, delta_b, A_b, B_b, C_b, D_b, delta_bias_b,
            z=z, delta_softplus=delta_softplus,
        )
    out = ops.selective_scan(
        u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        backend=backend,
    )
    out_b = ops.selective_scan(
        u_b, delta_b, A_b, B_b, C_b, D_b, z=None if z is None else z.flip(-1),
        delta_bias=delta_bias_b, delta_softplus=delta_softplus, backend=backend,
    )
    return out + out_b.flip(-1)


dispatch.register(
    "selective_scan", "triton", _scan.selective_scan, triton_unavailable_reason, _scan.supports,
    SCAN_PRIORITY,
)
dispatch.register("fps", "triton", _fps.fps, triton_unavailable_reason, _fps.supports, PRIORITY)
dispatch.register(
    "knn", "triton", _geometry.knn, triton_unavailable_reason, _geometry.knn_supports, PRIORITY
)
dispatch.register(
    "chamfer_distance", "triton", _geometry.chamfer_distance, triton_unavailable_reason,
    _geometry.chamfer_supports, PRIORITY,
)
dispatch.register(
    "causal_conv1d", "triton", _conv.causal_conv1d, triton_unavailable_reason, _conv.supports,
    CONV_PRIORITY,
)

__all__ = ["bidirectional_selective_scan", "triton_unavailable_reason"]
