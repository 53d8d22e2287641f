"""The model input of a batch, by modality: its batch key and its batch-time pipeline.

Tasks never ask which modality a batch holds: `batch_input` returns the batch's `Inputs` (found
by its key: `points` (B,N,3) or `image` (B,3,H,W)) and the tasks call its views. Points go
through the reference runners' point pipeline (`map3d.engine.batching`,
docs/protocols.md#batch-time-point-pipeline); images are used as they are. A new modality is a
new `Inputs` subclass and its row in `INPUTS`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from map3d.engine.batching import apply_augments, default_point_all, fps_points, shared_subset
from map3d.engine.config import ExperimentConfig


class Inputs:
    """A modality's batch-time views of the model input; this base uses the input as it is."""

    key = ""

    def pretrain(self, x: Tensor, cfg: ExperimentConfig, g: torch.Generator, *, train: bool):
        """The pretraining input (training, or the test split's loss when not `train`)."""
        return x

    def train(self, x: Tensor, cfg: ExperimentConfig, g: torch.Generator) -> Tensor:
        """A supervised training step's input."""
        return x

    def evaluate(self, x: Tensor, cfg: ExperimentConfig) -> Tensor:
        """The single-pass evaluation input."""
        return x

    def votes(
        self, x: Tensor, cfg: ExperimentConfig, g: torch.Generator
    ) -> tuple[list[Tensor], int] | None:
        """The `eval.votes` inputs whose logits are averaged for a voted prediction and the size
        of the pool they are drawn from, or None: the single pass is the vote (the default)."""
        return None


class PointInputs(Inputs):
    """Point clouds (B,N,3): FPS, shared random subsets and the batch augmentations."""

    key = "points"

    @staticmethod
    def point_all(cfg: ExperimentConfig, available: int) -> int:
        """The FPS pool of training and voting: `data.point_all`, or the runners' default."""
        if cfg.data.point_all is None:
            return default_point_all(cfg.data.npoints, available)
        return min(cfg.data.point_all, available)

    def pretrain(self, x, cfg, g, *, train):
        if x.shape[1] > cfg.data.npoints:
            x = fps_points(x, cfg.data.npoints)
        return apply_augments(x, cfg.data.augment, g) if train else x

    def train(self, x, cfg, g):
        x = fps_points(x, self.point_all(cfg, x.shape[1]))
        x = shared_subset(x, cfg.data.npoints, g)
        return apply_augments(x, cfg.data.augment, g)

    def evaluate(self, x, cfg):
        return fps_points(x, min(cfg.data.npoints, x.shape[1]))

    def votes(self, x, cfg, g):
        pool_size = self.point_all(cfg, x.shape[1])
        pool = fps_points(x, pool_size)
        views = []
        for _ in range(cfg.eval.votes):
            sub = shared_subset(
                pool, min(cfg.data.npoints, pool_size), g, permute=bool(cfg.eval.vote_permute)
            )
            views.append(apply_augments(sub, cfg.data.vote_augment, g))
        return views, pool_size


class ImageInputs(Inputs):
    """Images (B,3,H,W), used as they are."""

    key = "image"


INPUTS: dict[str, Inputs] = {inputs.key: inputs for inputs in (PointInputs(), ImageInputs())}


def batch_input(batch: dict[str, Any], device: torch.device) -> tuple[Inputs, Tensor]:
    """The model input of a batch, on `device`, and its modality's `Inputs`.

    Evaluation loops iterate their loader directly, so the input is moved here (a no-op for
    training batches, which the trainer has already moved)."""
    for key, inputs in INPUTS.items():
        if key in batch:
            return inputs, batch[key].to(device, non_blocking=True)
    raise ValueError(f"batch: expected one of the keys {tuple(INPUTS)}, got {sorted(batch)}")
