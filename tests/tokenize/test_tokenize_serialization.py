import pytest
import torch

from map3d.tokenize import SERIALIZATIONS, hilbert_encode, inverse_permutation, serialize
from map3d.tokenize.serialization import z_order_encode

CURVES = [s for s in SERIALIZATIONS if s != "none"]


def full_grid(depth):
    n = 1 << depth
    axes = torch.meshgrid(*[torch.arange(n)] * 3, indexing="ij")
    return torch.stack(axes, -1).reshape(-1, 3)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_hilbert_is_a_bijection_with_unit_steps(depth):
    grid = full_grid(depth)
    codes = hilbert_encode(grid, depth)
    assert codes.unique().numel() == grid.shape[0]
    walk = grid[codes.argsort()]
    assert (walk[1:] - walk[:-1]).abs().sum(-1).max().item() == 1


def test_z_order_interleaves_bits():
    assert z_order_encode(torch.tensor([[1, 0, 0]]), 1).item() == 0b100
    assert z_order_encode(torch.tensor([[0, 1, 1]]), 1).item() == 0b011
    assert z_order_encode(torch.tensor([[2, 0, 0]]), 2).item() == 0b100000
    grid = full_grid(3)
    assert z_order_encode(grid, 3).unique().numel() == grid.shape[0]


@pytest.mark.parametrize("method", SERIALIZATIONS)
def test_permutation_and_inverse_round_trip(method, generator):
    centers = torch.rand(3, 64, 3, generator=generator)
    order, inverse = serialize(centers, method)
    assert order.dtype == inverse.dtype == torch.int64
    assert order.shape == inverse.shape == (3, 64)
    assert torch.equal(order.sort(dim=1).values, torch.arange(64).expand(3, -1))
    serialized = centers.gather(1, order[..., None].expand(-1, -1, 3))
    restored = serialized.gather(1, inverse[..., None].expand(-1, -1, 3))
    assert torch.equal(restored, centers)
    assert torch.equal(inverse_permutation(inverse), order)


def mean_step(points):
    return (points[:, 1:] - points[:, :-1]).norm(dim=-1).mean().item()


@pytest.mark.parametrize("method", CURVES)
def test_curve_neighbours_are_close_in_space(method, generator):
    centers = torch.rand(4, 256, 3, generator=generator)
    order, _ = serialize(centers, method)
    along_curve = mean_step(centers.gather(1, order[..., None].expand(-1, -1, 3)))
    shuffled = torch.rand(4, 256, generator=generator).argsort(1)
    random_order = mean_step(centers.gather(1, shuffled[..., None].expand(-1, -1, 3)))
    assert along_curve < 0.4 * random_order


def test_transposed_variant_differs_and_none_is_identity(generator):
    centers = torch.rand(2, 64, 3, generator=generator)
    assert not torch.equal(serialize(centers, "hilbert")[0], serialize(centers, "hilbert-trans")[0])
    assert not torch.equal(serialize(centers, "z")[0], serialize(centers, "z-trans")[0])
    order, inverse = serialize(centers, "none")
    assert torch.equal(order, torch.arange(64).expand(2, -1)) and torch.equal(order, inverse)


def test_batched_serialization_matches_per_sample(generator):
    centers = torch.rand(3, 32, 3, generator=generator)
    batched, _ = serialize(centers, "hilbert")
    for b in range(3):
        assert torch.equal(serialize(centers[b : b + 1], "hilbert")[0][0], batched[b])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown serialization"):
        serialize(torch.rand(1, 8, 3), "peano")
    with pytest.raises(ValueError, match=r"\(B,G,3\)"):
        serialize(torch.rand(8, 3), "z")
