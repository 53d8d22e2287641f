import pytest
import torch

import map3d
from map3d import ops

from .conftest import SMALL, SMALL_PRETRAIN


@pytest.mark.gpu
@pytest.mark.parametrize("task", ["pretrain", "classify"])
def test_forward_has_no_host_sync_on_cuda(task):
    """With the ops' NaN checks off and a CUDA generator, a training step never waits for the
    device (torch.cuda sync debug mode turns any sync into an error)."""
    device = torch.device("cuda")
    overrides = SMALL_PRETRAIN if task == "pretrain" else SMALL
    model = map3d.create_model("hybridmt3d_tiny", task=task, **overrides).to(device)
    points = torch.rand(4, 256, 3, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    previous = ops.set_nan_checks(False)
    model(points, generator=generator)  # warm-up: backend selection, lazy init
    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode("error")
        out = model(points, generator=generator)
        loss = out.loss if task == "pretrain" else out.float().logsumexp(-1).mean()
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        ops.set_nan_checks(previous)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    model = map3d.create_model("hybridmt3d_tiny", task="classify", **SMALL).eval()
    points = torch.rand(2, 128, 3, generator=torch.Generator().manual_seed(0))
    expected = model(points)
    actual = model.cuda()(points.cuda()).cpu()
    assert torch.allclose(actual, expected, atol=1e-3, rtol=1e-3)
