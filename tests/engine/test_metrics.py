"""Metrics on known inputs: OA, mean class accuracy, voting, few-shot mean ± std."""

import math

import pytest
import torch

from map3d.engine.metrics import (
    ConfusionMeter,
    RunningMean,
    mean_std,
    paired_t_test,
    student_t_two_sided_p,
    vote_logits,
)


def test_confusion_oa_and_mean_class_accuracy():
    meter = ConfusionMeter(3)
    # class 0: 4 samples, 3 right; class 1: 1 sample, right; class 2: 1 sample, wrong
    meter.update(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]))
    meter.update(torch.tensor([1, 0]), torch.tensor([1, 2]))
    out = meter.compute()
    assert out["n"] == 6
    assert out["oa"] == pytest.approx(100 * 4 / 6)
    assert out["macc"] == pytest.approx(100 * (0.75 + 1 + 0) / 3)


def test_mean_class_accuracy_ignores_absent_classes():
    meter = ConfusionMeter(5)
    meter.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert meter.compute()["macc"] == pytest.approx(50.0)


def test_voting_averages_logits_not_votes():
    # Two of three votes prefer class 0 slightly, one prefers class 1 strongly: the mean of
    # logits picks class 1, a majority vote would pick class 0.
    votes = [torch.tensor([[1.0, 0.9]]), torch.tensor([[1.0, 0.9]]), torch.tensor([[0.0, 3.0]])]
    mean = vote_logits(votes)
    assert torch.allclose(mean, torch.tensor([[2 / 3, 4.8 / 3]]))
    assert mean.argmax(-1).item() == 1
    assert torch.equal(vote_logits(torch.stack(votes)), mean)
    with pytest.raises(ValueError, match="V passes"):
        vote_logits(torch.zeros(2, 3))


def test_fewshot_mean_and_sample_std():
    out = mean_std([90.0, 92.0, 94.0, 96.0])
    assert out["mean"] == pytest.approx(93.0)
    assert out["std"] == pytest.approx(math.sqrt(20 / 3))
    assert out["n"] == 4
    assert mean_std([50.0])["std"] == 0.0


def test_running_mean_weights_by_count():
    mean = RunningMean()
    mean.update({"loss": torch.tensor(1.0)}, 1)
    mean.update({"loss": torch.tensor(4.0)}, 3)
    mean.update({"grad_norm": torch.tensor(2.0)}, 8)  # other names keep their own counts
    assert mean.compute() == pytest.approx({"loss": 13 / 4, "grad_norm": 2.0})


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (2.2, 4, 0.092653),
        (2.776445, 4, 0.05),
        (1.0, 1, 0.5),
        (-3.0, 10, 0.013344),
        (0.0, 3, 1.0),
    ],
)
def test_student_t_two_sided_p(t, df, p):
    assert student_t_two_sided_p(t, df) == pytest.approx(p, abs=2e-5)


def test_paired_t_test_matches_scipy_and_own_cdf():
    a = [41.0, 39.5, 45.0, 38.0, 42.5]
    b = [33.0, 35.0, 39.5, 39.5, 41.0]
    out = paired_t_test(a, b)
    diffs = [x - y for x, y in zip(a, b)]
    assert out["mean"] == pytest.approx(sum(diffs) / 5) and out["n"] == 5
    t = out["mean"] / (out["std"] / 5**0.5)
    assert out["t"] == pytest.approx(t)
    assert out["p"] == pytest.approx(student_t_two_sided_p(t, 4), rel=1e-6)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert out["p"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-9)


def test_paired_t_test_edge_cases():
    assert paired_t_test([1.0, 2.0], [1.0, 2.0])["p"] == 1.0
    assert paired_t_test([2.0, 3.0], [1.0, 2.0])["p"] == 0.0
    with pytest.raises(ValueError):
        paired_t_test([1.0], [2.0])
