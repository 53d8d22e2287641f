import math

import pytest
import torch

from map3d.data.transforms import RotateY, build_transforms


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_rotate_y_matches_reference_convention():
    # pc @ R with R = [[c,0,s],[0,1,0],[-s,0,c]]: x-axis maps to (c, 0, s), y untouched.
    points = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = RotateY()(points, gen())
    angle = float(2 * math.pi * torch.rand((), generator=gen()))
    expected = torch.tensor([[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_rotate_y_rotates_normals_and_keeps_norms():
    points = torch.randn(64, 6, generator=gen(1))
    out = RotateY()(points, gen())
    assert torch.allclose(out[:, :3].norm(dim=1), points[:, :3].norm(dim=1), atol=1e-5)
    assert torch.allclose(out[:, 3:].norm(dim=1), points[:, 3:].norm(dim=1), atol=1e-5)
    assert torch.equal(out[:, 1], points[:, 1]) and torch.equal(out[:, 4], points[:, 4])


def test_scale_translate_and_scale_shift_ranges():
    ones = torch.ones(16, 3)
    for seed in range(20):
        out = build_transforms(["scale_translate"])(ones, gen(seed))
        assert ((out >= 2 / 3 - 0.2 - 1e-6) & (out <= 1.5 + 0.2 + 1e-6)).all()
        iso = build_transforms(["scale_shift"])(torch.zeros(4, 3), gen(seed))
        assert (iso.abs() <= 0.1 + 1e-6).all()


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
    pipeline = build_transforms(["rotate_y", "scale_translate", "subsample"])
    big = torch.randn(2048, 3, generator=gen(3))
    assert torch.equal(pipeline(big, gen(7)), pipeline(big, gen(7)))
    assert not torch.equal(pipeline(big, gen(7)), pipeline(big, gen(8)))


def test_build_transforms_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="unknown transform 'flip'"):
        build_transforms(["flip"])
    with pytest.raises(ValueError, match="bad arguments for 'rotate_y'"):
        build_transforms([{"rotate_y": {"axis": 2}}])
    with pytest.raises(ValueError, match="unknown transforms"):
        build_transforms([], options={"jitter": {}})
