"""Image patchify/unpatchify, patch centers and the normalized-pixel target."""

import pytest
import torch

from map3d.tokenize.image import (
    ImagePatchifier,
    normalized_pixel_target,
    patch_centers,
    patchify,
    unpatchify,
)
from map3d.tokenize.tokens import PatchTokens


@pytest.mark.parametrize("shape,p", [((2, 3, 8, 12), 4), ((1, 1, 6, 6), 3), ((3, 3, 16, 16), 16)])
def test_patchify_unpatchify_round_trip(shape, p, generator):
    images = torch.rand(shape, generator=generator)
    patches = patchify(images, p)
    grid = (shape[2] // p, shape[3] // p)
    assert patches.shape == (shape[0], grid[0] * grid[1], p * p * shape[1])
    assert torch.equal(unpatchify(patches, p, grid), images)


def test_patchify_is_raster_order_with_channels_last_pixels(generator):
    images = torch.rand(2, 3, 8, 12, generator=generator)
    patches = patchify(images, 4)
    # token 4 = row 1, col 1 of a 2x3 grid
    expected = images[:, :, 4:8, 4:8].permute(0, 2, 3, 1).reshape(2, -1)
    assert torch.equal(patches[:, 4], expected)


def test_patchifier_tokens_and_centers():
    images = torch.zeros(2, 3, 8, 12)
    tokens = ImagePatchifier(4)(images)
    assert isinstance(tokens, PatchTokens)
    assert tokens.grid == (2, 3)
    assert tokens.centers.shape == (2, 6, 2)
    assert torch.equal(tokens.order[0], torch.arange(6))
    assert torch.equal(tokens.inverse[1], torch.arange(6))
    assert tokens.centers[0, 5].tolist() == [1.5, 2.5]
    assert torch.equal(patch_centers((2, 3))[3], torch.tensor([1.5, 0.5]))


def test_bad_sizes_raise_value_error():
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        patchify(torch.zeros(1, 3, 10, 8), 4)
    with pytest.raises(ValueError, match=r"\(B,C,H,W\)"):
        patchify(torch.zeros(3, 8, 8), 4)
    with pytest.raises(ValueError, match="grid"):
        unpatchify(torch.zeros(1, 5, 48), 4, (2, 3))


def test_normalized_pixel_target_is_standardized_per_patch(generator):
    patches = torch.rand(2, 6, 48, generator=generator) * 5 + 3
    target = normalized_pixel_target(patches)
    torch.testing.assert_close(target.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.std(-1), torch.ones(2, 6), atol=1e-4, rtol=0)
