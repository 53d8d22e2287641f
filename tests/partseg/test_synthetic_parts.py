"""The built-in part-labelled synthetic set: format, determinism, labels, geometry."""

import pytest
import torch

from map3d.data.synthetic_parts import (
    BUILDERS,
    PART_NAMES,
    SyntheticPartsDataset,
    box,
    frustum,
    sample_shape,
)


def test_items_have_the_shapenetpart_format():
    dataset = SyntheticPartsDataset("train", num_samples=10, num_points=256)
    assert len(dataset) == 10
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["points"].shape == (256, 3) and item["points"].dtype == torch.float32
        assert item["seg"].shape == (256,) and item["seg"].dtype == torch.int64
        parts = dataset.category_parts[item["category"]]
        assert set(item["seg"].tolist()) <= set(parts)
        assert dataset.category_names[item["category"]] in BUILDERS
        radius = item["points"].norm(dim=1).max()
        assert 0.95 < radius < 1.1  # unit sphere, then jitter


def test_categories_cycle_and_every_part_occurs():
    dataset = SyntheticPartsDataset("train", num_samples=40, num_points=512)
    seen_parts = set()
    categories = [dataset[i]["category"] for i in range(len(dataset))]
    for i in range(len(dataset)):
        seen_parts |= set(dataset[i]["seg"].tolist())
    names = [dataset.category_names[c] for c in categories[: len(BUILDERS)]]
    assert names == list(BUILDERS)
    expected = {
        dataset.category_parts[dataset.category_names.index(name)][i]
        for name, parts in PART_NAMES.items()
        for i in range(len(parts))
    }
    assert seen_parts == expected


def test_deterministic_from_seed_split_and_epoch():
    first = SyntheticPartsDataset("train", num_samples=4, num_points=128, seed=3)
    second = SyntheticPartsDataset("train", num_samples=4, num_points=128, seed=3)
    assert torch.equal(first[2]["points"], second[2]["points"])
    assert torch.equal(first[2]["seg"], second[2]["seg"])
    other_seed = SyntheticPartsDataset("train", num_samples=4, num_points=128, seed=4)
    assert not torch.equal(first[2]["points"], other_seed[2]["points"])
    test_split = SyntheticPartsDataset("test", num_samples=4, num_points=128, seed=3)
    assert not torch.equal(first[2]["points"], test_split[2]["points"])
    first.set_epoch(1)  # fresh surface sample of the same shape
    resampled = first[2]["points"]
    assert not torch.equal(resampled, second[2]["points"])
    assert (resampled.mean(0) - second[2]["points"].mean(0)).abs().max() < 0.1


def test_surfaces_sample_on_their_geometry(generator):
    points = box((0, 0, 0), (2.0, 1.0, 0.5))[1](500, generator)
    on_face = (points.abs() - torch.tensor([1.0, 0.5, 0.25])).abs().min(dim=1).values
    assert on_face.max() < 1e-6
    cylinder = frustum((0, 0, 0), 0.5, 0.5, 2.0, axis=2)[1](500, generator)
    assert torch.allclose(cylinder[:, :2].norm(dim=1), torch.full((500,), 0.5), atol=1e-5)
    assert cylinder[:, 2].abs().max() <= 1.0 + 1e-6
    cone = frustum((0, 0, 0), 0.6, 0.2, 1.0)[1](2000, generator)
    radius = cone[:, [0, 2]].norm(dim=1)
    assert torch.allclose(radius, 0.4 - 0.4 * cone[:, 1], atol=1e-4)  # 0.6 at y=-0.5, 0.2 at 0.5
    assert (cone[:, 1] < 0).float().mean() > 0.55  # more area near the wide end


def test_sample_shape_allocates_by_area(generator):
    big, small = box((0, 0, 0), (2, 2, 2)), box((5, 0, 0), (1, 1, 1))
    points, labels = sample_shape([(big, 0), (small, 1)], 5000, generator)
    assert points.shape == (5000, 3)
    assert abs((labels == 0).float().mean().item() - 0.8) < 0.03
    assert (points[labels == 1, 0] > 4).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SyntheticPartsDataset("validation")
    with pytest.raises(ValueError, match="categories"):
        SyntheticPartsDataset("train", categories=["Bag"])
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticPartsDataset("train", num_samples=0)
