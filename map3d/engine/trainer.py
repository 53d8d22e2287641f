"""The training loop shared by every task: one process or many (torchrun), CPU or GPU.

Per optimizer step: the process's share of the global batch is split into `train.accum_steps`
micro-batches; each goes through the task's `training_step` under the configured autocast; fp16
uses a GradScaler; gradients are clipped to `optim.grad_clip`; the LR schedule advances per step.
Scalars are accumulated on the device and read (one host sync, reduced over ranks) every
`train.log_every_steps` steps. Checkpoints (`last.pt`) are written every epoch, every
`train.checkpoint_every_steps` steps, at `train.max_steps`, and when SIGTERM or Ctrl-C asks the
run to stop (after the step in flight), from a CPU copy in a background thread. `best.pt` follows
the task's best metric on the test split (on the training means for finetuning tasks without
one; pretraining without a test split keeps no best.pt), never comparing test with training
values. `resume` restores model, optimizer, scheduler, scaler, position inside the epoch, the
running means of the log window and of the epoch, and every RNG, so the resumed run repeats the
uninterrupted one step for step and writes the same records.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import map3d
from map3d.engine.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckpointWriter,
    adopt_release,
    capture_rng,
    load_checkpoint,
    model_state_dict,
    restore_rng,
    weights_origin,
)
from map3d.engine.config import (
    ConfigError,
    ExperimentConfig,
    check_resume_config,
    config_to_dict,
    save_config,
)
from map3d.engine.distributed import (
    GradientAverager,
    barrier,
    is_timeout,
    max_over_processes,
    timeout_error,
)
from map3d.engine.hints import finetune_command
from map3d.engine.metrics import RunningMean
from map3d.engine.monitor import MetricsWriter, progress_bar
from map3d.engine.optim import build_optimizer, build_scheduler, load_optimizer_state
from map3d.engine.rundir import (
    RunDirError,
    RunLock,
    claim_run_dir,
    open_run_logs,
    refuse_everywhere,
    remove_run_temps,
)
from map3d.engine.setup import (
    AUGMENT_STREAM,
    MODEL_STREAM,
    EpochBatchSampler,
    derive_seed,
    eval_loader,
    make_loader,
    move_to,
    set_dataset_epoch,
    start_run,
)
from map3d.engine.step import build_step, graph_problem, portable_optimizer_state, resolve_step_mode
from map3d.engine.tasks import Task, TaskContext, get_task
from map3d.engine.threads import threads_note
from map3d.models.compile import compile_blocks, resolve_compile
from map3d.models.registry import model_modality

log = logging.getLogger(__name__)


# Dataset attributes stored in checkpoints as `data_info` (class names for `map3d predict`).
DATA_INFO_KEYS = ("class_names", "category_names", "category_parts")


# ----------------------------------------------------------------------------- stop signals


_STOP_CODES = {"SIGINT": 1, "SIGTERM": 2}


class StopFlag:
    """Set by SIGTERM or the first Ctrl-C; the loop checkpoints and stops after the current step.

    A second Ctrl-C raises KeyboardInterrupt as usual (the last complete checkpoint stays).
    Under torchrun a signal may reach only some processes: `agreed` makes every process stop at
    the same step if any of them was asked to.
    """

    def __init__(self):
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.reason is not None:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        log.warning("%s received: stopping after this step and writing a checkpoint", self.reason)

    def agreed(self) -> str | None:
        """The stop reason of any process (SIGTERM over SIGINT), the same on all of them; one
        tiny CPU all-reduce per call under torchrun."""
        code = max_over_processes(_STOP_CODES.get(self.reason, 0))
        return next((name for name, c in _STOP_CODES.items() if c == code), None)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- the run


@dataclass
class RunResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    epoch: int
    step: int
    best_metric_name: str
    best_metric: float | None
    best_metric_kind: str | None = None
    stopped: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def ops_nan_checks_for(device: torch.device) -> Iterator[None]:
    """Skip `map3d.ops`' per-call NaN checks while training on CUDA, where each one is a host
    sync (18-40 ms a step measured on an H100). Nothing goes unchecked: datasets reject NaN
    coordinates when they load them, and the logged loss is checked at every log interval."""
    from map3d import ops

    previous = ops.set_nan_checks(False)
    ops.set_nan_checks(previous and device.type != "cuda")
    try:
        yield
    finally:
        ops.set_nan_checks(previous)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


_EMPTY_MEAN = {"sums": {}, "counts": {}}


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def _adopt_pretrained_release(cfg: ExperimentConfig, task: Task) -> ExperimentConfig:
    """`cfg` whose model matches `train.pretrained` when that is a release checkpoint."""
    if Path(cfg.train.pretrained).suffix == ".safetensors":
        return cfg
    return adopt_release(cfg, load_checkpoint(cfg.train.pretrained), model_task=task.model_task)


class Trainer:
    """Builds everything for `cfg` (setup: `map3d.engine.setup.start_run`) and runs `fit()`."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path | None,
        *,
        resume: str | Path | None = None,
        overwrite: bool = False,
    ):
        """`resume`: checkpoint to continue from; `overwrite`: replace a run in `run_dir`."""
        self.cfg = cfg
        self.resume_path, self.overwrite = resume, overwrite
        self.task: Task = get_task(cfg.train.task)
        self.env = start_run(cfg)
        self.dist, self.device, self.amp_dtype = self.env.dist, self.env.device, self.env.amp_dtype
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if cfg.train.accum_steps < 1:
            raise ValueError(f"train.accum_steps: expected >= 1, got {cfg.train.accum_steps}")

        ckpt = load_checkpoint(resume, map_location="cpu") if resume is not None else None
        if ckpt is not None:
            check_resume_config(ckpt["config"], cfg, str(resume))
        seed, rank = cfg.train.seed, self.dist.rank
        torch.manual_seed(derive_seed(seed, rank))
        np.random.seed(derive_seed(seed, rank) % 2**32)
        self.generators = {
            "augment": torch.Generator(self.device).manual_seed(
                derive_seed(seed, rank, AUGMENT_STREAM)
            ),
            "model": torch.Generator(self.device).manual_seed(
                derive_seed(seed, rank, MODEL_STREAM)
            ),
        }

        self.train_set = self.task.build_dataset(cfg, cfg.data.train_split)
        self.test_set = self._maybe_test_set()
        if cfg.train.pretrained and resume is None:
            cfg = self.cfg = _adopt_pretrained_release(cfg, self.task)
        torch.manual_seed(seed)  # identical initial weights on every rank
        self.model = self.task.build_model(cfg, self.train_set).to(self.device)
        torch.manual_seed(derive_seed(seed, rank))
        if cfg.train.pretrained and resume is None:
            self._load_pretrained(cfg.train.pretrained, cfg.train.pretrained_prefix)

        per_process = cfg.data.batch_size // self.dist.world_size
        if per_process % cfg.train.accum_steps:
            raise ValueError(
                f"data.batch_size={cfg.data.batch_size} over {self.dist.world_size} process(es) "
                f"is not divisible into train.accum_steps={cfg.train.accum_steps} micro-batches"
            )
        self.train_sampler = EpochBatchSampler(
            len(self.train_set),
            cfg.data.batch_size,
            rank=rank,
            world_size=self.dist.world_size,
            shuffle=True,
            drop_last=True,
            seed=seed,
        )
        self.steps_per_epoch = self.train_sampler.batches_per_epoch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"data.batch_size={cfg.data.batch_size} is larger than the {len(self.train_set)} "
                f"training samples of {cfg.data.name!r}"
            )
        self.train_loader = make_loader(self.train_set, self.train_sampler, cfg, self.device)
        self.test_loader = self._test_loader()

        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(
            self.optimizer,
            cfg.schedule,
            base_lr=cfg.optim.lr,
            steps_per_epoch=self.steps_per_epoch,
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.best_kind = self._best_kind()
        self.best_metric: float | None = None
        self.window = RunningMean(self.device)  # scalars since the last `train` record
        self.epoch_mean = RunningMean(self.device)  # scalars since the epoch began
        self.checkpoints = CheckpointWriter()
        if ckpt is not None:
            self._resume(ckpt, resume)
        compiled, self.compile_note = resolve_compile(cfg.train.compile, self.device)
        if compiled:
            compile_blocks(self.model)
        self.step_mode, self.step_mode_note = resolve_step_mode(
            cfg.train.step_mode,
            graph_problem(
                device=self.device,
                distributed=self.dist.enabled,
                grad_scaler=self.scaler.is_enabled(),
                task_problem=self.task.static_step_problem(self.model),
            ),
        )
        graphed = self.step_mode == "cuda_graph"
        self.averager = self._gradient_averager() if graphed else None
        self.ddp_model = self.model if self.averager is not None else self._wrap_ddp()
        self.ctx = TaskContext(
            cfg=cfg,
            device=self.device,
            generator=self.generators["augment"],
            model_generator=self.generators["model"],
            dist=self.dist,
            autocast=self.env.autocast(cache=not graphed),
        )
        self.run_step = build_step(
            self.step_mode, self._step_body, self.optimizer, self.generators.values()
        )
        self.writer = MetricsWriter(
            self.run_dir if self.dist.is_main else None, tensorboard=cfg.output.tensorboard
        )

    # -- setup helpers -------------------------------------------------------------------------
    def _maybe_test_set(self) -> Dataset | None:
        if not self.cfg.data.test_split or self.cfg.train.eval_every_epochs <= 0:
            return None
        return self.task.build_dataset(self.cfg, self.cfg.data.test_split)

    def _best_kind(self) -> str | None:
        """Where best.pt's metric comes from: `test`, `train` (finetuning without a test split)
        or None (pretraining without one: the training loss says nothing about the model)."""
        if self.test_set is not None:
            return "test"
        return None if self.task.model_task == "pretrain" else "train"

    @property
    def best_metric_name(self) -> str | None:
        """The best.pt metric as it appears in epoch records, e.g. `test_oa`."""
        return f"{self.best_kind}_{self.task.best_metric}" if self.best_kind else None

    def _test_loader(self) -> DataLoader | None:
        if self.test_set is None:
            return None
        return eval_loader(self.test_set, self.cfg, self.dist, self.device)

    def _load_pretrained(self, path: str, prefix: str) -> None:
        from map3d.models import load_pretrained

        name, modality, overrides = weights_origin(path)
        own = model_modality(self.cfg.model.name)
        instead = f"finetune them with: {finetune_command(path, name, overrides)}"
        if modality is not None and modality != own:
            raise ConfigError(
                f"{path} holds {modality} weights ({name}), this run builds a {own} model "
                f"({self.cfg.model.name}); {instead}"
            )
        try:
            missing, unexpected = load_pretrained(
                self.model,
                model_state_dict(path),
                prefix=prefix,
                allow_partial=self.cfg.train.allow_partial_pretrained,
                source=path,
            )
        except ValueError as err:  # shapes differ: another preset, or another width
            if name is None:
                raise
            raise ConfigError(
                f"{path} holds {name} weights that do not fit this run's {self.cfg.model.name} "
                f"({err}); {instead}"
            ) from err
        log.info(
            "loaded pretrained weights %s (prefix %r): %d missing, %d unexpected keys",
            path,
            prefix,
            len(missing),
            len(unexpected),
        )
        if missing:
            log.info("missing (trained from scratch): %s", ", ".join(missing))
        if unexpected:
            log.info("unexpected (ignored): %s", ", ".join(unexpected))

    def _gradient_averager(self) -> GradientAverager | None:
        """Under torchrun with a CUDA-graph step: the graph's own gradient all-reduce (see
        map3d.engine.step), after the processes agree on rank 0's weights."""
        if not self.dist.enabled:
            return None
        averager = GradientAverager(self.model, self.dist.world_size)
        averager.sync_initial_state()
        return averager

    def _wrap_ddp(self) -> nn.Module:
        if not self.dist.enabled:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    # -- checkpoints ---------------------------------------------------------------------------
    @property
    def _owns_run_dir(self) -> bool:
        """Whether this process writes the run directory (the main one, when there is one)."""
        return self.run_dir is not None and self.dist.is_main

    def checkpoint_tensors(self) -> dict[str, Any]:
        """The bulk of a checkpoint: the weights and the optimizer state (device tensors)."""
        return {
            "model": _unwrap(self.model).state_dict(),
            "optimizer": portable_optimizer_state(self.optimizer),
        }

    def checkpoint_state(self, meters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything a checkpoint holds but `checkpoint_tensors` (`meters`: the reduced
        states of the running means)."""
        model = _unwrap(self.model)
        model_config = getattr(model, "config", None)
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "map3d_version": map3d.__version__,
            "task": self.task.name,
            "modality": model_modality(self.cfg.model.name),
            "model_name": self.cfg.model.name,
            "model_task": self.task.model_task,
            "model_config": _plain(model_config),
            "config": config_to_dict(self.cfg),
            "data_info": {
                k: _plain(getattr(self.train_set, k))
                for k in DATA_INFO_KEYS
                if getattr(self.train_set, k, None) is not None
            },
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size,
            "best_metric": self.best_metric,
            "best_metric_name": self.best_metric_name,
            "best_metric_kind": self.best_kind,
            "meters": meters or {},
            "rng": capture_rng(self.generators),
            "time": time.time(),
        }

    def save(self, *names: str) -> Path | None:
        """Write the current state to `<run_dir>/<name>` for each name, in the background
        (atomically; the main process writes), with the tensors `stage_checkpoint` copied if
        it was called since the last step. Every process must call it (the running means are
        summed over processes). Returns the first path."""
        meters = {"window": self.window.state_dict(), "epoch": self.epoch_mean.state_dict()}
        if not self._owns_run_dir:
            return None
        if not self.checkpoints.staged:
            self.stage_checkpoint()
        paths = [self.run_dir / name for name in names]
        self.checkpoints.submit(self.checkpoint_state(meters), paths)
        return paths[0]

    def stage_checkpoint(self) -> None:
        """Enqueue the checkpoint's weights and optimizer state copies to host memory (no wait),
        for the `save` that follows before the next step; called as soon as a step is queued,
        the copies' enqueueing overlaps the device's work (no-op where this process writes
        no checkpoints)."""
        if self._owns_run_dir:
            self.checkpoints.stage(self.checkpoint_tensors())

    def _reserve_checkpoint_memory(self) -> None:
        """Pin the checkpoints' host memory in the background once the state has its final
        shapes (after the first step): the first checkpoint then does not wait for it. The
        driver serializes page-locking, so the warm-up steps may wait for it meanwhile."""
        if self._owns_run_dir and self.device.type == "cuda":
            self.checkpoints.reserve(self.checkpoint_tensors())

    def _resume(self, ckpt: dict[str, Any], path: str | Path) -> None:
        if ckpt["task"] != self.task.name:
            raise ValueError(
                f"{path}: a {ckpt['task']!r} checkpoint cannot resume a {self.task.name!r} run"
            )
        if ckpt.get("steps_per_epoch") not in (None, self.steps_per_epoch):
            raise ValueError(
                f"{path}: saved with {ckpt['steps_per_epoch']} steps per epoch, this run has "
                f"{self.steps_per_epoch} (dataset or global batch size changed)"
            )
        _unwrap(self.model).load_state_dict(ckpt["model"])
        load_optimizer_state(self.optimizer, ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.batch_in_epoch, self.step = (
            ckpt["epoch"],
            ckpt["batch_in_epoch"],
            ckpt["step"],
        )
        if ckpt.get("best_metric_kind") == self.best_kind:
            self.best_metric = ckpt["best_metric"]
        elif ckpt["best_metric"] is not None:
            log.warning(
                "%s: its best %s %s is not comparable with this run's best.pt metric "
                "(%s); best.pt restarts",
                path,
                ckpt.get("best_metric_name"),
                ckpt["best_metric"],
                self.best_metric_name,
            )
        if self.dist.is_main:  # the saved means are sums over all processes
            self.window.load_state_dict(ckpt.get("meters", {}).get("window", _EMPTY_MEAN))
            self.epoch_mean.load_state_dict(ckpt.get("meters", {}).get("epoch", _EMPTY_MEAN))
        if ckpt.get("world_size", 1) == self.dist.world_size:
            restore_rng(ckpt["rng"], self.generators)
        else:
            log.warning(
                "resuming with %d processes (saved with %d): RNG streams start afresh",
                self.dist.world_size,
                ckpt.get("world_size", 1),
            )
        log.info(
            "resumed from %s at epoch %d, batch %d, step %d",
            path,
            self.epoch,
            self.batch_in_epoch,
            self.step,
        )

    # -- the loop ------------------------------------------------------------------------------
    def _step_body(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Forward and backward of every micro-batch, gradient clipping and the optimizer update
        (no zero_grad, no schedule step: the part a CUDA graph captures). Returns the batch means
        of the loss and the task's scalars (and `grad_norm` when clipping), as device tensors."""
        cfg = self.cfg
        micro = cfg.train.accum_steps
        size = next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0]
        chunk = size // micro
        values: dict[str, torch.Tensor] = {}
        if self.averager is not None:
            self.averager.broadcast_buffers()
        for i in range(micro):
            part = {
                k: v[i * chunk : (i + 1) * chunk] if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
            sync = contextlib.nullcontext()
            if isinstance(self.ddp_model, nn.parallel.DistributedDataParallel) and i < micro - 1:
                sync = self.ddp_model.no_sync()
            with sync:
                loss, stats = self.task.training_step(self.ddp_model, part, self.ctx)
                self.scaler.scale(loss / micro).backward()
            for name, value in {"loss": loss, **stats}.items():
                value = value.detach().float()
                if micro > 1:
                    value = value / micro  # equal micro-batches: mean of means
                values[name] = values[name] + value if name in values else value
        if self.averager is not None:
            self.averager.average()
        if cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            values["grad_norm"] = norm.detach().float()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return values

    def _optimizer_step(self, batch: dict[str, Any], meters: list[RunningMean]) -> None:
        """One optimizer step on this process's share of a global batch; scalars go to `meters`."""
        size = next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0]
        values = self.run_step(batch)
        for meter in meters:
            meter.update(values, size)
        self.scheduler.step()

    def fit(self) -> RunResult:
        """Train until `schedule.epochs` (or a stop); the run directory is created and locked
        now, and an error that ends the run is logged to its train.log."""
        with contextlib.ExitStack() as stack:
            self._start_run_dir(stack)
            try:
                return self._fit()
            except BaseException as err:
                if self.dist.enabled and is_timeout(err):
                    clear = timeout_error(err, self.dist.rank)
                    log.error("run ended at epoch %d, step %d: %s", self.epoch, self.step, clear)
                    raise clear from err
                log.error(
                    "run ended at epoch %d, step %d by %s: %s",
                    self.epoch,
                    self.step,
                    type(err).__name__,
                    err,
                )
                raise

    def _start_run_dir(self, stack: contextlib.ExitStack) -> None:
        """Lock the run directory (main process; the others learn whether that worked)."""
        error = None
        if self._owns_run_dir:
            try:
                stack.enter_context(RunLock(self.run_dir))
                claim_run_dir(self.run_dir, resume=self.resume_path, overwrite=self.overwrite)
            except RunDirError as err:
                error = err
            else:
                open_run_logs()
                remove_run_temps(self.run_dir)
                save_config(self.cfg, self.run_dir / "config.yaml")
                self.writer.truncate_after(self.step)
        refuse_everywhere(error)

    def _fit(self) -> RunResult:
        self._log_start()
        bar = progress_bar(
            self.cfg.schedule.epochs * self.steps_per_epoch,
            self.step,
            enabled=self.cfg.output.progress and self.dist.is_main,
            desc=self.task.name,
        )
        history: list[dict[str, Any]] = []
        stopped, last_path, start = None, None, self.step
        self._tick, self._tick_step = time.perf_counter(), self.step
        with (
            StopFlag() as stop,
            ops_nan_checks_for(self.device),
            self._writer_joined(),
            self._train_batches() as batches,
        ):
            while self.epoch < self.cfg.schedule.epochs and stopped is None:
                self._begin_epoch()
                for batch in itertools.islice(batches, self.steps_per_epoch - self.batch_in_epoch):
                    self._optimizer_step(
                        move_to(batch, self.device), [self.window, self.epoch_mean]
                    )
                    self._count_step(bar)
                    if self.step == start + 1:
                        self._reserve_checkpoint_memory()
                    epoch_done = self.batch_in_epoch == self.steps_per_epoch
                    if self._checkpoint_due(epoch_done):
                        self.stage_checkpoint()  # before the reads below wait for the device
                    self._log_window(bar)
                    improved = epoch_done and self._close_epoch(history)
                    stopped = self._stop_reason(stop, start)
                    last_path = self._save_if_due(epoch_done, stopped, improved) or last_path
                    if stopped or epoch_done:
                        break
        bar.close()
        barrier()
        if stopped:
            log.warning(
                "run stopped (%s) at epoch %d, step %d; resume with --resume %s",
                stopped,
                self.epoch,
                self.step,
                last_path,
            )
        self.writer.close()
        return self._result(stopped, history)

    def _log_start(self) -> None:
        cfg = self.cfg
        log.info(
            "task %s | model %s (%.2fM params) | %s, %d process(es) | %d samples, %d steps/epoch,"
            " %d epochs | %s | %s | %s | run dir %s",
            self.task.name,
            cfg.model.name,
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            self.device,
            self.dist.world_size,
            len(self.train_set),
            self.steps_per_epoch,
            cfg.schedule.epochs,
            self.step_mode_note,
            self.compile_note,
            threads_note(),
            self.run_dir,
        )

    @contextlib.contextmanager
    def _train_batches(self) -> Iterator[Iterator[dict[str, Any]]]:
        """One iterator over the training batches of every remaining epoch, from
        `self.epoch`, `self.batch_in_epoch` on: the loader's workers keep preparing batches
        across epoch ends (no restart, no empty pipeline after each evaluation or checkpoint).
        Its workers are stopped on the way out, however the run ends."""
        remaining = self.cfg.schedule.epochs - self.epoch
        self.train_sampler.set_epoch(self.epoch, self.batch_in_epoch, epochs=max(1, remaining))
        batches = iter(self.train_loader) if remaining > 0 else iter(())
        try:
            yield batches
        finally:
            # a multi-process iterator stops its workers when collected; stop them now, so that
            # nothing outlives the run (its workers ignore SIGTERM and SIGINT)
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def _begin_epoch(self) -> None:
        """Train mode; the dataset (in this process) at `self.epoch`."""
        self.ddp_model.train()
        set_dataset_epoch(self.train_set, self.epoch)

    def _count_step(self, bar) -> None:
        """Count the optimizer step just taken."""
        self.step += 1
        self.batch_in_epoch += 1
        bar.update(1)

    def _log_window(self, bar) -> None:
        """Every `train.log_every_steps` steps write a `train` record (the window's means, the
        LR, samples/s) and start a new window; the read waits for the device."""
        cfg = self.cfg
        if self.step % cfg.train.log_every_steps:
            return
        values = self.window.compute()
        now = time.perf_counter()
        rate = (self.step - self._tick_step) * cfg.data.batch_size / max(now - self._tick, 1e-9)
        self._tick, self._tick_step = now, self.step
        self._check_finite(values)
        lr = float(self.scheduler.get_last_lr()[0])
        record = {"epoch": self.epoch, "lr": lr, **values, "samples_per_s": rate}
        self.writer.write("train", self.step, record)
        bar.set_postfix(loss=f"{values['loss']:.4f}", sps=f"{rate:.0f}")
        self.window.reset()

    def _close_epoch(self, history: list[dict[str, Any]]) -> bool:
        """The epoch just ended: move to the next, evaluate and log (`_end_epoch`), append its
        record to `history`; returns whether the model is the best so far."""
        self.epoch += 1
        self.batch_in_epoch = 0
        summary, improved = self._end_epoch(self.epoch_mean)
        history.append(summary)
        self.epoch_mean.reset()
        return improved

    def _stop_reason(self, stop: StopFlag, start: int) -> str | None:
        """`max_steps` once this invocation has taken `train.max_steps` steps, else the signal
        any process received (agreed on by all of them), else None."""
        max_steps = self.cfg.train.max_steps
        if max_steps is not None and self.step - start >= max_steps:
            return "max_steps"
        return stop.agreed()

    def _checkpoint_due(self, epoch_done: bool) -> bool:
        """Whether this step ends an epoch or a `train.checkpoint_every_steps` period."""
        every = self.cfg.train.checkpoint_every_steps
        return epoch_done or bool(every and self.step % every == 0)

    def _save_if_due(self, epoch_done: bool, stopped: str | None, improved: bool) -> Path | None:
        """Write last.pt (and best.pt when `improved`) at the end of an epoch, on a stop and
        every `train.checkpoint_every_steps` steps; returns last.pt's path when written here."""
        if not (stopped or self._checkpoint_due(epoch_done)):
            return None
        return self.save(*(("last.pt", "best.pt") if improved else ("last.pt",)))

    def _result(self, stopped: str | None, history: list[dict[str, Any]]) -> RunResult:
        best = self.run_dir / "best.pt" if self.run_dir is not None else None
        return RunResult(
            run_dir=self.run_dir,
            last_checkpoint=self.run_dir / "last.pt" if self.run_dir is not None else None,
            best_checkpoint=best if best is not None and best.exists() else None,
            epoch=self.epoch,
            step=self.step,
            best_metric_name=self.task.best_metric,
            best_metric=self.best_metric,
            best_metric_kind=self.best_kind,
            stopped=stopped,
            history=history,
        )

    @contextlib.contextmanager
    def _writer_joined(self) -> Iterator[None]:
        """Wait for the checkpoint in flight when training ends, also on an error (whose
        traceback then wins over a failed write's)."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.checkpoints.wait()
            raise
        self.checkpoints.wait()

    def _check_finite(self, values: dict[str, float]) -> None:
        if not math.isfinite(values.get("loss", 0.0)):
            raise FloatingPointError(
                f"loss became {values['loss']} at step {self.step} (epoch {self.epoch}); "
                "lower optim.lr, set optim.grad_clip, or use train.precision=fp32"
            )

    def _end_epoch(self, epoch_mean: RunningMean) -> tuple[dict[str, Any], bool]:
        """Evaluate (if due), update the best metric, log an `epoch` record; returns it and
        whether the model is the best so far (best.pt is then written with last.pt)."""
        cfg = self.cfg
        train_values = epoch_mean.compute()
        summary: dict[str, Any] = {
            "epoch": self.epoch,
            **{f"train_{k}": v for k, v in train_values.items()},
        }
        due = self.epoch % max(1, cfg.train.eval_every_epochs) == 0
        if self.test_loader is not None and (due or self.epoch == cfg.schedule.epochs):
            self.ddp_model.eval()
            metrics = self.task.evaluate(_unwrap(self.ddp_model), self.test_loader, self.ctx)
            self.ddp_model.train()
            summary.update({f"test_{k}": v for k, v in metrics.items()})
        value = summary.get(self.best_metric_name) if self.best_kind else None
        improved = _is_better(value, self.best_metric, self.task.best_mode)
        if improved:
            self.best_metric = value
        if self.best_kind:
            summary["best_" + self.task.best_metric] = self.best_metric
            summary["best_metric_name"] = self.best_metric_name
        self.writer.write("epoch", self.step, summary)
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in summary.items() if isinstance(v, float) and k != "epoch"
        )
        log.info("epoch %d/%d: %s", self.epoch, cfg.schedule.epochs, shown)
        if improved:
            log.info("best %s so far: %.4g (best.pt)", self.best_metric_name, value)
        return summary, improved


def _plain(value: Any) -> Any:
    """Dataclasses/tuples → dicts/lists of plain values (weights_only-safe)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
