import pytest
import torch

from map3d.data.transforms import build_transforms


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_subsample_keeps_per_point_keys_aligned():
    points = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    sample = {"points": points, "seg": torch.arange(10), "category": 3}
    out = build_transforms([{"subsample": {"num_points": 4}}])(sample, gen())
    assert out["points"].shape == (4, 3) and out["category"] == 3
    assert torch.equal(out["points"][:, 0] / 3, out["seg"].float())
    assert len(set(out["seg"].tolist())) == 4
    with pytest.raises(ValueError, match="subsample"):
        build_transforms(["subsample"], options={"subsample": {"num_points": 11}})(sample, gen())


def test_normalize_unit_sphere_and_determinism():
    points = torch.randn(100, 3, generator=gen(2)) * 5 + 3
    out = build_transforms(["normalize"])(points, gen())
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-5)
    assert out.norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)
    pipeline = build_transforms(["normalize", "subsample"])
    big = torch.randn(2048, 3, generator=gen(3))
    assert torch.equal(pipeline(big, gen(7)), pipeline(big, gen(7)))
    assert not torch.equal(pipeline(big, gen(7)), pipeline(big, gen(8)))


def test_build_transforms_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="unknown transform 'flip'"):
        build_transforms(["flip"])
    with pytest.raises(ValueError, match="bad arguments for 'subsample'"):
        build_transforms([{"subsample": {"axis": 2}}])
    with pytest.raises(ValueError, match="unknown transform 'rotate_y'"):  # batch-time only
        build_transforms(["rotate_y"])
    with pytest.raises(ValueError, match="unknown transforms"):
        build_transforms([], options={"jitter": {}})
