"""Shape classification (ModelNet40, ScanObjectNN, few-shot, synthetic; images too).

Points (docs/protocols.md#batch-time-point-pipeline): training FPS-samples `point_all` points,
takes one random `npoints` subset for the batch and applies `data.augment`; per-epoch evaluation
FPS-samples `npoints` with no augmentation (docs/protocols.md#classification-evaluation); voting
averages the logits of `eval.votes` random `npoints` subsets of the FPS `point_all` set, each with
`data.vote_augment` (docs/protocols.md#voting). Images skip the point pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from map3d.engine.config import ExperimentConfig
from map3d.engine.inputs import batch_input
from map3d.engine.metrics import ConfusionMeter, vote_logits
from map3d.engine.tasks import register_task
from map3d.engine.tasks.base import Task, TaskContext, cross_entropy, sizes_from_dataset


def _num_classes(model: nn.Module, loader: DataLoader) -> int:
    """Size of the confusion matrix: the model's head (few-shot keeps a 40-way head for 5
    classes), else the dataset's `num_classes`. Known before the first batch, so every process
    builds the same meter even when its shard of the test set is empty."""
    size = getattr(getattr(model, "config", None), "num_classes", None)
    size = size or getattr(loader.dataset, "num_classes", None)
    if size is None:
        raise ValueError(
            "classification: neither the model config nor the dataset gives num_classes"
        )
    return int(size)


def _labels(batch: dict[str, Any], device: torch.device) -> Tensor:
    if "label" not in batch:
        raise ValueError(f"batch: classification needs a 'label' key, got {sorted(batch)}")
    return torch.as_tensor(batch["label"], device=device).long().view(-1)


@register_task("classify")
class ClassifyTask(Task):
    model_task = "classify"
    best_metric = "oa"
    best_mode = "max"

    def dataset_sizes(self, cfg: ExperimentConfig, train_set: Dataset | None) -> dict[str, Any]:
        return sizes_from_dataset(cfg, train_set, ("num_classes",), required=True)

    def training_step(self, model: nn.Module, batch, ctx: TaskContext):
        inputs, x = batch_input(batch, ctx.device)
        labels = _labels(batch, ctx.device)
        x = inputs.train(x, ctx.cfg, ctx.generator)
        with ctx.autocast():
            logits = model(x)
        loss = cross_entropy(logits, labels, ctx.cfg)
        acc = (logits.argmax(-1) == labels).float().mean() * 100.0
        return loss, {"acc": acc}

    def _logits(self, model: nn.Module, x: Tensor, ctx: TaskContext) -> Tensor:
        with ctx.autocast():
            return model(x).float()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, ctx: TaskContext) -> dict[str, float]:
        """Single pass: OA and mean class accuracy (percent) over the test split."""
        meter = ConfusionMeter(_num_classes(model, loader), ctx.device)
        for batch in loader:
            inputs, x = batch_input(batch, ctx.device)
            labels = _labels(batch, ctx.device)
            meter.update(self._logits(model, inputs.evaluate(x, ctx.cfg), ctx).argmax(-1), labels)
        meter.all_reduce()
        return meter.compute()

    @torch.no_grad()
    def test(self, model: nn.Module, loader: DataLoader, ctx: TaskContext) -> dict[str, Any]:
        """Single-pass OA/mAcc and `eval.votes`-vote OA/mAcc (logits averaged), one pass over data."""
        cfg = ctx.cfg
        votes = cfg.eval.votes
        generator = torch.Generator(ctx.device).manual_seed(cfg.train.seed + 7919 * ctx.dist.rank)
        size = _num_classes(model, loader)
        single, voted = ConfusionMeter(size, ctx.device), ConfusionMeter(size, ctx.device)
        pool_size = None
        for batch in loader:
            inputs, x = batch_input(batch, ctx.device)
            labels = _labels(batch, ctx.device)
            logits = self._logits(model, inputs.evaluate(x, cfg), ctx)
            views = inputs.votes(x, cfg, generator)
            if views is None:  # the single pass is the vote
                passes = [logits]
            else:
                views, pool_size = views
                passes = [self._logits(model, view, ctx) for view in views]
            single.update(logits.argmax(-1), labels)
            if passes:
                voted.update(vote_logits(passes).argmax(-1), labels)
        single.all_reduce()
        voted.all_reduce()
        results: dict[str, Any] = single.compute()
        if votes > 0:
            results.update({f"vote_{k}": v for k, v in voted.compute().items() if k != "n"})
        results["protocol"] = {
            "task": self.name,
            "dataset": cfg.data.name,
            "dataset_options": dict(cfg.data.options),
            "split": cfg.data.test_split,
            "npoints": cfg.data.npoints,
            "single_pass": "FPS to npoints, no augmentation",
            "votes": votes,
            "vote_pool": pool_size,
            "vote_augment": list(cfg.data.vote_augment),
            "vote_permute": bool(cfg.eval.vote_permute),
            "vote_rule": "mean of logits over votes, then argmax; each vote a random npoints "
            "subset of the FPS point_all set; one evaluation (not the max over repeats)",
            "seed": cfg.train.seed,
            "metrics": "oa = overall accuracy %, macc = mean class accuracy % (classes present)",
        }
        return results
