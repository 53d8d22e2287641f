"""AdamW groups and the per-step cosine schedule with warm-up."""

import math
from itertools import pairwise

import pytest
import torch
from torch import nn

from map3d.engine.config import OptimConfig, ScheduleConfig
from map3d.engine.optim import build_optimizer, build_scheduler, cosine_warmup_factor


def test_cosine_warmup_shape():
    f = [cosine_warmup_factor(s, total_steps=100, warmup_steps=10, min_factor=0.01)
         for s in range(100)]
    assert all(a < b for a, b in pairwise(f[:11]))  # linear ramp up
    assert f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in pairwise(f[10:]))  # then monotone decay
    assert f[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine_warmup_factor(100, total_steps=100, warmup_steps=10,
                                min_factor=0.01) == pytest.approx(0.01)


def test_scheduler_steps_per_iteration_and_no_decay_groups():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.05))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and len(decay["params"]) == 1  # the Linear weight
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3
    sched = build_scheduler(opt, ScheduleConfig(epochs=2, warmup_epochs=1, min_lr=1e-5),
                            base_lr=1e-3, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[4] < 1e-3 + 1e-12 and lrs[5] == pytest.approx(1e-3)
    assert lrs[-1] < lrs[5]
    assert torch.isclose(torch.tensor(opt.param_groups[0]["lr"]), torch.tensor(1e-5))
