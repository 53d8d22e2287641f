"""Compiled backbone blocks: drop path rates outside the graph, which blocks compile, when."""

import pytest
import torch
from torch import nn

from map3d.layers import DropPath
from map3d.models import create_model
from map3d.models.backbone import AttentionBlock, MambaBlock
from map3d.models.compile import compile_blocks, resolve_compile
from map3d.models.points.embed import MiniPointNet


def _float_drop_path(x, p):
    """DropPath as it was with the rate a Python float."""
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


@pytest.mark.parametrize("p", [0.1, 0.0909090909090909, 0.37])
def test_drop_path_draws_and_scales_as_with_a_float_rate(p):
    x = torch.randn(64, 5, 7, requires_grad=True)
    torch.manual_seed(3)
    (expected := _float_drop_path(x, p)).backward(torch.ones_like(expected))
    expected_grad, x.grad = x.grad, None
    torch.manual_seed(3)
    (out := DropPath(p)(x)).backward(torch.ones_like(out))
    assert torch.equal(out, expected) and torch.equal(x.grad, expected_grad)
    assert DropPath(p).p == p and repr(DropPath(p)) == f"DropPath(p={p})"
    assert DropPath(p).eval()(x) is x and DropPath(0.0)(x) is x


def test_drop_path_rate_is_no_state_and_stays_on_the_cpu():
    model = create_model("hybridmt3d_s", task="pretrain")
    assert not any("rate" in key for key in model.state_dict())
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert max(rates) == pytest.approx(0.1) and min(rates) == 0.0
    with pytest.raises(ValueError, match=r"drop path probability must be in \[0, 1\)"):
        DropPath(1.0)


def test_auto_compiles_on_cuda_only_and_not_with_map3d_compile_0(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.delenv("MAP3D_COMPILE", raising=False)
    assert resolve_compile("auto", cuda) == (True, "blocks compiled (train.compile=auto)")
    compiled, note = resolve_compile("auto", cpu)
    assert not compiled and note == "blocks eager: compiled only on CUDA (this run is on cpu)"
    assert resolve_compile(True, cpu) == (True, "blocks compiled (train.compile=on)")
    assert resolve_compile(False, cuda) == (False, "blocks eager (train.compile=off)")
    monkeypatch.setenv("MAP3D_COMPILE", "0")
    assert resolve_compile("auto", cuda) == (False, "blocks eager: MAP3D_COMPILE=0")
    assert resolve_compile(True, cuda)[0]


def test_compile_blocks_compiles_every_backbone_block_and_the_patch_embedding(monkeypatch):
    calls = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: calls.append((self, kw)))
    model = create_model("hybridmt3d_tiny", task="pretrain", num_groups=8, num_regions=2)
    keys = list(model.state_dict())
    blocks = [*model.encoder.backbone.blocks, *model.decoder.blocks.blocks]
    assert compile_blocks(model) == len(blocks) + 1 == len(calls)
    assert [m for m, _ in calls] == [model.encoder.patch_embed, *blocks]
    assert isinstance(model.encoder.patch_embed, MiniPointNet)
    assert all(isinstance(m, (MambaBlock, AttentionBlock)) for m in blocks)
    assert calls[0][1] == {"dynamic": False, "options": {"fallback_random": True}}
    assert list(model.state_dict()) == keys


# ----------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
def test_compiled_blocks_match_eager_blocks_with_drop_path():
    """Same seed, fp32, drop path active: the compiled blocks draw the same keep masks (the
    rate is an op input; fallback_random) and agree to fp32 rounding of fused kernels. The
    biases of the mini-PointNet's convolutions whose shift a BatchNorm removes have a gradient
    of zero: theirs are rounding noise, compared to their weights' gradient."""

    def build():
        torch.manual_seed(0)
        return create_model(
            "hybridmt3d_tiny",
            task="pretrain",
            num_groups=16,
            group_size=16,
            num_regions=2,
            drop_path_rate=0.3,
            decoder_drop_path_rate=0.3,
        ).cuda()

    points = torch.rand(8, 512, 3, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    results = []
    for compiled in (False, True):
        model = build().train()
        if compiled:
            assert compile_blocks(model) == 9
        for _ in range(2):  # the second forward reuses the compiled graphs
            model.zero_grad(set_to_none=True)
            torch.manual_seed(2)
            loss = model(points, generator=torch.Generator("cuda").manual_seed(3)).loss
            loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (eager_loss, eager_grads), (loss, grads) = results
    torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=1e-5)
    assert grads.keys() == eager_grads.keys()
    shift_free = {
        f"encoder.patch_embed.{name}.bias"
        for name in ("first_conv.0", "first_conv.3", "second_conv.0")
    }
    for name, grad in grads.items():
        if name in shift_free:
            scale = eager_grads[name.replace("bias", "weight")].abs().max()
            assert max(grad.abs().max(), eager_grads[name].abs().max()) < 1e-4 * scale, name
            continue
        torch.testing.assert_close(grad, eager_grads[name], rtol=1e-3, atol=1e-5, msg=name)
