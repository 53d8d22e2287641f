"""How the training loop runs one optimizer step: eagerly, or replayed from a CUDA graph.

`train.step_mode`:
- `eager`: every step issues its kernels from Python. A small model's step is then bound by
  kernel launches, not by the GPU (at the paper size the GPU idles half of the time).
- `cuda_graph`: the first `GRAPH_WARMUP_STEPS` steps run eagerly on a side stream (Triton
  autotuning, cuBLAS workspaces), then one step (forward and backward of every micro-batch,
  gradient clipping, the optimizer update) is captured into a CUDA graph; every later step copies
  its batch into the graph's static inputs and replays it. The LR schedule steps outside the
  graph (the learning rates are device tensors the graph reads); the run's generators are
  registered with the graph, so masking, augmentation and drop path draw fresh numbers at every
  replay and checkpoints save their true state. Every step is a real training step: the warm-up
  steps train, the capture itself runs nothing.
- `auto` (default): `cuda_graph` where `graph_problem` finds nothing against it, else `eager`;
  the log says which and why.

Under torchrun, an eager step runs the model wrapped in DistributedDataParallel (its gradient
all-reduce overlaps the backward); a CUDA-graph step runs it unwrapped and averages the gradients
itself inside the graph (`map3d.engine.distributed.GradientAverager`), since DDP's reducer cannot
be captured and NCCL collectives can.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from map3d.engine.optim import steps_to_param_device

STEP_MODES = ("auto", "eager", "cuda_graph")
GRAPH_WARMUP_STEPS = 3

StepBody = Callable[[dict[str, Any]], dict[str, Tensor]]


def graph_problem(
    *,
    device: torch.device,
    distributed: bool,
    grad_scaler: bool,
    task_problem: str | None,
) -> str | None:
    """Why a CUDA graph cannot run this training step, or None when it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device (this run is on {device.type})"
    if distributed and not (dist.is_initialized() and dist.get_backend() == "nccl"):
        return "several processes need NCCL to capture their gradient all-reduce"
    if grad_scaler:
        return "fp16's GradScaler checks for inf on the host (use bf16 or fp32)"
    if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        return f"torch {torch.__version__} cannot capture seeded generators"
    return task_problem


def resolve_step_mode(mode: str, problem: str | None) -> tuple[str, str]:
    """(`eager` | `cuda_graph`, a log line saying why). ValueError for `cuda_graph` with a
    problem or an unknown mode."""
    if mode not in STEP_MODES:
        raise ValueError(f"train.step_mode: expected one of {STEP_MODES}, got {mode!r}")
    if mode == "cuda_graph" and problem is not None:
        raise ValueError(f"train.step_mode=cuda_graph: {problem}; use train.step_mode=eager")
    if mode == "eager":
        return "eager", "step mode eager (train.step_mode=eager)"
    if problem is not None:
        return "eager", f"step mode eager: {problem}"
    return "cuda_graph", f"step mode cuda_graph (train.step_mode={mode})"


def portable_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """`optimizer.state_dict()` with plain-float learning rates and `capturable` off, so a
    checkpoint resumes in either step mode (one host read of each group's lr)."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), Tensor):
            group["lr"] = float(group["lr"])
        if "capturable" in group:
            group["capturable"] = False
    return state


class EagerStep:
    """body(batch) then `zero_grad`; returns body's scalars."""

    mode = "eager"

    def __init__(self, body: StepBody, optimizer: torch.optim.Optimizer):
        self.body, self.optimizer = body, optimizer

    def __call__(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        values = self.body(batch)
        self.optimizer.zero_grad(set_to_none=True)
        return values


class GraphedStep:
    """body(batch) replayed from a CUDA graph after `warmup` eager steps (see module docstring).

    `generators`: the custom torch.Generators the body draws from (the default CUDA generator
    is registered by PyTorch itself). Batches must keep the keys, shapes and dtypes of the one
    captured (training drops the last partial batch, so they do).
    """

    mode = "cuda_graph"

    def __init__(
        self,
        body: StepBody,
        optimizer: torch.optim.Optimizer,
        generators: Iterable[torch.Generator],
        *,
        warmup: int = GRAPH_WARMUP_STEPS,
    ):
        self.body, self.optimizer = body, optimizer
        self.generators = list(generators)
        self.warmup_left = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_batch: dict[str, Any] = {}
        self.static_values: dict[str, Tensor] = {}
        device = next(p.device for g in optimizer.param_groups for p in g["params"])
        self.lrs = [
            torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)
            for g in optimizer.param_groups
        ]
        for group, lr in zip(optimizer.param_groups, self.lrs):
            group["capturable"] = True
            group["lr"] = lr
            steps_to_param_device(optimizer, group)  # a resumed eager state keeps them on the CPU
        self.side = torch.cuda.Stream(device)

    def _sync_lrs(self) -> None:
        """Copy learning rates a scheduler wrote as floats into the tensors the graph reads."""
        for group, lr in zip(self.optimizer.param_groups, self.lrs):
            if group["lr"] is not lr:
                lr.fill_(float(group["lr"]))
                group["lr"] = lr

    def __call__(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        self._sync_lrs()
        if self.graph is None and self.warmup_left > 0:
            self.warmup_left -= 1
            return self._side_stream_step(batch)
        if self.graph is None:
            self._capture(batch)
        else:
            self._copy_in(batch)
        self.graph.replay()
        return self.static_values

    def _side_stream_step(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        current = torch.cuda.current_stream()
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            values = self.body(batch)
            self.optimizer.zero_grad(set_to_none=True)
        current.wait_stream(self.side)
        return values

    def _capture(self, batch: dict[str, Any]) -> None:
        self.static_batch = {k: v.clone() if isinstance(v, Tensor) else v for k, v in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        # thread-local: CUDA calls of other threads (the DataLoader's pin-memory thread, a
        # checkpoint writer) during the capture are theirs, not part of the graph
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.static_values = self.body(self.static_batch)
        self.graph = graph

    def _copy_in(self, batch: dict[str, Any]) -> None:
        for key, static in self.static_batch.items():
            value = batch.get(key)
            if not isinstance(static, Tensor):
                continue
            if (
                not isinstance(value, Tensor)
                or value.shape != static.shape
                or (value.dtype != static.dtype)
            ):
                raise ValueError(
                    f"train.step_mode=cuda_graph: batch field {key!r} changed from "
                    f"{tuple(static.shape)} {static.dtype} to "
                    f"{tuple(getattr(value, 'shape', ()))} {getattr(value, 'dtype', type(value))}"
                    "; use train.step_mode=eager"
                )
            static.copy_(value, non_blocking=True)


def build_step(
    mode: str,
    body: StepBody,
    optimizer: torch.optim.Optimizer,
    generators: Iterable[torch.Generator],
) -> EagerStep | GraphedStep:
    """The step runner for a resolved mode (`eager` or `cuda_graph`)."""
    if mode == "cuda_graph":
        return GraphedStep(body, optimizer, generators)
    return EagerStep(body, optimizer)
