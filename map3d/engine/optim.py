"""AdamW with decoupled weight decay on weights only, and a per-step cosine schedule with warm-up."""

from __future__ import annotations

import math

import torch
from torch import nn

from map3d.engine.config import OptimConfig, ScheduleConfig

# Parameter names (last component) without weight decay, besides all 1-D tensors and parameters
# flagged `_no_weight_decay` (the mamba-ssm convention).
NO_DECAY_NAMES = ("cls_token", "cls_pos", "mask_token", "A_log", "A_b_log", "D", "D_b")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices/kernels, and undecayed biases/norms/tokens/SSM params."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if param.ndim <= 1 or leaf in NO_DECAY_NAMES or getattr(param, "_no_weight_decay", False):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW(lr, betas, eps) over `parameter_groups(model, cfg.weight_decay)`."""
    if len(cfg.betas) != 2:
        raise ValueError(f"optim.betas: expected two numbers, got {cfg.betas}")
    return torch.optim.AdamW(
        parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
    )


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


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, base_lr: float, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR: `cfg.warmup_epochs` linear warm-up, cosine to `cfg.min_lr` over all epochs."""
    if cfg.epochs < 1:
        raise ValueError(f"schedule.epochs: expected >= 1, got {cfg.epochs}")
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    min_factor = min(1.0, cfg.min_lr / base_lr) if base_lr > 0 else 0.0

    def factor(step: int) -> float:
        return cosine_warmup_factor(
            step, total_steps=total, warmup_steps=warmup, min_factor=min_factor
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
