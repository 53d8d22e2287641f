"""Part-segmentation metrics against hand-computed cases and a loop re-implementation."""

import pytest
import torch

from map3d.engine.partseg_metrics import (
    PartSegMeter,
    category_part_mask,
    restrict_to_category,
    shape_ious,
)

# Two categories: 0 -> parts {0, 1}, 1 -> parts {2, 3, 4}.
TABLE = [[0, 1], [2, 3, 4]]


def _iou(pred, seg, category):
    mask = category_part_mask(TABLE)
    return shape_ious(
        torch.tensor([pred]), torch.tensor([seg]), torch.tensor([category]), mask
    ).item()


def test_partial_overlap():
    # part 0: 1/2, part 1: 2/3
    assert _iou([0, 1, 1, 1], [0, 0, 1, 1], 0) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_part_absent_from_both_counts_one():
    # part 4 in neither prediction nor ground truth -> 1.0
    assert _iou([2, 2, 3, 3], [2, 2, 3, 3], 1) == pytest.approx(1.0)


def test_part_predicted_but_absent_from_ground_truth_counts_zero():
    # part 2: 3/4, part 3 absent from both: 1, part 4 predicted only: 0
    assert _iou([2, 2, 2, 4], [2, 2, 2, 2], 1) == pytest.approx((0.75 + 1 + 0) / 3)


def test_single_part_shapes():
    assert _iou([0, 0, 0, 0], [0, 0, 0, 0], 0) == pytest.approx(1.0)
    assert _iou([0, 0, 0, 1], [0, 0, 0, 0], 0) == pytest.approx((3 / 4 + 0) / 2)


def test_prediction_outside_category_is_a_miss():
    # the point predicted as part 2 (another category's) lowers part 0's IoU only
    assert _iou([0, 0, 2, 1], [0, 0, 0, 1], 0) == pytest.approx((2 / 3 + 1) / 2)


def test_restriction_to_category():
    mask = category_part_mask(TABLE)
    logits = torch.tensor(
        [
            [[0.1, 0.2, 5.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]],  # shape of category 0
            [[9.0, 0.0, 0.5, 0.7, 0.6], [0.0, 0.0, 2.0, 2.0, 3.0]],  # shape of category 1
        ]
    )
    pred = restrict_to_category(logits, torch.tensor([0, 1]), mask)
    # global argmax would give 2 and 0; restricted: best inside the category, ties -> lowest id
    assert pred.tolist() == [[1, 0], [3, 4]]


def test_table_validation():
    with pytest.raises(ValueError, match="several categories"):
        category_part_mask([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="no parts"):
        category_part_mask([[0], []])
    with pytest.raises(ValueError, match="category"):
        shape_ious(
            torch.zeros(1, 3, dtype=torch.long),
            torch.zeros(1, 3, dtype=torch.long),
            torch.tensor([2]),
            category_part_mask(TABLE),
        )


def test_part_ids_out_of_range():
    mask = category_part_mask(TABLE)
    with pytest.raises(ValueError, match="seg"):
        shape_ious(torch.zeros(1, 2).long(), torch.tensor([[0, 5]]), torch.tensor([0]), mask)


def _reference_metrics(logits, seg, category):
    """The community's per-shape loop (PointNet++ / Point-MAE test code), re-written plainly."""
    shape_ious_by_cat = {c: [] for c in range(len(TABLE))}
    correct = total = 0
    for b in range(logits.shape[0]):
        parts = TABLE[int(category[b])]
        pred = logits[b][:, parts].argmax(1) + parts[0]
        correct += int((pred == seg[b]).sum())
        total += seg.shape[1]
        ious = []
        for p in parts:
            gt_p, pr_p = seg[b] == p, pred == p
            if gt_p.sum() == 0 and pr_p.sum() == 0:
                ious.append(1.0)
            else:
                ious.append(float((gt_p & pr_p).sum()) / float((gt_p | pr_p).sum()))
        shape_ious_by_cat[int(category[b])].append(sum(ious) / len(ious))
    all_ious = [v for vs in shape_ious_by_cat.values() for v in vs]
    cat_means = [sum(vs) / len(vs) for vs in shape_ious_by_cat.values() if vs]
    return {
        "instance_miou": 100 * sum(all_ious) / len(all_ious),
        "class_miou": 100 * sum(cat_means) / len(cat_means),
        "accuracy": 100 * correct / total,
    }


def _random_batch(generator, batch=6, points=32):
    category = torch.randint(0, 2, (batch,), generator=generator)
    first = torch.tensor([0, 2])[category]
    width = torch.tensor([2, 3])[category]
    seg = first[:, None] + (torch.rand(batch, points, generator=generator) * width[:, None]).long()
    logits = torch.randn(batch, points, 5, generator=generator)
    # make predictions mostly right so IoUs are non-trivial
    logits.scatter_add_(2, seg[..., None], torch.full((batch, points, 1), 1.5))
    return logits, seg, category


def test_meter_matches_reference_loop(generator):
    meter = PartSegMeter(TABLE, category_names=["mug", "lamp"])
    batches = [_random_batch(generator) for _ in range(3)]
    for logits, seg, category in batches:
        pred = meter.update(logits, seg, category)
        assert pred.shape == seg.shape
    all_logits, all_seg, all_cat = (torch.cat(t) for t in zip(*batches))
    expected = _reference_metrics(all_logits, all_seg, all_cat)
    metrics = meter.compute()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value)
    assert set(metrics) >= {"iou/mug", "iou/lamp"}


def test_class_miou_averages_seen_categories_only():
    meter = PartSegMeter([[0, 1], [2, 3], [4]])
    perfect = torch.nn.functional.one_hot(torch.tensor([[0, 1]]), 5).float()
    meter.update(perfect, torch.tensor([[0, 1]]), torch.tensor([0]))
    assert meter.compute()["class_miou"] == pytest.approx(100.0)
    assert "iou/2" not in meter.compute()


def test_all_reduce_hook_sums_states(generator):
    first, second, both = (PartSegMeter(TABLE) for _ in range(3))
    batch_a, batch_b = _random_batch(generator), _random_batch(generator)
    first.update(*batch_a)
    second.update(*batch_b)
    both.update(*batch_a)
    both.update(*batch_b)
    first.all_reduce(lambda state: state.add_(second.state))
    assert first.compute() == pytest.approx(both.compute())
    first.all_reduce()  # no process group: a no-op
    assert first.compute() == pytest.approx(both.compute())


def test_compute_without_updates_raises():
    with pytest.raises(ValueError, match="no shapes"):
        PartSegMeter(TABLE).compute()
