"""Stochastic depth."""

from __future__ import annotations

from torch import Tensor, nn


class DropPath(nn.Module):
    """Drops the whole residual branch per sample with probability `p` while training.

    Kept samples are scaled by 1/(1-p) so the expectation is unchanged. (B,...) -> (B,...).
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"
