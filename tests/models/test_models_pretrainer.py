import pytest
import torch

import map3d
from map3d.layers import PositionMLP
from map3d.models import MAPDecoder
from map3d.models.points import Reconstruction

from .conftest import SMALL_PRETRAIN


def make_decoder(num_regions, length=12, dim=16):
    torch.manual_seed(0)
    decoder = MAPDecoder(dim, dim, 2, 2, num_regions, PositionMLP(dim), drop_path_rate=0.0)
    return decoder.eval()


def decode_with_change(decoder, position, length=12, dim=16):
    """Decoder outputs for a full sequence and for the same sequence with one token changed."""
    gen = torch.Generator().manual_seed(1)
    visible = torch.randn(2, length, dim, generator=gen)
    idx = torch.arange(length).expand(2, -1)
    centers = torch.rand(2, length, 3, generator=gen)
    changed = visible.clone()
    changed[:, position] += 1.0
    return decoder(visible, idx, centers), decoder(changed, idx, centers)


@pytest.mark.parametrize("num_regions", [2, 3, 4, 6])
@pytest.mark.parametrize("region", [0, 1, -1])
def test_decoder_is_region_causal(num_regions, region):
    length = 12
    size = length // num_regions
    region %= num_regions
    position = region * size + size // 2
    before, after = decode_with_change(make_decoder(num_regions), position)
    diff = (before - after).abs().amax(dim=(0, 2))  # per position
    assert (diff[: region * size] == 0).all(), "an earlier region saw a later token"
    assert (diff[region * size :] > 0).all(), "its own and later regions must see the token"


def test_one_region_is_an_mae_decoder():
    before, after = decode_with_change(make_decoder(1), position=9)
    assert ((before - after).abs().amax(dim=(0, 2)) > 0).all()


def test_g_regions_is_a_token_causal_decoder():
    for position in (0, 5, 11):
        before, after = decode_with_change(make_decoder(12), position)
        diff = (before - after).abs().amax(dim=(0, 2))
        assert (diff[:position] == 0).all() and (diff[position:] > 0).all()


def test_decoder_places_mask_tokens_and_visible_features():
    decoder = make_decoder(1)
    captured = {}
    decoder.blocks.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    visible = torch.randn(1, 3, 16)
    idx = torch.tensor([[1, 4, 7]])
    decoder(visible, idx, torch.rand(1, 12, 3))
    x = captured["x"][0]
    assert torch.equal(x[[1, 4, 7]], visible[0])
    masked = [i for i in range(12) if i not in (1, 4, 7)]
    assert torch.equal(x[masked], decoder.mask_token[0].expand(9, -1))


def test_mask_ratio_range(points):
    model = map3d.create_model(
        "hybridmt3d_tiny", task="pretrain", mask_ratio=(0.3, 0.7), **SMALL_PRETRAIN
    )
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(6):
        out = model(points, generator=gen)
        assert 0.3 <= out.mask_ratio <= 0.7
        assert out.num_masked == int(out.mask_ratio * 16)
        seen.add(out.num_masked)
    assert len(seen) > 1


def test_same_generator_same_loss(tiny_pretrainer, points):
    tiny_pretrainer.eval()
    a = tiny_pretrainer(points, generator=torch.Generator().manual_seed(5)).loss
    b = tiny_pretrainer(points, generator=torch.Generator().manual_seed(5)).loss
    c = tiny_pretrainer(points, generator=torch.Generator().manual_seed(6)).loss
    assert a == b and a != c


def test_reconstruct(tiny_pretrainer, points):
    tiny_pretrainer.eval()
    rec = tiny_pretrainer.reconstruct(points, generator=torch.Generator().manual_seed(2))
    assert isinstance(rec, Reconstruction)
    assert rec.centers.shape == (2, 16, 3) and rec.mask.shape == (2, 16)
    assert rec.gt_patches.shape == rec.pred_patches.shape == (2, 16, 8, 3)
    assert rec.chamfer.shape == (2,) and (rec.mask.sum(1) == 9).all()
    visible = ~rec.mask
    assert torch.equal(rec.pred_patches[visible], rec.gt_patches[visible])
    assert not torch.equal(rec.pred_patches[rec.mask], rec.gt_patches[rec.mask])
    # ground truth in world coordinates: every point belongs to the input cloud
    world = rec.gt_patches.reshape(2, -1, 3)
    dist = (world[:, :, None] - points[:, None]).norm(dim=-1).amin(-1)
    assert dist.max() < 1e-6
    # the loss of the same masking equals the reconstruction's Chamfer
    out = tiny_pretrainer(points, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(out.per_sample_loss, rec.chamfer)


def brute_force_chamfer(x, y, norm):
    """Chamfer distance of x (B,P,3) and y (B,Q,3) from all pairwise distances: norm=2 the mean
    of squared nearest distances both ways, summed; norm=1 the mean of Euclidean nearest
    distances both ways, summed and divided by 2."""
    squared = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)  # (B,P,Q)
    dist = squared if norm == 2 else squared.sqrt()
    both_ways = dist.amin(2).mean(1) + dist.amin(1).mean(1)
    return both_ways if norm == 2 else both_ways / 2


@pytest.mark.parametrize("norm", [1, 2])
def test_chamfer_norms(points, norm):
    torch.manual_seed(0)
    model = (
        map3d.create_model("pointmae_tiny", task="pretrain", chamfer_norm=norm, **SMALL_PRETRAIN)
        .double()
        .eval()
    )
    assert model.objective.norm == norm
    points = points.double()
    rec = model.reconstruct(points, generator=torch.Generator().manual_seed(3))
    # per cloud: the mean over its masked patches of the Chamfer distance between the predicted
    # and the true patch (both in world coordinates; Chamfer does not see the shared centre)
    b, k = points.shape[0], SMALL_PRETRAIN["group_size"]
    pred = rec.pred_patches[rec.mask].reshape(-1, k, 3)
    true = rec.gt_patches[rec.mask].reshape(-1, k, 3)
    expected = brute_force_chamfer(pred, true, norm).reshape(b, -1).mean(1)
    torch.testing.assert_close(rec.chamfer, expected, rtol=1e-9, atol=1e-12)
    out = model(points, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.loss, expected.mean(), rtol=1e-9, atol=1e-12)
    # and the op itself, on clouds of different sizes
    x = torch.randn(3, 7, 3, dtype=torch.float64)
    y = torch.randn(3, 11, 3, dtype=torch.float64)
    torch.testing.assert_close(
        map3d.ops.chamfer_distance(x, y, norm=norm), brute_force_chamfer(x, y, norm)
    )


def test_runs_in_float64(tiny_pretrainer, points):
    out = tiny_pretrainer.double()(points.double(), generator=torch.Generator().manual_seed(0))
    assert out.loss.dtype == torch.float64


def test_bad_input(tiny_pretrainer):
    with pytest.raises(ValueError, match="fewer than"):
        tiny_pretrainer(torch.rand(2, 6, 3))
    with pytest.raises(ValueError, match=r"\(B,N,3\)"):
        tiny_pretrainer(torch.rand(2, 128, 4))
    bad = torch.rand(2, 128, 3)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tiny_pretrainer(bad)
