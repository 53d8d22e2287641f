"""When map3d compiles parts of a model by itself: the one decision behind `train.compile=auto`,
`map3d bench` and LNP's compiled pooling."""

from __future__ import annotations

import os

import torch

COMPILE_ENV = "MAP3D_COMPILE"


def compile_problem(device: torch.device) -> str | None:
    """Why map3d does not compile on `device` by itself (CPU runs, `MAP3D_COMPILE=0`), or None
    when it does."""
    if device.type != "cuda":
        return f"compiled only on CUDA (this run is on {device.type})"
    if os.environ.get(COMPILE_ENV, "1") == "0":
        return f"{COMPILE_ENV}=0"
    return None
