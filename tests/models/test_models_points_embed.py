import pytest
import torch

from map3d.models.points import MiniPointNet


def _conv_patch_embed(embed: MiniPointNet, patches: torch.Tensor) -> torch.Tensor:
    """Point-MAE's Encoder written with its Conv1d modules over (BG,channels,K)."""
    b, g, k, c = patches.shape
    feat = embed.first_conv(patches.reshape(b * g, k, c).transpose(1, 2))
    pooled = feat.amax(dim=2, keepdim=True)
    feat = embed.second_conv(torch.cat([pooled.expand_as(feat), feat], dim=1))
    return feat.amax(dim=2).reshape(b, g, embed.dim)


@pytest.mark.parametrize("train", [True, False])
def test_mini_pointnet_matches_conv1d_formulation(generator, train):
    """The GEMM form equals the Conv1d form, forward and backward (float64, both BN modes)."""
    embed = MiniPointNet(24).double().train(train)
    patches = torch.randn(3, 5, 8, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    inputs = [patches, *embed.parameters()]
    ours = embed(patches)
    grads = torch.autograd.grad(ours.square().sum(), inputs)
    ref = _conv_patch_embed(embed, patches)
    ref_grads = torch.autograd.grad(ref.square().sum(), inputs)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_mini_pointnet_shape_and_permutation_invariance(generator):
    embed = MiniPointNet(24)
    patches = torch.randn(2, 5, 8, 3, generator=generator)
    assert embed(patches).shape == (2, 5, 24)
    perm = torch.randperm(8, generator=generator)
    embed.eval()
    assert torch.allclose(embed(patches), embed(patches[:, :, perm]), atol=1e-6)


def test_mini_pointnet_keys_are_point_mae_encoder_keys():
    """Module names as Point-MAE's `Encoder`: release and 0.1.0 checkpoints load by name."""
    keys = set(MiniPointNet(24).state_dict())
    assert {"first_conv.0.weight", "first_conv.1.running_var", "first_conv.3.bias",
            "second_conv.0.weight", "second_conv.3.weight"} <= keys  # fmt: skip
