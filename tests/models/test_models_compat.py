"""Release compatibility: decoder order, block masking, head pooling, FPS rule, `compat`."""

import dataclasses

import pytest
import torch

import map3d
from map3d.layers import block_masking
from map3d.models import build_config
from map3d.models.compat import RELEASES, detect_release
from map3d.models.release import release_pattern
from map3d.ops import gather
from map3d.tokenize import PointGrouper
from tests.models.conftest import SMALL, SMALL_PRETRAIN
from tests.models.test_models_release import release_pretrain_state, vit_block


def _pretrainer(**overrides):
    torch.manual_seed(0)
    return map3d.create_model("hybridmt3d_tiny", task="pretrain", **{**SMALL_PRETRAIN, **overrides})


def _loss(model, points):
    return model.eval()(points, torch.Generator().manual_seed(3)).loss


def test_decoder_orders_agree_under_full_attention_and_differ_under_regions(points):
    serialized = _pretrainer(num_regions=1)
    release = _pretrainer(num_regions=1, decoder_order="release")
    release.load_state_dict(serialized.state_dict())
    assert torch.allclose(_loss(serialized, points), _loss(release, points), atol=1e-6)
    serialized = _pretrainer()
    release = _pretrainer(decoder_order="release")
    release.load_state_dict(serialized.state_dict())
    assert not torch.allclose(_loss(serialized, points), _loss(release, points))


def test_release_decoder_runs_over_visible_then_mask_tokens():
    decoder = _pretrainer(decoder_order="release").decoder.eval()
    b, g, v, c = 2, 16, 6, decoder.dim
    gen = torch.Generator().manual_seed(0)
    order = torch.stack([torch.randperm(g, generator=gen) for _ in range(b)])
    visible = torch.randn(b, v, c, generator=gen)
    centers = torch.randn(b, g, 3, generator=gen)
    out = decoder(visible, order[:, :v], centers, order)  # (B,G,C) in serialized order
    sequence = torch.cat([visible, decoder.mask_token.expand(b, g - v, -1)], dim=1)
    expected = decoder.blocks(
        sequence, decoder.pos_embed(gather(centers, order)), None, decoder.attention_mask(g, None)
    )
    assert torch.allclose(gather(out, order), expected, atol=1e-6)


def test_block_masking_masks_the_nearest_tokens_of_one_center():
    gen = torch.Generator().manual_seed(0)
    centers = torch.rand(3, 32, 3, generator=gen)
    mask = block_masking(centers, 12, generator=gen)
    assert mask.shape == (3, 32) and (mask.sum(1) == 12).all()
    for cloud, masked in zip(centers, mask):
        nearest = torch.cdist(cloud, cloud).argsort(dim=1)[:, :12]
        blobs = torch.zeros(32, 32, dtype=torch.bool).scatter_(1, nearest, True)
        assert (blobs == masked).all(dim=1).any()


def test_block_mask_type_trains(points):
    model = _pretrainer(mask_type="block")
    model(points, torch.Generator().manual_seed(0)).loss.backward()
    with pytest.raises(ValueError, match="mask_type"):
        _pretrainer(mask_type="blocks")


def _classifier(pooling, **overrides):
    torch.manual_seed(0)
    model = map3d.create_model(
        "hybridmt3d_tiny", task="classify", num_classes=5, head_pooling=pooling,
        **{**SMALL, **overrides},
    )  # fmt: skip
    return model.eval()


@pytest.mark.parametrize("pooling", ["cls_max_mean", "cls_max", "release_exact"])
def test_head_pooling(pooling, generator):
    model = _classifier(pooling)
    h = torch.randn(3, 17, model.encoder.dim, generator=generator)
    cls, tokens = h[:, 0], h[:, 1:]
    expected = {
        "cls_max_mean": tokens.amax(1) + tokens.mean(1),
        "cls_max": tokens.amax(1),
        "release_exact": tokens.amax(1) + tokens.mean(1)[0],
    }[pooling]
    assert torch.equal(model.pool(h), torch.cat([cls, expected], dim=-1))


def test_release_exact_pooling_makes_logits_depend_on_batch_mates(generator):
    clouds = torch.rand(3, 128, 3, generator=generator)
    for pooling, depends in (("cls_max_mean", False), ("release_exact", True)):
        model = _classifier(pooling, lnp_std="sample")
        with torch.no_grad():
            alone = model(clouds[1:2])
            in_batch = model(clouds)[1:2]
        assert torch.allclose(alone, in_batch, atol=1e-5) != depends


def test_release_fps_rule_never_picks_points_near_the_origin():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(2, 64, 3, generator=gen) + 1.0
    points[:, 10:20] = 0.01 * torch.rand(2, 10, 3, generator=gen)  # |p|^2 <= 3e-4
    ours = PointGrouper(16, 4, "none")(points).centers
    release = PointGrouper(16, 4, "none", fps_rule="release")(points).centers
    assert (ours.square().sum(-1) <= 1e-3).any(dim=1).all()  # far from the rest: picked
    assert not (release.square().sum(-1) <= 1e-3).any()


@pytest.mark.parametrize("compat", sorted(RELEASES))
def test_compat_sets_every_release_field_and_explicit_overrides_win(compat):
    release = RELEASES[compat]
    preset = release.preset.replace("_s", "_tiny")
    for task, small in (("pretrain", {**SMALL_PRETRAIN, "num_regions": 4}), ("classify", SMALL)):
        config = build_config(preset, task, compat=compat, **small)
        flat = {**dataclasses.asdict(config), **dataclasses.asdict(config.encoder.backbone)}
        expected = {**release.overrides(task), **small}
        assert {k: flat[k] for k in expected} == expected
        assert config.compat == compat
        rebuilt = build_config(preset, task, **dataclasses.asdict(config))
        assert rebuilt == config
    config = build_config(preset, "classify", compat=compat, serialization="hilbert")
    assert config.serialization == "hilbert"
    with pytest.raises(ValueError, match="compat"):
        build_config(preset, "classify", compat="pointbert")


def test_detect_release_and_pattern():
    state = release_pretrain_state()
    assert detect_release({"base_model": state}) == "pointmap"
    assert release_pattern({"base_model": state}) == "MMMT"
    mamba = {k: v for k, v in state.items() if "blocks_vit" not in k}
    assert detect_release(mamba) == "mamba3d" and release_pattern(mamba) == "MMM"
    encoder = {k: v for k, v in state.items() if k.startswith("module.MAE_encoder.encoder.")}
    mae = {**encoder, **{k: torch.zeros(v) for k, v in vit_block("blocks.blocks.0.").items()}}
    assert detect_release(mae) == "pointmae" and release_pattern(mae) == "T"
    assert detect_release({"encoder.patch_embed.x": torch.zeros(1)}) is None


def test_load_pretrained_converts_a_release_file_and_warns_without_its_compat(tmp_path, caplog):
    from map3d.models import load_pretrained

    path = tmp_path / "release.pth"
    torch.save({"base_model": release_pretrain_state()}, path)
    tiny = {"dim": 16, "num_heads": 2, "d_state": 4, **SMALL}
    model = map3d.create_model("hybridmt3d_tiny", task="classify", compat="pointmap", **tiny)
    caplog.set_level("INFO", logger="map3d")
    missing, unexpected = load_pretrained(model, path)
    assert not missing and not unexpected and "found a PointMAP" in caplog.text
    assert "not built with compat" not in caplog.text
    load_pretrained(map3d.create_model("hybridmt3d_tiny", task="classify", **tiny), path)
    assert "not built with compat='pointmap'" in caplog.text
