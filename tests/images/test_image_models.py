"""2D MAP through the shared core: presets, region structure, masked-only loss, classifier."""

import dataclasses

import pytest
import torch

import map3d
from map3d.models import MAPPretrainer, build_config, load_pretrained
from map3d.models.images import (
    ImageClassifier,
    ImagePosition,
    ImageReconstruction,
    sincos_position_2d,
)
from map3d.tokenize.image import patch_centers

IMAGE_PRESETS = map3d.models.list_models("images")
NANO = "map_nano_patch4_16"


def _shrunk(name, task, **extra):
    """Any preset at a CPU-test size: C=32, one Mamba and one attention block, 4 tokens."""
    return map3d.create_model(
        name,
        task=task,
        dim=32,
        num_heads=2,
        d_state=4,
        pattern="MT",
        image_size=16,
        patch_size=8,
        **extra,
    )


def test_release_presets_match_the_2d_release():
    tiny = build_config("map_tiny_patch16_224", "pretrain").encoder
    assert tiny.dim == 192 and tiny.patch_size == 16 and tiny.image_size == 224
    assert tiny.backbone.pattern == "MMMT" * 8  # 24 Mamba blocks, attention after every third
    assert tiny.backbone.pattern.count("M") == 24 and tiny.backbone.num_heads == 12
    assert not tiny.backbone.local_aggregation
    sizes = {n: build_config(n, "pretrain").encoder for n in IMAGE_PRESETS}
    assert sizes["map_small_patch16_224"].dim == 384
    assert sizes["map_base_patch16_224"].dim == 768
    assert sizes["map_large_patch16_224"].backbone.pattern.count("M") == 48
    assert sizes["map_huge_patch16_224"].backbone.pattern.count("M") == 36
    pretrain = build_config("map_tiny_patch16_224", "pretrain")
    assert pretrain.mask_ratio == (0.3, 0.7) and pretrain.mask_ratio_std == 0.25
    assert pretrain.regions == 14 and pretrain.norm_pix


@pytest.mark.parametrize("name", IMAGE_PRESETS)
def test_image_presets_forward_backward(name, generator):
    model = _shrunk(name, "pretrain")
    images = torch.rand(2, 3, 16, 16, generator=generator)
    out = model(images, generator=generator)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.encoder.patch_embed.proj.weight.grad is not None
    classifier = _shrunk(name, "classify", num_classes=5)
    logits = classifier(images)
    assert logits.shape == (2, 5)
    logits.sum().backward()


def test_nano_pretrain_and_classify_and_rebuild(generator):
    model = map3d.create_model(NANO, task="pretrain")
    assert isinstance(model, MAPPretrainer)
    images = torch.rand(3, 3, 16, 16, generator=generator)
    out = model(images, generator=generator)
    assert 0.3 <= out.mask_ratio <= 0.7 and 1 <= out.num_masked < 16
    rebuilt = map3d.create_model(NANO, task="pretrain", **dataclasses.asdict(model.config))
    assert rebuilt.config == model.config
    classifier = map3d.create_model(NANO, task="classify", num_classes=10)
    assert isinstance(classifier, ImageClassifier)
    missing, unexpected = load_pretrained(classifier, model.state_dict())
    assert not missing and not unexpected
    with pytest.raises(ValueError, match="image_size"):
        classifier(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("image_size,grid", [((8, 16), (2, 4)), ((16, 8), (4, 2))])
def test_decoder_regions_are_image_rows_for_non_square_grids(image_size, grid, generator):
    model = map3d.create_model(NANO, task="pretrain", image_size=image_size)
    rows, cols = grid
    length = rows * cols
    assert model.decoder.num_regions == rows
    allowed = model.decoder.attention_mask(length, torch.device("cpu"))
    row_of = patch_centers(grid)[:, 0].floor().long()  # raster order: token i is in row i // cols
    assert torch.equal(row_of, torch.arange(length) // cols)
    assert torch.equal(allowed, row_of[:, None] >= row_of[None, :])
    out = model(torch.rand(2, 3, *image_size, generator=generator), generator=generator)
    assert torch.isfinite(out.loss)


def test_mae_baseline_and_bad_region_counts():
    mae = map3d.create_model(NANO, task="pretrain", num_regions=1)
    assert mae.decoder.attention_mask(16, torch.device("cpu")).all()
    ar = map3d.create_model(NANO, task="pretrain", num_regions=16)
    assert torch.equal(
        ar.decoder.attention_mask(16, torch.device("cpu")), torch.ones(16, 16).tril().bool()
    )
    with pytest.raises(ValueError, match="num_regions=3"):
        map3d.create_model(NANO, task="pretrain", num_regions=3)


def test_loss_depends_only_on_masked_patches(generator):
    model = map3d.create_model(NANO, task="pretrain").eval()
    images = torch.rand(2, 3, 16, 16, generator=generator)
    rec = model.reconstruct(images, generator=torch.Generator().manual_seed(3))
    assert isinstance(rec, ImageReconstruction)
    visible = ~rec.mask  # (B,L)
    reference = model(images, generator=torch.Generator().manual_seed(3)).loss
    original_target = model.objective.target

    def perturbed(where):
        def target(tokens):
            return original_target(tokens) + 100.0 * where[..., None]

        return target

    model.objective.target = perturbed(visible.float())
    unchanged = model(images, generator=torch.Generator().manual_seed(3)).loss
    model.objective.target = perturbed(rec.mask.float())
    changed = model(images, generator=torch.Generator().manual_seed(3)).loss
    torch.testing.assert_close(unchanged, reference)
    assert changed > reference + 1.0


def test_reconstruction_keeps_visible_pixels(generator):
    model = map3d.create_model(NANO, task="pretrain").eval()
    images = torch.rand(2, 3, 16, 16, generator=generator)
    rec = model.reconstruct(images, generator=generator)
    assert rec.pred_images.shape == images.shape and torch.equal(rec.images, images)
    keep = (~rec.mask).view(2, 4, 4).repeat_interleave(4, 1).repeat_interleave(4, 2)
    assert torch.equal(
        rec.pred_images[keep[:, None].expand_as(images)], images[keep[:, None].expand_as(images)]
    )


def test_position_embeddings(generator):
    centers = patch_centers((2, 3))[None].expand(2, -1, -1)
    learned = ImagePosition(8, (2, 3), "learned")
    torch.testing.assert_close(learned(centers)[0], learned.table)
    torch.testing.assert_close(learned(centers[:, [4, 1]])[1], learned.table[[4, 1]])
    sincos = sincos_position_2d(centers, 8)
    assert sincos.shape == (2, 6, 8)
    # row 0, col 0: sin(0) = 0, cos(0) = 1 on both axes
    torch.testing.assert_close(sincos[0, 0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    model = map3d.create_model(NANO, task="classify", num_classes=3, pos_embed="sincos")
    assert model(torch.rand(1, 3, 16, 16, generator=generator)).shape == (1, 3)
    with pytest.raises(ValueError, match="pos_embed"):
        map3d.create_model(NANO, task="classify", pos_embed="rope")
