"""Reference point ops (fps, knn, gather, chamfer) against brute-force loops, and input checks."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from map3d import ops

SIZES = [(1, 1, 1), (1, 7, 7), (2, 50, 8), (2, 70, 20)]  # (B, N, S or k)


def cloud(gen, *shape, dtype=torch.float32):
    return torch.rand(*shape, generator=gen, dtype=torch.float64).to(dtype)


def brute_dist2(a, b):
    """Squared distance between two points, one coordinate at a time."""
    return sum((float(a[c]) - float(b[c])) ** 2 for c in range(len(a)))


def min_dist2_to_set(points, chosen):
    """For each point (N,3), squared distance to the nearest chosen point."""
    return [min(brute_dist2(p, points[j]) for j in chosen) for p in points]


# --- fps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,N,S", SIZES)
def test_fps_matches_brute_force(generator, B, N, S):
    points = cloud(generator, B, N, 3)
    idx = ops.fps(points, S)
    assert idx.shape == (B, S) and idx.dtype == torch.int64
    for b in range(B):
        chosen = [0]
        for _ in range(1, S):
            d = min_dist2_to_set(points[b], chosen)
            for j in chosen:
                d[j] = -1.0
            chosen.append(max(range(N), key=lambda i: (d[i], -i)))
        assert idx[b].tolist() == chosen


def test_fps_properties_with_duplicates(generator):
    base = cloud(generator, 2, 6, 3)
    points = torch.cat([base, base, base[:, :3]], dim=1)  # 15 points, 6 distinct
    idx = ops.fps(points, 15)
    for b in range(2):
        row = idx[b].tolist()
        assert row[0] == 0
        assert sorted(row) == list(range(15))  # no repeats even among duplicates
        for i in range(1, 6):  # while distinct positions remain, each pick is the farthest
            d = min_dist2_to_set(points[b], row[:i])
            assert d[row[i]] == pytest.approx(max(d), abs=1e-6) and d[row[i]] > 0


def test_fps_random_start_is_reproducible(generator):
    points = cloud(generator, 4, 64, 3)
    a = ops.fps(points, 8, random_start=True, generator=torch.Generator().manual_seed(3))
    b = ops.fps(points, 8, random_start=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    starts = {
        tuple(
            ops.fps(points, 2, random_start=True, generator=torch.Generator().manual_seed(s))[
                :, 0
            ].tolist()
        )
        for s in range(5)
    }
    assert len(starts) > 1
    assert ops.fps(points, 8)[:, 0].eq(0).all()


def test_fps_float64_and_half_give_int64(generator):
    points = cloud(generator, 2, 20, 3)
    assert ops.fps(points.double(), 5).dtype == torch.int64
    assert torch.equal(ops.fps(points.bfloat16(), 5), ops.fps(points.bfloat16().float(), 5))


# --- knn -------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,N,k", SIZES)
def test_knn_matches_brute_force(generator, B, N, k):
    M = max(1, N // 3)
    points = cloud(generator, B, N, 3)
    query = cloud(generator, B, M, 3)
    dist2, idx = ops.knn(query, points, k)
    assert dist2.shape == idx.shape == (B, M, k) and idx.dtype == torch.int64
    assert dist2.dtype == torch.float32
    for b in range(B):
        for m in range(M):
            d = sorted((brute_dist2(query[b, m], points[b, n]), n) for n in range(N))[:k]
            assert idx[b, m].tolist() == [n for _, n in d]
            assert dist2[b, m].tolist() == pytest.approx([v for v, _ in d], rel=1e-5, abs=1e-7)


def test_knn_k_equals_n_with_duplicates_is_a_sorted_permutation(generator):
    base = cloud(generator, 1, 5, 3)
    points = torch.cat([base, base], dim=1)
    dist2, idx = ops.knn(points, points, 10)
    assert torch.equal(idx.sort(-1).values, torch.arange(10).expand(1, 10, 10))
    assert (dist2[..., 1:] >= dist2[..., :-1]).all()
    assert (dist2[..., :2] == 0).all()  # itself and its duplicate


def test_knn_is_differentiable(generator):
    query = cloud(generator, 2, 4, 3, dtype=torch.float64).requires_grad_()
    points = cloud(generator, 2, 9, 3, dtype=torch.float64).requires_grad_()
    assert gradcheck(lambda q, p: ops.knn(q, p, 3)[0], (query, points), fast_mode=True)


# --- gather ----------------------------------------------------------------------------------


def test_gather_matches_loops_and_gradcheck(generator):
    values = cloud(generator, 2, 7, 5, dtype=torch.float64)
    idx = torch.randint(7, (2, 3, 4), generator=generator)
    idx[0, 0] = 6  # repeated indices accumulate gradient
    out = ops.gather(values, idx)
    assert out.shape == (2, 3, 4, 5)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                assert torch.equal(out[b, i, j], values[b, idx[b, i, j]])
    assert gradcheck(lambda v: ops.gather(v, idx), (values.requires_grad_(),), fast_mode=True)


def test_gather_flat_index(generator):
    values = cloud(generator, 3, 10, 2)
    idx = torch.tensor([[9, 0], [1, 1], [5, 4]])
    assert torch.equal(ops.gather(values, idx), torch.stack([values[b, idx[b]] for b in range(3)]))


# --- chamfer ---------------------------------------------------------------------------------


def brute_chamfer(x, y, norm):
    out = []
    for b in range(x.shape[0]):
        dxy = [min(brute_dist2(p, q) for q in y[b]) for p in x[b]]
        dyx = [min(brute_dist2(q, p) for p in x[b]) for q in y[b]]
        if norm == 2:
            out.append(sum(dxy) / len(dxy) + sum(dyx) / len(dyx))
        else:
            out.append(
                (sum(map(math.sqrt, dxy)) / len(dxy) + sum(map(math.sqrt, dyx)) / len(dyx)) / 2
            )
    return out


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("B,P,Q", [(1, 1, 1), (1, 5, 9), (3, 32, 17)])
def test_chamfer_matches_brute_force(generator, norm, B, P, Q):
    x, y = cloud(generator, B, P, 3), cloud(generator, B, Q, 3)
    got = ops.chamfer_distance(x, y, norm=norm)
    assert got.shape == (B,) and got.dtype == torch.float32
    assert got.tolist() == pytest.approx(brute_chamfer(x, y, norm), rel=1e-5)


@pytest.mark.parametrize("norm", [1, 2])
def test_chamfer_gradcheck_and_zero_distance(generator, norm):
    x = cloud(generator, 2, 6, 3, dtype=torch.float64).requires_grad_()
    y = cloud(generator, 2, 5, 3, dtype=torch.float64).requires_grad_()
    assert gradcheck(lambda a, b: ops.chamfer_distance(a, b, norm=norm), (x, y), fast_mode=True)
    same = x.detach().clone().requires_grad_()
    loss = ops.chamfer_distance(same, same.detach(), norm=norm).sum()
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(same.grad).all()


# --- input checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda p: ops.fps(p[0], 2), ["points", "(8, 3)"]),
        (lambda p: ops.fps(p, 9), ["num_samples", "N=8"]),
        (lambda p: ops.fps(p, 0), ["num_samples"]),
        (lambda p: ops.knn(p, p, 9), ["k=9", "N=8"]),
        (lambda p: ops.knn(p[:1], p, 2), ["batch", "(1, 8, 3)"]),
        (lambda p: ops.knn(p[..., :2], p, 2), ["query", "points"]),
        (lambda p: ops.gather(p, torch.zeros(3, 2, dtype=torch.long)), ["idx", "batch"]),
        (lambda p: ops.gather(p, torch.zeros(2, 2)), ["idx", "int64"]),
        (lambda p: ops.chamfer_distance(p, p[:1]), ["batch", "(1, 8, 3)"]),
        (lambda p: ops.chamfer_distance(p, p, norm=3), ["norm"]),
        (lambda p: ops.chamfer_distance(p.flatten(1), p), ["x", "(2, 24)"]),
    ],
)
def test_bad_inputs_raise_value_error(generator, call, words):
    points = cloud(generator, 2, 8, 3)
    with pytest.raises(ValueError) as info:
        call(points)
    for word in words:
        assert word in str(info.value)


def test_nan_points_are_rejected_unless_checks_are_off(generator):
    points = cloud(generator, 2, 8, 3)
    points[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="points .* NaN"):
        ops.fps(points, 2)
    with pytest.raises(ValueError, match="query .* NaN"):
        ops.knn(points, points[:, :4].nan_to_num(), 2)
    previous = ops.set_nan_checks(False)
    try:
        ops.fps(points, 2)
    finally:
        ops.set_nan_checks(previous)


def test_chunked_neighbour_search_matches_one_pass(generator, monkeypatch):
    from map3d.ops.reference import geometry

    x, y = cloud(generator, 2, 40, 3), cloud(generator, 2, 33, 3)
    whole = (ops.chamfer_distance(x, y), ops.knn(x, y, 5))
    monkeypatch.setattr(geometry, "_PAIR_BUDGET", 2 * 33 * 6)  # chunks of 6 queries
    torch.testing.assert_close(ops.chamfer_distance(x, y), whole[0])
    assert torch.equal(ops.knn(x, y, 5)[1], whole[1][1])
