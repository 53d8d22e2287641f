"""Part-segmentation metrics, computed as the ShapeNetPart community does (Point-MAE / PointNet++).

Protocol (docs/protocols.md#part-segmentation-metrics):
- the prediction of a point is restricted to the parts of its shape's category:
  `argmax(logits[:, parts]) + parts[0]`;
- a shape's IoU is the mean over its category's parts of `|pred ∩ gt| / |pred ∪ gt|`, where a part
  absent from both prediction and ground truth counts as 1.0;
- instance mIoU is the mean shape IoU over all shapes; class mIoU is the mean over categories (that
  have at least one shape) of the per-category mean shape IoU; point accuracy is over all points.

Everything is vectorized on the inputs' device; `PartSegMeter` accumulates a few sums across batches
and can be summed across processes before `compute()`.

A category→parts table is a sequence (indexed by category id) of sequences of global part ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from map3d.engine.distributed import all_reduce_sum


def category_part_mask(category_parts: Sequence[Sequence[int]], *, device=None) -> Tensor:
    """Boolean table `(num_categories, P)`: True where a global part id belongs to a category.

    P is one more than the largest part id. Raises ValueError for an empty category or a part id
    claimed by two categories.
    """
    if len(category_parts) == 0:
        raise ValueError("category_parts: empty table")
    num_parts = 1 + max((max(parts) for parts in category_parts if len(parts)), default=-1)
    mask = torch.zeros(len(category_parts), num_parts, dtype=torch.bool)
    for category, parts in enumerate(category_parts):
        if len(parts) == 0:
            raise ValueError(f"category_parts[{category}]: no parts")
        if min(parts) < 0:
            raise ValueError(f"category_parts[{category}]: negative part id in {list(parts)}")
        mask[category, list(parts)] = True
    if (mask.sum(0) > 1).any():
        shared = torch.nonzero(mask.sum(0) > 1).flatten().tolist()
        raise ValueError(f"category_parts: part ids {shared} belong to several categories")
    return mask.to(device)


def _check_ids(name: str, ids: Tensor, upper: int) -> None:
    """Range check of integer ids, on CPU tensors only (on an accelerator it is a host sync)."""
    if ids.device.type == "cpu" and ids.numel() and (ids.min() < 0 or ids.max() >= upper):
        raise ValueError(f"{name}: ids must lie in [0, {upper}), got [{ids.min()}, {ids.max()}]")


def _check_inputs(points_shape: torch.Size, category: Tensor, part_mask: Tensor) -> None:
    if len(points_shape) != 2:
        raise ValueError(f"seg: expected (B,N), got shape {tuple(points_shape)}")
    if category.shape != points_shape[:1]:
        raise ValueError(
            f"category: expected shape ({points_shape[0]},), got {tuple(category.shape)}"
        )
    _check_ids("category", category, part_mask.shape[0])


def restrict_to_category(logits: Tensor, category: Tensor, part_mask: Tensor) -> Tensor:
    """Per-point prediction among the parts of each shape's category.

    logits (B,N,P), category (B,) int64, part_mask (num_categories,P) bool -> pred (B,N) int64.
    Ties resolve to the lowest part id, as `argmax(logits[:, parts]) + parts[0]` does.
    """
    if logits.dim() != 3 or logits.shape[-1] != part_mask.shape[1]:
        raise ValueError(
            f"logits: expected (B,N,{part_mask.shape[1]}), got shape {tuple(logits.shape)}"
        )
    _check_inputs(logits.shape[:2], category, part_mask)
    allowed = part_mask.to(logits.device)[category].unsqueeze(1)  # (B,1,P)
    masked = logits.masked_fill(~allowed, float("-inf"))
    return masked.argmax(dim=-1)


def shape_ious(pred: Tensor, seg: Tensor, category: Tensor, part_mask: Tensor) -> Tensor:
    """IoU of each shape, averaged over its category's parts.

    pred (B,N) int64, seg (B,N) int64 global part ids, category (B,) int64 -> (B,) float64.
    A part of the category absent from both pred and seg counts as 1.0. A predicted id outside
    the category (unrestricted predictions) only counts as a miss for the true part.
    """
    _check_inputs(seg.shape, category, part_mask)
    if pred.shape != seg.shape:
        raise ValueError(f"pred: expected shape {tuple(seg.shape)}, got {tuple(pred.shape)}")
    num_parts = part_mask.shape[1]
    _check_ids("seg", seg, num_parts)
    _check_ids("pred", pred, num_parts)
    batch = seg.shape[0]
    ones = torch.ones_like(seg, dtype=torch.float64)
    pred_count = torch.zeros(batch, num_parts, dtype=torch.float64, device=seg.device)
    gt_count = torch.zeros_like(pred_count)
    inter = torch.zeros_like(pred_count)
    pred_count.scatter_add_(1, pred, ones)
    gt_count.scatter_add_(1, seg, ones)
    inter.scatter_add_(1, seg, (pred == seg).to(torch.float64))
    union = pred_count + gt_count - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    parts = part_mask.to(seg.device)[category].to(torch.float64)  # (B,P)
    return (iou * parts).sum(1) / parts.sum(1)


class PartSegMeter:
    """Accumulates part-segmentation metrics over batches, on the inputs' device.

    `update(logits (B,N,P), seg (B,N), category (B,))` adds a batch; `all_reduce()` sums the state
    across processes (torch.distributed, or any in-place sum function you pass); `compute()` returns
    percentages: `instance_miou`, `class_miou`, `accuracy`, and `iou/<category name>` for every
    category seen.
    """

    def __init__(
        self,
        category_parts: Sequence[Sequence[int]],
        category_names: Sequence[str] | None = None,
    ):
        self.part_mask = category_part_mask(category_parts)
        num_categories = self.part_mask.shape[0]
        if category_names is not None and len(category_names) != num_categories:
            raise ValueError(
                f"category_names: expected {num_categories} names, got {len(category_names)}"
            )
        self.category_names = list(category_names or [str(i) for i in range(num_categories)])
        self.reset()

    def reset(self) -> None:
        num_categories = self.part_mask.shape[0]
        # state[:C] per-category sum of shape IoUs, state[C:2C] shape counts,
        # state[2C] correct points, state[2C+1] total points; one tensor so one all-reduce.
        self.state = torch.zeros(2 * num_categories + 2, dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: Tensor, seg: Tensor, category: Tensor) -> Tensor:
        """Add a batch; returns the batch's restricted predictions (B,N)."""
        if self.state.device != logits.device:
            self.state = self.state.to(logits.device)
            self.part_mask = self.part_mask.to(logits.device)
        part_mask = self.part_mask
        pred = restrict_to_category(logits, category, part_mask)
        ious = shape_ious(pred, seg, category, part_mask)
        num_categories = part_mask.shape[0]
        self.state[:num_categories].index_add_(0, category, ious)
        self.state[num_categories : 2 * num_categories].index_add_(
            0, category, torch.ones_like(ious)
        )
        self.state[2 * num_categories] += (pred == seg).sum()
        self.state[2 * num_categories + 1] += seg.numel()
        return pred

    def all_reduce(self, reduce_fn: Callable[[Tensor], object] = all_reduce_sum) -> None:
        """Sum the state across processes in place (default: the engine's all-reduce, a no-op
        without a process group)."""
        reduce_fn(self.state)

    def compute(self) -> dict[str, float]:
        num_categories = self.part_mask.shape[0]
        state = self.state.cpu()
        iou_sum = state[:num_categories]
        count = state[num_categories : 2 * num_categories]
        correct, total = state[2 * num_categories], state[2 * num_categories + 1]
        if count.sum() == 0:
            raise ValueError("PartSegMeter.compute: no shapes were added")
        seen = count > 0
        per_category = iou_sum[seen] / count[seen]
        metrics = {
            "instance_miou": 100.0 * float(iou_sum.sum() / count.sum()),
            "class_miou": 100.0 * float(per_category.mean()),
            "accuracy": 100.0 * float(correct / total),
        }
        for index, value in zip(torch.nonzero(seen).flatten().tolist(), per_category.tolist()):
            metrics[f"iou/{self.category_names[index]}"] = 100.0 * value
        return metrics
