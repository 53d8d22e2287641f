"""Part segmenter: interpolation, shapes and backward on tiny presets, pretrained loading."""

import dataclasses

import pytest
import torch

import map3d
from map3d.models import load_pretrained
from map3d.models.points.partseg import FeaturePropagation, interpolate_features

TINY = ["hybridmt3d_tiny", "mamba3d_tiny", "pointmae_tiny"]
SMALL = {"num_groups": 8, "group_size": 8}


def test_interpolation_weights_by_inverse_squared_distance():
    centers = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [0.0, 2, 0], [5.0, 5, 5]]])
    features = torch.tensor([[[1.0], [2.0], [4.0], [100.0]]])
    points = torch.tensor([[[0.0, 0, 0], [0.5, 0, 0], [0.0, 0.5, 0]]])
    out = interpolate_features(points, centers, features)
    assert out.shape == (1, 3, 1)
    assert out[0, 0, 0] == pytest.approx(1.0, abs=1e-5)  # a point on a center takes its feature
    w_half = torch.tensor([4.0, 4.0, 1 / 4.25])  # halfway between centers 0 and 1
    expected_half = (w_half * torch.tensor([1.0, 2.0, 4.0])).sum() / w_half.sum()
    assert out[0, 1, 0] == pytest.approx(expected_half.item(), rel=1e-5)
    w = torch.tensor([1 / 0.25, 1 / 1.25, 1 / 2.25])  # centers 0, 1, 2 at d² .25, 1.25, 2.25
    expected = (w * torch.tensor([1.0, 2.0, 4.0])).sum() / w.sum()
    assert out[0, 2, 0] == pytest.approx(expected.item(), rel=1e-5)  # far center 3 not used


def test_interpolation_with_fewer_centers_than_k_and_bad_shapes(generator):
    points = torch.rand(2, 10, 3, generator=generator)
    centers = torch.rand(2, 2, 3, generator=generator)
    features = torch.rand(2, 2, 5, generator=generator)
    assert interpolate_features(points, centers, features).shape == (2, 10, 5)
    with pytest.raises(ValueError, match="features"):
        interpolate_features(points, centers, features[:, :1])
    with pytest.raises(ValueError, match="points"):
        interpolate_features(points[..., :2], centers, features)


def test_feature_propagation_is_channel_first(generator):
    layer = FeaturePropagation(5, [16, 8])
    out = layer(
        torch.rand(2, 10, 3, generator=generator),
        torch.rand(2, 4, 3, generator=generator),
        torch.rand(2, 4, 5, generator=generator),
    )
    assert out.shape == (2, 8, 10)


@pytest.mark.parametrize("name", TINY)
def test_tiny_presets_forward_backward(name, generator):
    model = map3d.create_model(name, task="partseg", **SMALL)
    points = torch.rand(2, 64, 3, generator=generator) * 2 - 1
    category = torch.tensor([0, 15])
    logits = model(points, category)
    assert logits.shape == (2, 64, 50)
    torch.nn.functional.cross_entropy(logits.transpose(1, 2), torch.zeros(2, 64).long()).backward()
    assert model.encoder.patch_embed.first_conv[0].weight.grad is not None
    assert model.category_embed[0].weight.grad[0].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(points, category), model(points, category))


def test_paper_preset_layout():
    config = map3d.models.build_config("hybridmt3d_s", task="partseg")
    assert config.resolved_feature_blocks() == [4, 10, 15]  # 16 blocks: "MMMT" x 4
    assert config.resolved_propagation_widths() == [1536, 1024]  # Point-MAE's at C=384
    assert config.resolved_head_widths() == [512, 256]
    pointmae = map3d.models.build_config("pointmae_s", task="partseg")
    assert pointmae.resolved_feature_blocks() == [3, 7, 11]  # Point-MAE's fetch_idx


def test_config_round_trip_and_validation():
    model = map3d.create_model(
        "pointmae_tiny", task="partseg", num_parts=7, num_categories=3, **SMALL
    )
    rebuilt = map3d.create_model(
        "pointmae_tiny", task="partseg", **dataclasses.asdict(model.config)
    )
    assert rebuilt.config == model.config
    assert rebuilt(torch.rand(1, 64, 3), torch.tensor([2])).shape == (1, 64, 7)
    with pytest.raises(ValueError, match="feature_blocks"):
        map3d.create_model("pointmae_tiny", task="partseg", feature_blocks=[5])
    with pytest.raises(ValueError, match="category"):
        model(torch.rand(1, 64, 3), torch.tensor([[0]]))


def test_loads_a_pretrained_encoder():
    pretrainer = map3d.create_model("pointmae_tiny", task="pretrain")
    segmenter = map3d.create_model("pointmae_tiny", task="partseg", **SMALL)
    missing, unexpected = load_pretrained(segmenter, pretrainer.state_dict())
    assert missing == [] and unexpected == []
    for key, value in pretrainer.state_dict().items():
        if key.startswith("encoder."):
            assert torch.equal(segmenter.state_dict()[key], value)
