"""map3d's own GPU kernels in Triton: selective scan (forward and backward), FPS, neighbour
selection for kNN and Chamfer distance, depthwise causal conv1d.

Importing this package registers the `triton` backend of `selective_scan`,
`bidirectional_selective_scan`, `fps`, `knn`, `chamfer_distance` and `causal_conv1d` with
`map3d.ops.dispatch`; it is available when Triton imports and a CUDA device is present. Priorities follow the H100 measurements in
benchmarks/RESULTS.md: the default for fps, knn, chamfer_distance, for selective_scan (for long
sequences only unless mamba-ssm's compiled scan is installed) and for causal_conv1d unless
causal-conv1d is. Triton
itself is imported only inside functions, so this package imports on any machine.

Its `bidirectional_selective_scan` backend (of the public op that bidirectional, Vision-Mamba
style, mixers call) runs both directions in two launches of one kernel without flipped copies of
z or of the output; every other backend runs that op as two scans with flips.
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
# The scan ranks above mamba-ssm's compiled kernel (20) for the shapes its sequential kernels
# take (short sequences over many channels: the encoder's and the finetuning heads'): the whole
# paper-size step with mamba-ssm was already slower than with the chunked kernels (871 vs 917
# samples/s) and the sequential ones run the mixer's scan 2.0-2.4x faster than those
# (benchmarks/RESULTS.md). Other shapes go to mamba-ssm when it is installed (faster for long
# sequences on an H100), else to Triton.
SCAN_PRIORITY = 25
# The causal conv1d kernel runs a mixer's conv forward + backward 3x faster than PyTorch's
# depthwise conv (H200, benchmarks/RESULTS.md): above the reference, below the causal-conv1d
# library (20) when that is installed.
CONV_PRIORITY = 15


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


def _scan_supports(u, delta, A, B, C, D=None, z=None, delta_bias=None, **options) -> bool:
    """What the Triton scan takes, less the shapes left to mamba-ssm's kernel when installed."""
    if not _scan.supports(u, delta, A, B, C, D, z, delta_bias, **options):
        return False
    if _scan.runs_sequential(u, A):
        return True
    return dispatch.unavailable_reason("selective_scan", "mamba_ssm") is not None


_scan_pair_supports = dispatch.bidirectional_supports(_scan_supports)


def _bidirectional_supports(*tensors, **options) -> bool:
    """Both directions on the Triton scan, u and u_b of one dtype (one kernel runs both)."""
    return tensors[0].dtype == tensors[7].dtype and _scan_pair_supports(*tensors, **options)


dispatch.register(
    "selective_scan",
    "triton",
    _scan.selective_scan,
    triton_unavailable_reason,
    _scan_supports,
    SCAN_PRIORITY,
)
dispatch.register(
    "bidirectional_selective_scan",
    "triton",
    _scan.bidirectional_selective_scan_triton,
    triton_unavailable_reason,
    _bidirectional_supports,
    SCAN_PRIORITY,
)
dispatch.register("fps", "triton", _fps.fps, triton_unavailable_reason, _fps.supports, PRIORITY)
dispatch.register(
    "knn", "triton", _geometry.knn, triton_unavailable_reason, _geometry.knn_supports, PRIORITY
)
dispatch.register(
    "chamfer_distance",
    "triton",
    _geometry.chamfer_distance,
    triton_unavailable_reason,
    _geometry.chamfer_supports,
    PRIORITY,
)
dispatch.register(
    "causal_conv1d",
    "triton",
    _conv.causal_conv1d,
    triton_unavailable_reason,
    _conv.supports,
    CONV_PRIORITY,
)

__all__ = ["triton_unavailable_reason"]
