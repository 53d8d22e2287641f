import pytest
import torch

from map3d.layers import LNP, DropPath, PositionMLP, TransformerBlock


def test_lnp_shapes_and_prefix_passthrough(generator):
    lnp = LNP(16, k=4)
    x = torch.randn(2, 1 + 10, 16, generator=generator)
    centers = torch.rand(2, 10, 3, generator=generator)
    out = lnp(x, centers)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0], x[:, 0])  # the cls token has no center


def test_lnp_sample_scope_is_independent_of_the_batch(generator):
    x = torch.randn(2, 10, 16, generator=generator)
    centers = torch.rand(2, 10, 3, generator=generator)
    other = x.clone()
    other[1] *= 5.0
    per_sample = LNP(16, k=4, std_scope="sample")
    assert torch.allclose(per_sample(x, centers)[0], per_sample(other, centers)[0])
    batch = LNP(16, k=4, std_scope="batch")
    assert not torch.allclose(batch(x, centers)[0], batch(other, centers)[0])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_sample", [True, False])
def test_compiled_lnp_pool_matches_eager(dtype, per_sample):
    """The fused CUDA region computes lnp_pool's function, forward and backward."""
    from map3d.layers.lnp import _compiled_lnp_pool, lnp_pool

    g = torch.Generator("cuda").manual_seed(1)
    feat = torch.randn(6, 26, 64, device="cuda", generator=g).to(dtype).requires_grad_()
    idx = torch.randint(0, 26, (6, 26, 4), device="cuda", generator=g)
    alpha = (1 + 0.1 * torch.randn(128, device="cuda", generator=g)).requires_grad_()
    beta = (0.1 * torch.randn(128, device="cuda", generator=g)).requires_grad_()
    grad = torch.randn(6, 26, 128, device="cuda", generator=g)
    inputs = [feat, alpha, beta]
    outs = []
    for pool in (lnp_pool, _compiled_lnp_pool()):
        out = pool(feat, idx, alpha, beta, per_sample, 1e-5)
        outs.append((out, *torch.autograd.grad(out, inputs, grad.to(out.dtype))))
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    for got, want in zip(outs[1], outs[0]):
        err = (got.float() - want.float()).norm() / want.float().norm()
        assert err < tol


def test_lnp_bad_centers():
    with pytest.raises(ValueError, match="centers"):
        LNP(8)(torch.randn(1, 4, 8), torch.rand(1, 6, 3))


def test_transformer_block_mask_is_respected(generator):
    block = TransformerBlock(16, 2).eval()
    x = torch.randn(1, 6, 16, generator=generator)
    causal = torch.ones(6, 6).tril().bool()
    changed = x.clone()
    changed[:, 4] += 1.0
    diff = (block(x, causal) - block(changed, causal)).abs().sum(-1)[0]
    assert (diff[:4] == 0).all() and diff[4] > 0


def test_drop_path():
    torch.manual_seed(0)
    x = torch.ones(1000, 4)
    drop = DropPath(0.3)
    assert torch.equal(drop.eval()(x), x)
    out = drop.train()(x)
    kept = (out[:, 0] > 0).float().mean()
    assert abs(kept.item() - 0.7) < 0.06
    assert torch.allclose(out[out > 0], torch.full_like(out[out > 0], 1 / 0.7))
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_position_mlp():
    pos = PositionMLP(24, activation="silu")
    assert pos(torch.rand(2, 5, 3)).shape == (2, 5, 24)
    assert {n for n, _ in pos.named_parameters()} == {"0.weight", "0.bias", "2.weight", "2.bias"}
