"""Bidirectional Mamba-1 mixer, Vision-Mamba style ("bimamba v2").

One `in_proj` (C -> 2E) and one `out_proj` (E -> C); a forward scan with conv1d / x_proj /
dt_proj / A_log / D and a scan of the flipped sequence with conv1d_b / x_proj_b / dt_proj_b /
A_b_log / D_b. Each direction is mamba-ssm's `mamba_inner_ref` without the output projection
(causal depthwise conv + SiLU, input-dependent dt/B/C, selective scan with D skip and SiLU(z)
gating); the backward output is flipped back and the two are summed before `out_proj`.
Parameter names and initialization are those of mamba-ssm's `Mamba` / Mamba3D's bimamba, so
their state dicts map onto this module. The conv goes through `map3d.ops.causal_conv1d`; the
two scans through `map3d.ops.bidirectional_selective_scan` (sequence flip: one fused
call on the Triton backend, two of its scans with flips on any other backend) or
`map3d.ops.selective_scan` (channel flip); the dispatcher picks the backend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from map3d import ops

BIMAMBA_FLIPS = ("sequence", "channel")


def _at_least_fp32(t: Tensor) -> Tensor:
    """A, D and the dt bias stay in float32 (as mamba-ssm keeps them), float64 stays float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class BiMamba(nn.Module):
    """(B,L,C) -> (B,L,C) bidirectional selective-state-space mixer, E = expand * C inner channels.

    `flip="sequence"` (default, Vision Mamba v2 / the MAP 2D release) scans the reversed
    sequence backwards; `flip="channel"` reverses the channel axis instead (Mamba3D's
    "bimamba v4" bi-SSM). `divide_out=True` averages the two directions (Vim's
    `if_devide_out`) instead of summing them.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        flip: str = "sequence",
        divide_out: bool = False,
    ):
        super().__init__()
        if flip not in BIMAMBA_FLIPS:
            raise ValueError(f"unknown bimamba flip {flip!r}; choose one of {BIMAMBA_FLIPS}")
        self.dim = dim
        self.d_state = d_state
        self.d_inner = expand * dim
        self.dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        self.flip = flip
        self.divide_out = divide_out
        inner, rank = self.d_inner, self.dt_rank

        self.in_proj = nn.Linear(dim, 2 * inner, bias=bias)
        self.conv1d = self._conv(inner, d_conv, conv_bias)
        self.x_proj = nn.Linear(inner, rank + 2 * d_state, bias=False)
        self.dt_proj = self._dt_proj(rank, inner, dt_min, dt_max, dt_init_floor)
        self.A_log = nn.Parameter(self._a_log_init(inner, d_state))
        self.D = nn.Parameter(torch.ones(inner))
        self.conv1d_b = self._conv(inner, d_conv, conv_bias)
        self.x_proj_b = nn.Linear(inner, rank + 2 * d_state, bias=False)
        self.dt_proj_b = self._dt_proj(rank, inner, dt_min, dt_max, dt_init_floor)
        self.A_b_log = nn.Parameter(self._a_log_init(inner, d_state))
        self.D_b = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, dim, bias=bias)
        for p in (self.A_log, self.D, self.A_b_log, self.D_b):
            p._no_weight_decay = True

    @staticmethod
    def _conv(channels: int, width: int, bias: bool) -> nn.Conv1d:
        return nn.Conv1d(channels, channels, width, groups=channels, padding=width - 1, bias=bias)

    @staticmethod
    def _a_log_init(inner: int, d_state: int) -> Tensor:
        """S4D-real: A = -(1..N) for every channel, stored as log(1..N). (E,N)."""
        return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(inner, 1)

    @staticmethod
    def _dt_proj(rank: int, inner: int, dt_min: float, dt_max: float, floor: float) -> nn.Linear:
        """mamba-ssm's dt init: uniform weight, bias = softplus^-1(dt), dt log-uniform."""
        proj = nn.Linear(rank, inner, bias=True)
        std = rank**-0.5
        nn.init.uniform_(proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=floor)
        with torch.no_grad():
            proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        proj.bias._no_reinit = True
        return proj

    def _scan_inputs(self, x: Tensor, backward: bool) -> tuple[Tensor, ...]:
        """One direction up to the scan: x (B,E,L) -> (u, delta, A, B, C, D, delta_bias) with
        u, delta (B,E,L) (delta without its bias), A (E,N), B, C (B,N,L), D, delta_bias (E,)."""
        if backward:
            conv, x_proj, dt_proj, a_log, d = (
                self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b
            )  # fmt: skip
        else:
            conv, x_proj, dt_proj, a_log, d = (
                self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D
            )  # fmt: skip
        u = ops.causal_conv1d(x, conv.weight.squeeze(1), conv.bias, activation="silu")
        dt, b, c = torch.split(
            x_proj(u.transpose(1, 2)), [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)
        a = -torch.exp(_at_least_fp32(a_log))
        return (u, delta, a, b.transpose(1, 2), c.transpose(1, 2), _at_least_fp32(d),
                _at_least_fp32(dt_proj.bias))  # fmt: skip

    def _scan(self, xz: Tensor, backward: bool) -> Tensor:
        """One direction of mamba_inner_ref without out_proj: (B,2E,L) -> (B,E,L)."""
        x, z = xz.chunk(2, dim=1)
        u, delta, a, b, c, d, delta_bias = self._scan_inputs(x, backward)
        return ops.selective_scan(
            u, delta, a, b, c, d, z=z, delta_bias=delta_bias, delta_softplus=True
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"BiMamba expects (B,L,{self.dim}), got shape {tuple(x.shape)}")
        xz = self.in_proj(x).transpose(1, 2)  # (B,2E,L)
        if self.flip == "sequence":
            # both directions in one call: two launches of one kernel and no flipped copies of
            # z or of the output with the Triton backend, two scans with flips on the others
            x_in, z = xz.chunk(2, dim=1)
            y = ops.bidirectional_selective_scan(
                *self._scan_inputs(x_in, backward=False),
                *self._scan_inputs(x_in.flip(-1), backward=True),
                z=z,
                delta_softplus=True,
            )
        else:  # Mamba3D's bi-SSM: the second scan runs over the channel-reversed features
            y = self._scan(xz, backward=False) + self._scan(xz.flip(1), backward=True).flip(1)
        if self.divide_out:
            y = y / 2
        return self.out_proj(y.transpose(1, 2).to(x.dtype))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, d_inner={self.d_inner}, d_state={self.d_state}, "
            f"dt_rank={self.dt_rank}, flip={self.flip!r}"
        )
