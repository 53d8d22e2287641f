"""The CUDA-graph step's own gradient all-reduce under torchrun (GradientAverager) does what
DistributedDataParallel does: the same averaged gradients, rank 0's buffers everywhere."""

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from map3d.engine.distributed import GradientAverager, shutdown_distributed

WORLD = 2


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))


def _grads_and_buffers(rank: int, init: str, use_ddp: bool, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    _step_and_save(rank, use_ddp, out)
    shutdown_distributed()  # as map3d's runs end: no gloo thread left for interpreter teardown


def _step_and_save(rank: int, use_ddp: bool, out: str) -> None:
    torch.manual_seed(rank)  # another start on each process: the averager must even it out
    model = _model() if use_ddp else nn.Sequential(*_model()).apply(_jitter)
    data = torch.randn(6, 5, generator=torch.Generator().manual_seed(10 + rank))
    if use_ddp:
        wrapped = nn.parallel.DistributedDataParallel(model)
        wrapped(data).square().mean().backward()
    else:
        averager = GradientAverager(model, WORLD)
        averager.sync_initial_state()
        averager.broadcast_buffers()
        model(data).square().mean().backward()
        averager.average()
    torch.save(
        {
            "grads": {n: p.grad for n, p in model.named_parameters()},
            "buffers": dict(model.named_buffers()),
        },
        f"{out}.{rank}",
    )


def _jitter(module: nn.Module) -> None:
    """Different weights on rank 1 before the initial broadcast (rank 0 keeps `_model()`'s)."""
    if dist.get_rank() and isinstance(module, nn.Linear):
        with torch.no_grad():
            module.weight.add_(1.0)


def _run(tmp_path, use_ddp: bool) -> list[dict]:
    init = f"file://{tmp_path}/store-{use_ddp}"
    out = str(tmp_path / f"result-{use_ddp}")
    mp.start_processes(
        _grads_and_buffers, args=(init, use_ddp, out), nprocs=WORLD, start_method="spawn"
    )
    return [torch.load(f"{out}.{rank}") for rank in range(WORLD)]


@pytest.mark.skipif(sys.platform == "win32", reason="gloo file store")
def test_the_averaged_gradients_and_buffers_are_ddps(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ddp, ours = _run(tmp_path, True), _run(tmp_path, False)
    for rank in range(WORLD):
        for name, grad in ddp[rank]["grads"].items():
            torch.testing.assert_close(ours[rank]["grads"][name], grad, msg=name)
    # BatchNorm statistics: DDP broadcasts rank 0's before each forward, then each process
    # updates its own from its batch; the same here
    for name, buffer in ddp[0]["buffers"].items():
        torch.testing.assert_close(ours[0]["buffers"][name], buffer, msg=name)
        torch.testing.assert_close(ours[1]["buffers"][name], ddp[1]["buffers"][name], msg=name)


def test_a_parameter_without_gradient_is_named():
    model = nn.Linear(2, 2)
    model.weight.grad = torch.zeros(2, 2)
    with pytest.raises(RuntimeError, match="without a gradient in this step: bias"):
        GradientAverager(model, WORLD).average()
