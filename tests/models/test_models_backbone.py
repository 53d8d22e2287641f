import pytest
import torch

from map3d.models import BackboneConfig, HybridBackbone
from map3d.models.backbone import AttentionBlock, MambaBlock
from map3d.models.points.presets import hybridmt3d_s


def test_hybridmt3d_pattern_is_three_mamba_then_one_transformer():
    config = hybridmt3d_s().backbone
    assert config.pattern == "MMMT" * 4 and config.dim == 384 and config.num_heads == 6
    kinds = ["T" if (i + 1) % 4 == 0 else "M" for i in range(16)]
    assert "".join(kinds) == config.pattern


def test_block_types_follow_the_pattern():
    backbone = HybridBackbone(BackboneConfig(dim=16, num_heads=2, pattern="MTMMT", d_state=2))
    types = [type(b) for b in backbone.blocks]
    assert types == [MambaBlock, AttentionBlock, MambaBlock, MambaBlock, AttentionBlock]


def test_modality_agnostic_use_without_centers(generator):
    """The image path: no local aggregation, no centers, no LNP parameters."""
    config = BackboneConfig(dim=16, num_heads=2, pattern="MT", d_state=2, local_aggregation=False)
    backbone = HybridBackbone(config)
    assert not any("lnp" in name for name, _ in backbone.named_parameters())
    x, pos = torch.randn(2, 9, 16, generator=generator), torch.randn(2, 9, 16, generator=generator)
    assert backbone(x, pos).shape == (2, 9, 16)


def test_prefix_tokens_and_centers(generator):
    backbone = HybridBackbone(BackboneConfig(dim=16, num_heads=2, pattern="MT", d_state=2))
    x, pos = torch.randn(2, 9, 16, generator=generator), torch.randn(2, 9, 16, generator=generator)
    centers = torch.rand(2, 8, 3, generator=generator)  # the first token is a prefix token
    assert backbone(x, pos, centers).shape == (2, 9, 16)
    with pytest.raises(ValueError, match="centers"):
        backbone(x, pos, torch.rand(2, 10, 3))


def test_attention_mask_needs_attention_blocks():
    backbone = HybridBackbone(BackboneConfig(dim=16, num_heads=2, pattern="MT", d_state=2))
    x = torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match="Mamba block"):
        backbone(x, x, None, torch.ones(4, 4, dtype=torch.bool))


def test_bad_shapes():
    backbone = HybridBackbone(BackboneConfig(dim=16, num_heads=2, pattern="T"))
    with pytest.raises(ValueError, match=r"\(B,L,16\)"):
        backbone(torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="divisible"):
        BackboneConfig(dim=10, num_heads=3)


@pytest.mark.parametrize(
    "options",
    [
        {"attention_block": "release"},
        {"bimamba_init": "release"},
        {"lnp_std": "batch", "bimamba_flip": "channel", "bimamba_divide_out": True},
    ],
)
def test_release_options_run(options, generator):
    config = BackboneConfig(dim=16, num_heads=2, pattern="MT", d_state=2, **options)
    backbone = HybridBackbone(config)
    x = torch.randn(2, 9, 16, generator=generator, requires_grad=True)
    backbone(x, torch.zeros_like(x), torch.rand(2, 8, 3, generator=generator)).sum().backward()
    assert torch.isfinite(x.grad).all()
    if options.get("bimamba_init") == "release":
        assert backbone.blocks[0].mixer.dt_proj.bias.eq(0).all()
    else:
        assert backbone.blocks[0].mixer.dt_proj.bias.ne(0).all()


def test_bad_options():
    with pytest.raises(ValueError, match="attention_block"):
        BackboneConfig(attention_block="post")
    with pytest.raises(ValueError, match="bimamba_flip"):
        BackboneConfig(bimamba_flip="both")


def test_drop_path_schedules():
    from map3d.models.backbone import drop_path_rates

    linear = drop_path_rates(BackboneConfig(drop_path_rate=0.15))
    assert len(linear) == 16 and linear[0] == 0 and abs(linear[-1] - 0.15) < 1e-7
    release = drop_path_rates(BackboneConfig(drop_path_rate=0.11, drop_path_schedule="release"))
    m_rates = [release[i] for i in range(16) if i % 4 != 3]
    assert [release[i] for i in (3, 7, 11, 15)] == m_rates[:4]
    assert abs(m_rates[-1] - 0.11) < 1e-7


def test_forward_features_match_calling_the_blocks_one_by_one(generator):
    """Shared LNP neighbours (computed once) give what each block computing its own gives."""
    torch.manual_seed(0)
    backbone = HybridBackbone(BackboneConfig(dim=16, num_heads=2, pattern="MMT", d_state=2)).eval()
    x, pos = torch.randn(2, 9, 16, generator=generator), torch.randn(2, 9, 16, generator=generator)
    centers = torch.rand(2, 8, 3, generator=generator)
    features = backbone.forward_features(x, pos, centers)
    h = x
    for block, expected in zip(backbone.blocks, features):
        h = block(h + pos, centers)
        assert torch.allclose(h, expected, atol=1e-6)
    assert torch.allclose(backbone(x, pos, centers), backbone.norm(features[-1]))
