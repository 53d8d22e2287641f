"""AdamW with decoupled weight decay on weights only, optional layer-wise lr decay, and a
cosine schedule with warm-up (per step, or per epoch as the releases).

On CUDA the update is PyTorch's fused AdamW (one kernel launch per step instead of a dozen
multi-tensor passes over every parameter); elsewhere the default implementation.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from map3d.engine.config import OptimConfig, ScheduleConfig

# Parameter names (last component) without weight decay, besides all 1-D tensors and parameters
# flagged `_no_weight_decay` (the mamba-ssm convention).
NO_DECAY_NAMES = ("cls_token", "cls_pos", "mask_token", "A_log", "A_b_log", "D", "D_b")


# Vectors the releases store with extra unit dimensions, hence decay under their 1-D rule.
RELEASE_DECAYED_VECTORS = ("affine_alpha", "affine_beta")


def _no_decay(name: str, param: nn.Parameter, groups: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    if groups == "release":  # Point-MAE / Mamba3D / PointMAP `add_weight_decay`
        vector = param.ndim <= 1 and leaf not in RELEASE_DECAYED_VECTORS
        return vector or name.endswith(".bias") or "token" in name
    return param.ndim <= 1 or leaf in NO_DECAY_NAMES or getattr(param, "_no_weight_decay", False)


def parameter_groups(model: nn.Module, weight_decay: float, groups: str = "map3d") -> list[dict]:
    """Two AdamW groups: decayed matrices/kernels, and undecayed biases/norms/tokens/SSM params
    ("map3d"), or the releases' split ("release", see `OptimConfig.weight_decay_groups`)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if _no_decay(name, param, groups) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


_BLOCK = re.compile(r"^encoder\.backbone\.blocks\.(\d+)\.")
_EMBEDDINGS = ("cls_token", "cls_pos", "encoder.patch_embed.", "encoder.pos_embed.")


def layer_id(name: str, num_blocks: int) -> int:
    """Depth of parameter `name` for layer-wise lr decay (MAE / BEiT convention): 0 for the
    embeddings (patch and position embeddings, cls token and position), i + 1 for encoder block
    i, `num_blocks + 1` for everything after the blocks (final norm, heads, decoder)."""
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    if name.startswith(_EMBEDDINGS):
        return 0
    return num_blocks + 1


def layer_decay_groups(
    model: nn.Module, groups: list[dict], *, lr: float, decay: float
) -> list[dict]:
    """Split each AdamW group by `layer_id`; the group of layer l gets `lr_scale` =
    decay ** (num_blocks + 1 - l) and lr = lr * lr_scale (heads keep `lr`, the embeddings get
    the smallest). The schedule then multiplies every group's lr by the same factor. Groups run
    from the head down, so the first one (whose lr the trainer logs) has the base lr."""
    blocks = getattr(getattr(getattr(model, "encoder", None), "backbone", None), "blocks", None)
    if blocks is None:
        raise ValueError(
            f"optim.layer_decay={decay}: needs a model with an encoder backbone "
            f"(encoder.backbone.blocks), got {type(model).__name__}"
        )
    num_blocks = len(blocks)
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for group in groups:
        by_layer: dict[int, list[nn.Parameter]] = {}
        for param in group["params"]:
            by_layer.setdefault(layer_id(names[id(param)], num_blocks), []).append(param)
        for layer in sorted(by_layer, reverse=True):
            scale = decay ** (num_blocks + 1 - layer)
            out.append(
                {
                    **group,
                    "params": by_layer[layer],
                    "lr": lr * scale,
                    "lr_scale": scale,
                    "layer_id": layer,
                }
            )
    return out


def _fused_supported(groups: list[dict]) -> bool:
    """Fused AdamW: every parameter a CUDA floating-point tensor."""
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW(lr, betas, eps) over `parameter_groups(model, cfg.weight_decay)`, split by layer
    when `cfg.layer_decay` is not 1 (`layer_decay_groups`); fused when the model is on CUDA."""
    if len(cfg.betas) != 2:
        raise ValueError(f"optim.betas: expected two numbers, got {cfg.betas}")
    if not 0.0 < cfg.layer_decay <= 1.0:
        raise ValueError(f"optim.layer_decay: expected 0 < value <= 1, got {cfg.layer_decay}")
    groups = parameter_groups(model, cfg.weight_decay, cfg.weight_decay_groups or "map3d")
    if cfg.layer_decay != 1.0:
        groups = layer_decay_groups(model, groups, lr=cfg.lr, decay=cfg.layer_decay)
    fused = True if _fused_supported(groups) else None
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, keeping this optimizer's implementation (fused or
    not): a checkpoint written on a GPU resumes on a CPU and the other way round."""
    kept = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, implementation in zip(optimizer.param_groups, kept):
        group.update(implementation)
        if group.get("fused"):  # the fused kernel counts steps on the parameter's device
            steps_to_param_device(optimizer, group)


def steps_to_param_device(optimizer: torch.optim.Optimizer, group: dict) -> None:
    """Move the step counts of `group`'s parameters onto each parameter's device (float32), as
    the fused and capturable AdamW kernels need; a state loaded from an eager or CPU run keeps
    them on the CPU."""
    for param in group["params"]:
        state = optimizer.state.get(param, {})
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].to(param.device, torch.float32)


def cosine_warmup_factor(
    step: int, *, total_steps: int, warmup_steps: int, min_factor: float
) -> float:
    """LR multiplier at optimizer step `step` (0-based): linear ramp over `warmup_steps`
    (reaching 1 at step `warmup_steps`), then cosine from 1 down to `min_factor` at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_cosine_factor(
    epoch: int, *, epochs: int, warmup_epochs: float, min_factor: float
) -> float:
    """LR multiplier of timm's CosineLRScheduler(t_initial=epochs, warmup_t=warmup_epochs,
    warmup_lr_init = lr_min = min_factor * lr) after `scheduler.step(epoch)`: linear warm-up from
    `min_factor`, then cosine over all epochs (not shifted by the warm-up)."""
    if epoch < warmup_epochs:
        return min_factor + epoch * (1.0 - min_factor) / warmup_epochs
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, base_lr: float, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepped every optimizer step: `cfg.warmup_epochs` linear warm-up, cosine to
    `cfg.min_lr` over all epochs; with `cfg.interval == "epoch"` the value changes once per
    epoch as in the releases (epoch e uses `epoch_cosine_factor(max(e - 1, 0))`)."""
    if cfg.epochs < 1:
        raise ValueError(f"schedule.epochs: expected >= 1, got {cfg.epochs}")
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    min_factor = min(1.0, cfg.min_lr / base_lr) if base_lr > 0 else 0.0

    def factor(step: int) -> float:
        if cfg.interval == "epoch":
            epoch = max(step // steps_per_epoch - 1, 0)
            return epoch_cosine_factor(
                epoch, epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, min_factor=min_factor
            )
        return cosine_warmup_factor(
            step, total_steps=total, warmup_steps=warmup, min_factor=min_factor
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
