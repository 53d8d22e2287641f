"""The hybrid Mamba-Transformer backbone: one block list, block type by layer index.

`pattern` spells the stack, one letter per block: "M" = Mamba3D block (LNP + BiMamba),
"T" = attention block (LNP + pre-norm Transformer block). "MMMT" * 4 is HybridMT3D (12 Mamba3D
blocks with a Transformer block after every third), "M" * 12 pure Mamba3D, "T" * 12 a
Point-MAE-style Transformer (with `local_aggregation=False`). The backbone is modality-agnostic:
it maps tokens (B,L,C) and positions (B,L,C) to features (B,L,C); LNP runs only when the
config enables it and `centers` are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from map3d.layers import BIMAMBA_FLIPS, LNP, LNP_STD_SCOPES, BiMamba, DropPath, TransformerBlock
from map3d.layers.lnp import center_neighbors

BLOCK_TYPES = {"M": "Mamba3D block (LNP + BiMamba)", "T": "attention block (LNP + Transformer)"}


@dataclass
class BackboneConfig:
    """Hybrid backbone. Defaults: HybridMT3D-S of the MAP paper (C=384, "MMMT" x 4).

    drop_path_rate: stochastic depth of the last block; `drop_path_schedule` "linear" (default)
      spreads it over all blocks, "release" as the Mamba3D/PointMAP code (see drop_path_rates).
    local_aggregation: build an LNP in every block (points); False for images / Point-MAE.
    lnp_k: nearest centers pooled by LNP (the MAP/Mamba3D pretraining config uses 4).
    lnp_std: "sample" (default) or "batch" (release) scope of LNP's normalizing std.
    bimamba_flip: "sequence" (Vim v2, default) or "channel" (Mamba3D's bimamba v4).
    bimamba_divide_out: average instead of sum the two scan directions (Vim's if_devide_out).
    bimamba_init: "mamba_ssm" (default: dt/A/D init of mamba-ssm kept) or "release" (the
      Mamba3D/PointMAP release re-initializes every Linear/Conv1d, dt bias included).
    attention_block: "prenorm" (default, standard pre-norm block) or "release" (PointMAP's
      Transformer block nested in an outer residual; see `AttentionBlock`).
    """

    dim: int = 384
    pattern: str = "MMMT" * 4
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    drop_path_rate: float = 0.1
    local_aggregation: bool = True
    lnp_k: int = 4
    lnp_std: str = "sample"
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    bimamba_flip: str = "sequence"
    bimamba_divide_out: bool = False
    bimamba_init: str = "mamba_ssm"
    attention_block: str = "prenorm"
    drop_path_schedule: str = "linear"

    def __post_init__(self):
        bad = sorted(set(self.pattern) - set(BLOCK_TYPES))
        if not self.pattern or bad:
            raise ValueError(
                f"pattern {self.pattern!r} must be a non-empty string of block letters "
                f"{BLOCK_TYPES}; bad letters: {bad}"
            )
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.lnp_std not in LNP_STD_SCOPES:
            raise ValueError(f"lnp_std={self.lnp_std!r} must be one of {LNP_STD_SCOPES}")
        for name, choices in (
            ("bimamba_init", ("mamba_ssm", "release")),
            ("attention_block", ("prenorm", "release")),
            ("drop_path_schedule", ("linear", "release")),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r} must be one of {choices}")
        if self.bimamba_flip not in BIMAMBA_FLIPS:
            raise ValueError(f"bimamba_flip={self.bimamba_flip!r} must be one of {BIMAMBA_FLIPS}")

    @property
    def depth(self) -> int:
        return len(self.pattern)


class LocalAggregation(nn.Module):
    """x + drop_path(LNP(norm1(x), centers)); identity when `centers` is None. (B,L,C).

    `neighbors` (B,G,k): precomputed `center_neighbors(centers, lnp_k)`, or None to compute.
    """

    def __init__(self, config: BackboneConfig, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.lnp = LNP(config.dim, config.lnp_k, config.lnp_std)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, centers: Tensor | None, neighbors: Tensor | None = None) -> Tensor:
        if centers is None:
            return x
        return x + self.drop_path(self.lnp(self.norm1(x), centers, neighbors))


class Block(nn.Module):
    """What the block types share: the LNP residual (`local`, when the config enables local
    aggregation) and the forward signature; each type adds its token mixer (`mix`). (B,L,C).

    Attribute names are state-dict keys: `local`, then each type's `norm2` / `mixer`.
    """

    def __init__(self, config: BackboneConfig, drop_path: float):
        super().__init__()
        self.local = LocalAggregation(config, drop_path) if config.local_aggregation else None

    def forward(
        self,
        x: Tensor,
        centers: Tensor | None = None,
        attn_mask: Tensor | None = None,
        neighbors: Tensor | None = None,
    ) -> Tensor:
        self.check_mask(attn_mask)
        if self.local is not None:
            x = self.local(x, centers, neighbors)
        return self.mix(x, attn_mask)

    def check_mask(self, attn_mask: Tensor | None) -> None:
        """Raise if this block type cannot apply `attn_mask` (every mask is fine by default)."""

    def mix(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        raise NotImplementedError


class MambaBlock(Block):
    """Block "M": [LNP residual], then x + drop_path(BiMamba(norm2(x))). (B,L,C)."""

    def __init__(self, config: BackboneConfig, drop_path: float):
        super().__init__(config, drop_path)
        self.norm2 = nn.LayerNorm(config.dim)
        self.mixer = BiMamba(
            config.dim,
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            flip=config.bimamba_flip,
            divide_out=config.bimamba_divide_out,
        )
        self.drop_path = DropPath(drop_path)

    def check_mask(self, attn_mask: Tensor | None) -> None:
        if attn_mask is not None:
            raise ValueError("a Mamba block cannot apply an attention mask; use 'T' blocks")

    def mix(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        return x + self.drop_path(self.mixer(self.norm2(x)))


class AttentionBlock(Block):
    """Block "T": [LNP residual], then a pre-norm Transformer block. (B,L,C).

    `attention_block="release"` reproduces PointMAP's Trans3DBlock instead: the whole
    Transformer block (its own residuals, no drop path) is the branch of an outer residual,
    x + drop_path(block(norm2(x))), which also adds norm2(x) to the stream.
    """

    def __init__(self, config: BackboneConfig, drop_path: float):
        super().__init__(config, drop_path)
        nested = config.attention_block == "release"
        self.norm2 = nn.LayerNorm(config.dim) if nested else None
        self.drop_path = DropPath(drop_path) if nested else None
        self.mixer = TransformerBlock(
            config.dim,
            config.num_heads,
            config.mlp_ratio,
            config.qkv_bias,
            drop_path=0.0 if nested else drop_path,
        )

    def mix(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        if self.norm2 is not None:
            return x + self.drop_path(self.mixer(self.norm2(x), attn_mask))
        return self.mixer(x, attn_mask)


BLOCKS = {"M": MambaBlock, "T": AttentionBlock}


def init_weights(module: nn.Module, scheme: str = "trunc_normal", *, mamba: bool = False) -> None:
    """Point-MAE initialization: Linear/Conv1d weights trunc_normal(0.02) ("trunc_normal") or
    xavier_uniform ("xavier", the decoder's), zero biases, LayerNorm (1, 0). BiMamba mixers
    keep mamba-ssm's own initialization (dt, A_log, D) unless `mamba=True`, which
    re-initializes their Linear/Conv1d layers too (dt bias zeroed), as the release does."""

    def visit(m: nn.Module) -> None:
        if isinstance(m, BiMamba) and not mamba:
            return
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            if scheme == "xavier" and isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        for child in m.children():
            visit(child)

    visit(module)


def drop_path_rates(config: BackboneConfig) -> list[float]:
    """Per-block stochastic depth. "linear": 0 -> drop_path_rate over all blocks. "release":
    the M blocks get linspace(0, rate, #M) and the j-th T block the j-th of those values
    (patterns without M blocks: linear)."""
    kinds = config.pattern
    if config.drop_path_schedule == "linear" or "M" not in kinds:
        return torch.linspace(0, config.drop_path_rate, config.depth).tolist()
    m_rates = torch.linspace(0, config.drop_path_rate, kinds.count("M")).tolist()
    counters = {"M": 0, "T": 0}
    rates = []
    for kind in kinds:
        rates.append(m_rates[min(counters[kind], len(m_rates) - 1)])
        counters[kind] += 1
    return rates


class HybridBackbone(nn.Module):
    """Blocks from `config.pattern`, position added before every block, final LayerNorm.

    forward(tokens (B,L,C), pos (B,L,C), centers (B,G,3) | None, attn_mask) -> (B,L,C).
    With G < L the first L-G tokens are prefix tokens without a center (e.g. cls), which
    LNP leaves unchanged. `attn_mask` (bool (L,L), True = may attend) needs an all-"T" pattern.
    `forward_features` returns every block's output (e.g. multi-depth part segmentation).
    """

    def __init__(self, config: BackboneConfig | None = None, *, init: str = "trunc_normal"):
        super().__init__()
        self.config = config = config or BackboneConfig()
        rates = drop_path_rates(config)
        self.blocks = nn.ModuleList(
            BLOCKS[kind](config, rate) for kind, rate in zip(config.pattern, rates)
        )
        self.norm = nn.LayerNorm(config.dim)
        init_weights(self, init, mamba=config.bimamba_init == "release")

    def forward_features(
        self,
        tokens: Tensor,
        pos: Tensor,
        centers: Tensor | None = None,
        attn_mask: Tensor | None = None,
        *,
        num_blocks: int | None = None,
    ) -> list[Tensor]:
        """The output of every block, before the final norm: a list of depth (B,L,C) tensors
        (only the first `num_blocks` blocks run when it is given).

        The k nearest centers of LNP are computed once here and shared by all blocks.
        """
        if tokens.dim() != 3 or tokens.shape[-1] != self.config.dim or pos.shape != tokens.shape:
            raise ValueError(
                f"backbone expects tokens and pos of shape (B,L,{self.config.dim}), got "
                f"{tuple(tokens.shape)} and {tuple(pos.shape)}"
            )
        neighbors = None
        if not self.config.local_aggregation:
            centers = None
        elif centers is not None:
            if centers.dim() != 3 or centers.shape[0] != tokens.shape[0]:
                raise ValueError(
                    f"centers must be (B,G,3) with B = {tokens.shape[0]}, got shape "
                    f"{tuple(centers.shape)}"
                )
            neighbors = center_neighbors(centers, self.config.lnp_k)
        outputs, x = [], tokens
        for block in self.blocks[:num_blocks]:
            x = block(x + pos, centers, attn_mask, neighbors)
            outputs.append(x)
        return outputs

    def forward(
        self,
        tokens: Tensor,
        pos: Tensor,
        centers: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        return self.norm(self.forward_features(tokens, pos, centers, attn_mask)[-1])
