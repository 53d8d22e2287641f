"""Part segmentation (ShapeNetPart, the built-in `synthetic_parts` set).

Batches hold `points` (B,N,3), `category` (B,) and per-point global part ids `seg` (B,N). The
dataset already resamples each shape to a fixed number of points (ShapeNetPart: 2,048 with
replacement, as Point-MAE's `PartNormalDataset`); when it gives more than `data.npoints`, one
random subset shared by the batch is kept (points and labels alike). Training applies
`data.augment` (the recipe: `scale_shift`, isotropic U(0.8, 1.25) then shift U(±0.1)) and
minimizes per-point cross-entropy over all parts. Evaluation follows
docs/protocols.md#part-segmentation-metrics (`map3d.engine.partseg_metrics`): one pass without
augmentation (Point-MAE's protocol); `test` adds `eval.votes` passes with `data.vote_augment`
whose logits are averaged (Point-BERT averages 3).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from map3d.engine.batching import apply_augments
from map3d.engine.config import ExperimentConfig
from map3d.engine.partseg_metrics import PartSegMeter
from map3d.engine.setup import move_to
from map3d.engine.tasks import register_task
from map3d.engine.tasks.base import Task, TaskContext, cross_entropy, sizes_from_dataset

BATCH_KEYS = ("points", "category", "seg")


def _unpack(
    batch: dict[str, Any], ctx: TaskContext, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """points (B,N,3) float, category (B,) int64, seg (B,N) int64 on the device, cut to npoints."""
    missing = [key for key in BATCH_KEYS if key not in batch]
    if missing:
        raise ValueError(
            f"batch: part segmentation needs keys {BATCH_KEYS}, missing {missing} "
            f"(got {sorted(batch)})"
        )
    batch = move_to({key: batch[key] for key in BATCH_KEYS}, ctx.device)
    points = batch["points"][..., :3]
    category = torch.as_tensor(batch["category"], device=ctx.device).long().view(-1)
    seg = torch.as_tensor(batch["seg"], device=ctx.device).long()
    if seg.shape != points.shape[:2]:
        raise ValueError(
            f"batch: seg of shape {tuple(seg.shape)} does not match points {tuple(points.shape)}"
        )
    npoints = ctx.cfg.data.npoints
    if npoints > points.shape[1]:
        raise ValueError(
            f"data.npoints={npoints} but the dataset gives {points.shape[1]} points per shape"
        )
    if npoints < points.shape[1]:
        if generator is None:
            keep = torch.arange(npoints, device=points.device)
        else:
            keep = torch.randperm(points.shape[1], generator=generator, device=points.device)
            keep = keep[:npoints]
        points, seg = points[:, keep], seg[:, keep]
    return points, category, seg


def _tables(dataset: Dataset) -> tuple[Any, Any]:
    parts = getattr(dataset, "category_parts", None)
    if parts is None:
        raise ValueError(
            f"dataset {type(dataset).__name__} has no category_parts table (part segmentation)"
        )
    return parts, getattr(dataset, "category_names", None)


@register_task("partseg")
class PartSegTask(Task):
    model_task = "partseg"
    best_metric = "instance_miou"
    best_mode = "max"

    def dataset_sizes(self, cfg: ExperimentConfig, train_set: Dataset | None) -> dict[str, Any]:
        """`num_categories` / `num_parts` come from the dataset unless the config sets them."""
        return sizes_from_dataset(cfg, train_set, ("num_categories", "num_parts"), required=False)

    def training_step(self, model: nn.Module, batch, ctx: TaskContext):
        points, category, seg = _unpack(batch, ctx, ctx.generator)
        points = apply_augments(points, ctx.cfg.data.augment, ctx.generator)
        with ctx.autocast():
            logits = model(points, category)
        loss = cross_entropy(logits.transpose(1, 2), seg, ctx.cfg)
        acc = (logits.argmax(-1) == seg).float().mean() * 100.0
        return loss, {"acc": acc}

    @staticmethod
    def _logits(model: nn.Module, points: Tensor, category: Tensor, ctx: TaskContext) -> Tensor:
        with ctx.autocast():
            return model(points, category).float()

    def _meter(self, loader: DataLoader) -> PartSegMeter:
        parts, names = _tables(loader.dataset)
        return PartSegMeter(parts, names)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, ctx: TaskContext) -> dict[str, float]:
        """One pass without augmentation: instance/class mIoU, accuracy, per-category IoU (%)."""
        meter, seen = self._meter(loader), False
        for batch in loader:
            points, category, seg = _unpack(batch, ctx, None)
            meter.update(self._logits(model, points, category, ctx), seg, category)
            seen = True
        if not seen:
            return {}
        meter.all_reduce()
        return meter.compute()

    @torch.no_grad()
    def test(self, model: nn.Module, loader: DataLoader, ctx: TaskContext) -> dict[str, Any]:
        """Single pass, and with `eval.votes` > 1 also the vote (mean logits over augmented
        passes), in one pass over the data."""
        cfg = ctx.cfg
        votes = cfg.eval.votes
        generator = torch.Generator(ctx.device).manual_seed(cfg.train.seed + 7919 * ctx.dist.rank)
        single, voted = self._meter(loader), self._meter(loader)
        seen = False
        for batch in loader:
            points, category, seg = _unpack(batch, ctx, None)
            logits = self._logits(model, points, category, ctx)
            single.update(logits, seg, category)
            if votes > 1:
                passes = [
                    self._logits(
                        model,
                        apply_augments(points, cfg.data.vote_augment, generator),
                        category,
                        ctx,
                    )
                    for _ in range(votes)
                ]
                voted.update(torch.stack(passes).mean(0), seg, category)
            seen = True
        results: dict[str, Any] = {}
        if seen:
            single.all_reduce()
            results.update(single.compute())
            if votes > 1:
                voted.all_reduce()
                results.update({f"vote_{k}": v for k, v in voted.compute().items()})
        results["protocol"] = {
            "task": self.name,
            "dataset": cfg.data.name,
            "dataset_options": dict(cfg.data.options),
            "split": cfg.data.test_split,
            "npoints": cfg.data.npoints,
            "single_pass": "the dataset's resample of each shape, no augmentation",
            "votes": votes if votes > 1 else 0,
            "vote_augment": list(cfg.data.vote_augment),
            "vote_rule": "mean of logits over votes of the same points, each with vote_augment",
            "seed": cfg.train.seed,
            "metrics": "predictions restricted to the shape's category parts; shape IoU = mean "
            "over the category's parts (part absent from prediction and truth = 1); "
            "instance_miou = mean over shapes, class_miou = mean over categories present of "
            "their mean; accuracy = point accuracy; iou/<category>; all in %",
        }
        return results
