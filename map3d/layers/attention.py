"""Pre-norm Transformer block on `F.scaled_dot_product_attention` with an explicit mask.

Parameter names follow Point-MAE's `Block` (norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
mlp.fc2) so its state dicts map onto ours.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from map3d.layers.drop_path import DropPath


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, with dropout. (...,C) -> (...,C)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention. (B,L,C) -> (B,L,C).

    `mask`: None (full attention), a bool (L,L) or (B,1,L,L) tensor with True = may attend, or
    an additive float mask of the same shapes, as `F.scaled_dot_product_attention` takes it.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, l, c = x.shape
        q, k, v = (
            self.qkv(x).view(b, l, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, l, c)))


class TransformerBlock(nn.Module):
    """x + drop_path(attn(norm1(x), mask)), then x + drop_path(mlp(norm2(x))). (B,L,C)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))
