"""Pure-PyTorch reference ops: run on any device, import nothing optional, serve as the oracle.

Importing this package registers each op as backend "reference" (priority 0) in
`map3d.ops.dispatch`.
"""

from map3d.ops import dispatch
from map3d.ops.reference.geometry import chamfer_distance, fps, gather, knn
from map3d.ops.reference.scan import bidirectional_selective_scan, causal_conv1d, selective_scan

__all__ = [
    "bidirectional_selective_scan",
    "causal_conv1d",
    "chamfer_distance",
    "fps",
    "gather",
    "knn",
    "selective_scan",
]


def _always_available() -> None:
    return None


def _supports_anything(*tensors, **options) -> bool:
    return True


for _name in __all__:
    dispatch.register(
        _name, "reference", globals()[_name], _always_available, _supports_anything, priority=0
    )
