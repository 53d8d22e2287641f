"""The training step on a GPU: no host synchronization, and the `map3d bench` command."""

from __future__ import annotations

import argparse

import pytest
import torch

from map3d.bench import (
    StepResult,
    _Marks,
    _step_fn,
    bench_step,
    format_results,
    graphed_step,
)
from map3d.commands import BENCH


def test_bench_command_parses_and_needs_cuda(capsys):
    parser = argparse.ArgumentParser()
    BENCH.add_arguments(parser)
    args = parser.parse_args(["--task", "pretrain", "--steps", "2"])
    if not torch.cuda.is_available():
        assert BENCH.run(args) == 2
        assert "needs a CUDA device" in capsys.readouterr().out
    table = format_results(
        [StepResult("pretrain", "auto", 8, 10.0, 800.0, 1.0, {"grouping": 0.5, "loss": 9.5}, 0.05)]
    )
    assert "800.0" in table and "grouping 5.0%" in table


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["hybridmt3d_tiny", "pointmae_tiny"])
def test_pretrain_step_has_no_host_sync(preset):
    """Forward, backward and optimizer step of a tiny MAP pretrainer under
    `torch.cuda.set_sync_debug_mode("error")` (after one warm-up step)."""
    from map3d import ops
    from map3d.models import create_model

    pytest.importorskip("triton")
    model = create_model(preset, task="pretrain").cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator("cuda").manual_seed(0)
    points = torch.rand(4, 1024, 3, device="cuda", generator=g)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(points, generator=g).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    previous = ops.set_nan_checks(False)  # each check is one isnan().any() on the host
    try:
        step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    finally:
        ops.set_nan_checks(previous)


@pytest.mark.gpu
def test_bench_step_runs_tiny():
    pytest.importorskip("triton")
    for task in ("pretrain", "classify"):
        result = bench_step(task, None, preset="hybridmt3d_tiny", batch=4, steps=2, warmup=1)
        assert result.samples_per_s > 0 and result.peak_mem_gib > 0
        assert set(result.stages_ms) >= {
            "grouping",
            "embed",
            "encoder",
            "loss",
            "backward",
            "optimizer",
        }


@pytest.mark.gpu
def test_graphed_pretrain_step_trains():
    """The whole step (forward, backward, AdamW) captured once and replayed."""
    from map3d import ops
    from map3d.models import create_model

    pytest.importorskip("triton")
    torch.manual_seed(0)
    model = create_model("hybridmt3d_tiny", task="pretrain").cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    points = torch.rand(4, 1024, 3, device="cuda")
    previous = ops.set_nan_checks(False)
    try:
        body = _step_fn("pretrain", model, optimizer, _Marks(), points, None, None, zero_grad=False)
        replay = graphed_step(body, optimizer, warmup=2)
        before = [p.detach().clone() for p in model.parameters()]
        for _ in range(3):
            replay()
        torch.cuda.synchronize()
    finally:
        ops.set_nan_checks(previous)
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert sum(changed) > len(changed) // 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
