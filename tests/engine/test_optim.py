"""AdamW groups and the per-step cosine schedule with warm-up."""

import math
from itertools import pairwise

import pytest
import torch
from torch import nn

from map3d.engine.config import OptimConfig, ScheduleConfig
from map3d.engine.optim import (
    build_optimizer,
    build_scheduler,
    cosine_warmup_factor,
    load_optimizer_state,
    parameter_groups,
)


def test_cosine_warmup_shape():
    f = [
        cosine_warmup_factor(s, total_steps=100, warmup_steps=10, min_factor=0.01)
        for s in range(100)
    ]
    assert all(a < b for a, b in pairwise(f[:11]))  # linear ramp up
    assert f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in pairwise(f[10:]))  # then monotone decay
    assert f[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine_warmup_factor(
        100, total_steps=100, warmup_steps=10, min_factor=0.01
    ) == pytest.approx(0.01)


def test_scheduler_steps_per_iteration_and_no_decay_groups():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.05))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and len(decay["params"]) == 1  # the Linear weight
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3
    sched = build_scheduler(
        opt, ScheduleConfig(epochs=2, warmup_epochs=1, min_lr=1e-5), base_lr=1e-3, steps_per_epoch=5
    )
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[4] < 1e-3 + 1e-12 and lrs[5] == pytest.approx(1e-3)
    assert lrs[-1] < lrs[5]
    assert torch.isclose(torch.tensor(opt.param_groups[0]["lr"]), torch.tensor(1e-5))


def _tiny_classifier():
    import map3d

    return map3d.create_model(
        "hybridmt3d_tiny", task="classify", num_classes=5, num_groups=8, group_size=8
    )


def test_layer_decay_lr_per_parameter():
    model = _tiny_classifier()
    depth = len(model.encoder.backbone.blocks)
    opt = build_optimizer(model, OptimConfig(lr=1e-3, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    expected_layer = {
        "cls_token": 0,
        "cls_pos": 0,
        "encoder.patch_embed.first_conv.0.weight": 0,
        "encoder.pos_embed.0.bias": 0,
        "encoder.backbone.norm.weight": depth + 1,
        "head.0.weight": depth + 1,
    }
    seen_layers = set()
    for name, param in model.named_parameters():
        if name.startswith("encoder.backbone.blocks."):
            layer = int(name.split(".")[3]) + 1
        elif name.startswith(("cls_", "encoder.patch_embed.", "encoder.pos_embed.")):
            layer = 0
        else:
            layer = depth + 1
        assert expected_layer.get(name, layer) == layer
        assert lr_of[id(param)] == pytest.approx(1e-3 * 0.5 ** (depth + 1 - layer)), name
        seen_layers.add(layer)
    assert seen_layers == set(range(depth + 2))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the logged lr is the head's
    # the weight-decay split survives the layer split
    plain = {id(p): g["weight_decay"] for g in parameter_groups(model, 0.05) for p in g["params"]}
    assert {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]} == plain


def test_layer_decay_ratios_kept_by_the_schedule():
    model = _tiny_classifier()
    opt = build_optimizer(model, OptimConfig(lr=1e-3, layer_decay=0.75))
    sched = build_scheduler(
        opt, ScheduleConfig(epochs=3, warmup_epochs=1, min_lr=0.0), base_lr=1e-3, steps_per_epoch=4
    )
    for _ in range(6):
        opt.step()
        sched.step()
    factor = opt.param_groups[0]["lr"] / (1e-3 * opt.param_groups[0]["lr_scale"])
    assert 0 < factor < 1
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"] * factor)


def test_layer_decay_off_and_invalid():
    model = _tiny_classifier()
    assert len(build_optimizer(model, OptimConfig(layer_decay=1.0)).param_groups) == 2
    with pytest.raises(ValueError, match="layer_decay"):
        build_optimizer(model, OptimConfig(layer_decay=0.0))
    with pytest.raises(ValueError, match="encoder backbone"):
        build_optimizer(nn.Linear(2, 2), OptimConfig(layer_decay=0.5))


def _steps(opt, model, n):
    for _ in range(n):
        model(torch.ones(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()


def test_optimizer_is_plain_on_cpu_and_load_keeps_the_implementation():
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    opt = build_optimizer(model, OptimConfig(lr=1e-2))
    assert all(not g["fused"] for g in opt.param_groups)
    _steps(opt, model, 2)
    state = opt.state_dict()
    for group in state["param_groups"]:  # as written by a fused (CUDA) run
        group["fused"] = True
    resumed = build_optimizer(model, OptimConfig(lr=1e-2))
    load_optimizer_state(resumed, state)
    assert all(not g["fused"] for g in resumed.param_groups)
    _steps(resumed, model, 1)  # a plain CPU step runs
    assert int(resumed.state[model.weight]["step"]) == 3


@pytest.mark.gpu
def test_fused_on_cuda_matches_the_default_and_resumes_a_cpu_state():
    torch.manual_seed(0)
    cpu_model = nn.Linear(4, 4)
    gpu_model = nn.Linear(4, 4).cuda()
    gpu_model.load_state_dict(cpu_model.state_dict())
    cpu_opt = build_optimizer(cpu_model, OptimConfig(lr=1e-2, weight_decay=0.05))
    gpu_opt = build_optimizer(gpu_model, OptimConfig(lr=1e-2, weight_decay=0.05))
    assert all(g["fused"] for g in gpu_opt.param_groups)
    _steps(cpu_opt, cpu_model, 3)
    for _ in range(3):
        gpu_model(torch.ones(2, 4, device="cuda")).sum().backward()
        gpu_opt.step()
        gpu_opt.zero_grad()
    for a, b in zip(cpu_model.parameters(), gpu_model.parameters()):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-6)
    load_optimizer_state(gpu_opt, cpu_opt.state_dict())  # CPU steps move to the device
    assert all(g["fused"] for g in gpu_opt.param_groups)
    assert gpu_opt.state[gpu_model.weight]["step"].is_cuda
    gpu_model(torch.ones(2, 4, device="cuda")).sum().backward()
    gpu_opt.step()
    assert int(gpu_opt.state[gpu_model.weight]["step"]) == 4
