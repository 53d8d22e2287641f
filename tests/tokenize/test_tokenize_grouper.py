import pytest
import torch

from map3d.tokenize import PatchTokens, PointGrouper


def test_grouping_shapes_and_centering(generator):
    points = torch.rand(2, 128, 3, generator=generator)
    tokens = PointGrouper(16, 8, "hilbert")(points)
    assert isinstance(tokens, PatchTokens)
    assert tokens.patches.shape == (2, 16, 8, 3)
    assert tokens.centers.shape == (2, 16, 3)
    assert tokens.order.shape == tokens.inverse.shape == (2, 16) and tokens.grid is None
    world = tokens.patches + tokens.centers[:, :, None]
    for b in range(2):
        # every patch point is a point of the cloud, and each center is its own nearest point
        dist = (world[b].reshape(-1, 1, 3) - points[b]).norm(dim=-1).amin(dim=1)
        assert dist.max() < 1e-6
        assert tokens.patches[b, :, 0].norm(dim=-1).max() < 1e-6


def test_tokens_follow_the_serialized_order(generator):
    points = torch.rand(2, 128, 3, generator=generator)
    fps_order = PointGrouper(16, 8, "none")(points)
    curve = PointGrouper(16, 8, "z")(points)
    reordered = fps_order.centers.gather(1, curve.order[..., None].expand(-1, -1, 3))
    assert torch.allclose(reordered, curve.centers)
    back = curve.centers.gather(1, curve.inverse[..., None].expand(-1, -1, 3))
    assert torch.allclose(back, fps_order.centers)


def test_bad_input_raises_value_error():
    grouper = PointGrouper(16, 32)
    with pytest.raises(ValueError, match="fewer than"):
        grouper(torch.rand(2, 20, 3))
    with pytest.raises(ValueError, match=r"\(B,N,3\)"):
        grouper(torch.rand(2, 64, 2))
    with pytest.raises(ValueError, match=r"\(B,N,3\)"):
        grouper(torch.rand(64, 3))
    bad = torch.rand(2, 64, 3)
    bad[1, 5, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        grouper(bad)
    bad[1, 5, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        grouper(bad)
    with pytest.raises(ValueError, match="serialization"):
        PointGrouper(16, 8, "spiral")
