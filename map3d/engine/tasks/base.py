"""The `Task` interface between the engine's loops and one kind of job.

The trainer owns everything generic (devices, DDP, precision, optimizer, schedule, checkpoints,
logging); a task says how to build its datasets and model, what one training step computes and
how it is evaluated. Batches are dicts; the model input is under `points` (B,N,3) or `image`
(B,3,H,W), and `map3d.engine.inputs` holds each modality's batch-time views of it, so the same
tasks serve both modalities.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from map3d.engine.config import ExperimentConfig
from map3d.engine.distributed import DistInfo
from map3d.errors import ConfigError


def cross_entropy(logits: Tensor, target: Tensor, cfg: ExperimentConfig) -> Tensor:
    """`F.cross_entropy` (class dim 1) in float32 with `train.label_smoothing`."""
    smoothing = cfg.train.label_smoothing
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"train.label_smoothing: expected 0 <= value < 1, got {smoothing}")
    return F.cross_entropy(logits.float(), target, label_smoothing=smoothing)


def sizes_from_dataset(
    cfg: ExperimentConfig, dataset: Dataset | None, names: tuple[str, ...], *, required: bool
) -> dict[str, Any]:
    """Each size in `names` that `cfg.model.overrides` leaves unset, taken from the dataset's
    attribute of the same name (e.g. `num_classes`); when `required`, a size that neither
    gives is a ConfigError."""
    sizes = {}
    for name in names:
        if name in cfg.model.overrides:
            continue
        value = getattr(dataset, name, None)
        if value is None:
            if required:
                raise ConfigError(
                    f"dataset {cfg.data.name!r} has no {name}; set model.overrides.{name}"
                )
            continue
        sizes[name] = int(value)
    return sizes


@dataclass
class TaskContext:
    """What a task's step and evaluation need from the engine.

    `generator` drives batch-time sampling/augmentation, `model_generator` the model's own random
    choices (masking); both live on `device`. `autocast()` enters the configured precision.
    """

    cfg: ExperimentConfig
    device: torch.device
    generator: torch.Generator
    model_generator: torch.Generator
    dist: DistInfo = field(default_factory=DistInfo)
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext


class Task:
    """Base class; subclasses register with `@register_task(name)`.

    `model_task` is the `task=` passed to `map3d.create_model`; `best_metric`/`best_mode` pick the
    checkpoint saved as best.pt from `evaluate()` (finetuning tasks without a test split: from
    the epoch's training means; pretraining without one keeps no best.pt).
    """

    name: str = ""
    model_task: str = ""
    best_metric: str = "loss"
    best_mode: str = "min"

    # -- construction ----------------------------------------------------------------------
    def build_dataset(self, cfg: ExperimentConfig, split: str) -> Dataset:
        from map3d.data import build_dataset

        return build_dataset(
            cfg.data.name, split=split, root=cfg.data.root, **self.dataset_options(cfg, split)
        )

    def dataset_options(self, cfg: ExperimentConfig, split: str) -> dict[str, Any]:
        """`data.options`, plus `data.test_options` for the test split."""
        if split == cfg.data.test_split:
            return {**cfg.data.options, **cfg.data.test_options}
        return dict(cfg.data.options)

    def dataset_sizes(self, cfg: ExperimentConfig, train_set: Dataset | None) -> dict[str, Any]:
        """Model config sizes this task takes from its training set (e.g. num_classes) where
        `model.overrides` leaves them unset; none by default."""
        return {}

    def build_model(self, cfg: ExperimentConfig, train_set: Dataset | None) -> nn.Module:
        """The model of `cfg.model_config` for this task, with the sizes from `train_set`."""
        from map3d.models.registry import model_from_config

        config = cfg.model_config(self.model_task, self.dataset_sizes(cfg, train_set))
        return model_from_config(cfg.model.name, self.model_task, config)

    def static_step_problem(self, model: nn.Module) -> str | None:
        """Why this task's training step on `model` has data-dependent shapes or host syncs (so
        it cannot be replayed from a CUDA graph), or None."""
        return None

    # -- work --------------------------------------------------------------------------------
    def training_step(
        self, model: nn.Module, batch: dict[str, Any], ctx: TaskContext
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss to backpropagate and extra per-batch scalars (device tensors, no host sync)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader: DataLoader, ctx: TaskContext) -> dict[str, float]:
        """Per-epoch validation metrics, reduced over processes; {} when the task has none."""
        return {}

    def test(self, model: nn.Module, loader: DataLoader, ctx: TaskContext) -> dict[str, Any]:
        """The full evaluation protocol of `map3d eval` (metrics plus a `protocol` dict)."""
        return {**self.evaluate(model, loader, ctx), "protocol": {"task": self.name}}
