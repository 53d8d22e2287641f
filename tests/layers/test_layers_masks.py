import pytest
import torch

from map3d.layers import (
    num_masked_tokens,
    random_masking,
    region_causal_mask,
    sample_mask_ratio,
)


@pytest.mark.parametrize("length,regions", [(64, 8), (64, 1), (64, 64), (12, 3), (16, 4)])
def test_region_causal_mask_structure(length, regions):
    mask = region_causal_mask(length, regions)
    assert mask.shape == (length, length) and mask.dtype == torch.bool
    size = length // regions
    i = torch.arange(length)
    expected = (i[None, :] // size) <= (i[:, None] // size)
    assert torch.equal(mask, expected)
    # every token sees its whole region, nothing of later regions
    for r in range(regions):
        rows = mask[r * size : (r + 1) * size]
        assert rows[:, : (r + 1) * size].all()
        assert not rows[:, (r + 1) * size :].any()


def test_region_causal_mask_extremes():
    assert region_causal_mask(10, 1).all()  # MAE: full attention
    assert torch.equal(region_causal_mask(10, 10), torch.ones(10, 10).tril().bool())  # AR


@pytest.mark.parametrize("length,regions", [(64, 7), (10, 4), (8, 0)])
def test_region_count_must_divide_length(length, regions):
    with pytest.raises(ValueError, match="divisible"):
        region_causal_mask(length, regions)


def test_random_masking_count_and_independence(generator):
    mask = random_masking(64, 32, 19, generator=generator)
    assert mask.shape == (64, 32) and mask.dtype == torch.bool
    assert (mask.sum(1) == 19).all()
    assert mask.unique(dim=0).shape[0] == 64  # every sample has its own mask
    # each position is masked about 19/32 of the time
    frequency = random_masking(2000, 32, 19, generator=generator).float().mean(0)
    assert (frequency - 19 / 32).abs().max() < 0.06


def test_random_masking_is_reproducible():
    a = random_masking(4, 16, 9, generator=torch.Generator().manual_seed(3))
    b = random_masking(4, 16, 9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_num_masked_tokens():
    assert num_masked_tokens(0.6, 64) == 38  # floor, as Point-MAE
    assert num_masked_tokens(0.01, 64) == 1
    assert num_masked_tokens(0.999, 64) == 63


def test_mask_ratio_sampling(generator):
    assert sample_mask_ratio(0.6, generator=generator) == 0.6
    draws = torch.tensor([sample_mask_ratio((0.3, 0.7), generator=generator) for _ in range(2000)])
    assert draws.min() >= 0.3 and draws.max() <= 0.7
    assert abs(draws.mean().item() - 0.5) < 0.01
    assert draws.std() > 0.08  # spread over the range, not a constant
    a = sample_mask_ratio((0.3, 0.7), generator=torch.Generator().manual_seed(1))
    b = sample_mask_ratio((0.3, 0.7), generator=torch.Generator().manual_seed(1))
    assert a == b


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, (0.7, 0.3), (0.2, 1.0), (0.1,)])
def test_bad_mask_ratio(bad):
    with pytest.raises(ValueError, match="mask_ratio"):
        sample_mask_ratio(bad)
