"""Stochastic depth."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _keep_mask(x: Tensor, rate: Tensor) -> Tensor:
    """x (B,...), rate: 0-dim float64 CPU tensor p -> (B,1,...,1) in x's dtype and device:
    Bernoulli(1-p) draws from the default generator of x's device, divided by 1-p."""
    keep = 1.0 - rate.item()
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return x.new_empty(shape).bernoulli_(keep).div_(keep)


def _keep_mask_fake(x: Tensor, rate: Tensor) -> Tensor:
    return x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1))


# An opaque op for torch.compile: the rate is an input of the graph, not a constant of it, so
# blocks with different rates share one compiled graph, and the draw is eager's bit for bit
# (`bernoulli_` with a float p; with a tensor p it draws different numbers).
if hasattr(torch.library, "custom_op"):  # torch >= 2.4
    keep_mask = torch.library.custom_op("map3d::drop_path_keep_mask", mutates_args=())(_keep_mask)
    keep_mask.register_fake(_keep_mask_fake)
else:
    keep_mask = _keep_mask


class DropPath(nn.Module):
    """Drops the whole residual branch per sample with probability `p` while training.

    Kept samples are scaled by 1/(1-p) so the expectation is unchanged. (B,...) -> (B,...).
    `p` is held as a 0-dim float64 CPU tensor (no buffer: no state-dict key, not moved to the
    GPU, so reading it never waits for the GPU) and `active` (p > 0) as a bool, so compiled
    blocks that differ only in their rate share one graph.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.rate = torch.tensor(p, dtype=torch.float64)
        self.active = p > 0.0

    @property
    def p(self) -> float:
        return self.rate.item()

    def forward(self, x: Tensor) -> Tensor:
        if not self.active or not self.training:
            return x
        return x * keep_mask(x.detach(), self.rate)

    def extra_repr(self) -> str:
        return f"p={self.p}"
