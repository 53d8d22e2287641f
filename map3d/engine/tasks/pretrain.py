"""Masked autoregressive pretraining (MAP, or MAE/AR through the decoder's region count).

Points: clouds with more than `data.npoints` points are FPS-sampled down to it, then the
`data.augment` transforms run (MAP-3D: rotation about y; docs/protocols.md#augmentations).
Images go to the model as they are. The model is a pretrainer:
`forward(x, generator=...) -> output with .loss`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from map3d.engine.inputs import batch_input
from map3d.engine.metrics import RunningMean
from map3d.engine.tasks import register_task
from map3d.engine.tasks.base import Task, TaskContext


@register_task("pretrain")
class PretrainTask(Task):
    model_task = "pretrain"
    best_metric = "loss"
    best_mode = "min"

    def prepare(self, batch: dict[str, Any], ctx: TaskContext, *, train: bool) -> Tensor:
        inputs, x = batch_input(batch, ctx.device)
        return inputs.pretrain(x, ctx.cfg, ctx.generator, train=train)

    def static_step_problem(self, model: nn.Module) -> str | None:
        ratio = getattr(model, "mask_ratio", None)
        if isinstance(ratio, (tuple, list)) and ratio[0] != ratio[1]:
            return (
                f"mask_ratio {tuple(ratio)} is a range, so the number of masked tokens "
                "changes from batch to batch"
            )
        return None

    def training_step(self, model: nn.Module, batch, ctx: TaskContext):
        x = self.prepare(batch, ctx, train=True)
        with ctx.autocast():
            out = model(x, generator=ctx.model_generator)
        return out.loss, {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, ctx: TaskContext) -> dict[str, float]:
        """Mean masked-reconstruction loss on the test split (fixed masking seed)."""
        generator = torch.Generator(ctx.device).manual_seed(ctx.cfg.train.seed + ctx.dist.rank)
        mean = RunningMean(ctx.device)
        # same keys on every process, even one whose shard of the test set is empty
        mean.update({"loss": torch.zeros((), device=ctx.device)}, 0)
        for batch in loader:
            x = self.prepare(batch, ctx, train=False)
            with ctx.autocast():
                out = model(x, generator=generator)
            mean.update({"loss": out.loss.float()}, x.shape[0])
        return mean.compute()

    def test(self, model: nn.Module, loader: DataLoader, ctx: TaskContext) -> dict[str, Any]:
        metrics = self.evaluate(model, loader, ctx)
        protocol = {
            "task": self.name,
            "dataset": ctx.cfg.data.name,
            "split": ctx.cfg.data.test_split,
            "npoints": ctx.cfg.data.npoints,
            "metric": "mean masked-patch reconstruction loss, masking seeded by train.seed",
        }
        return {**metrics, "protocol": protocol}
