"""High-level jobs behind the CLI (and usable from Python): train, few-shot folds, evaluate, probe.

```
result = train(cfg, "runs/pre")                       # RunResult (last.pt, best.pt, metrics)
summary = train_fewshot(cfg, "runs/fs", folds=range(10))  # mean ± std of the best OA per fold
results = evaluate_checkpoint("runs/ft/best.pt")      # OA, mAcc, 10-vote OA/mAcc + protocol
probe = svm_probe("runs/pre/last.pt", cfg)            # linear-SVM accuracy on frozen features
```
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from map3d.atomic import write_json
from map3d.engine.checkpoint import (
    adopt_release,
    export_encoder,
    load_checkpoint,
    model_from_checkpoint,
    model_state_dict,
)
from map3d.engine.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
)
from map3d.engine.distributed import (
    DistInfo,
    broadcast_object,
    is_main_process,
)
from map3d.engine.metrics import mean_std
from map3d.engine.monitor import Progress, TqdmLoggingHandler
from map3d.engine.rundir import RunDirError, RunLogHandler, check_run_dir, refuse_everywhere
from map3d.engine.setup import RunEnv, eval_loader, run_env, start_run
from map3d.engine.tasks import TaskContext, get_task
from map3d.engine.threads import threads_note
from map3d.engine.trainer import RunResult, Trainer
from map3d.errors import MissingDependencyError
from map3d.models.registry import model_modality

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.safetensors"


def resolve_run_dir(cfg: ExperimentConfig, out: str | os.PathLike | None) -> Path:
    """`out`, or `output.dir` with `{task}`/`{time}` filled (same on every process)."""
    if out is not None:
        return Path(out)
    stamp = broadcast_object(time.strftime("%Y%m%d-%H%M%S"))
    return Path(cfg.output.dir.format(task=cfg.train.task, time=stamp))


def setup_logging(run_dir: Path | None, dist: DistInfo, *, verbose: bool = True) -> None:
    """INFO to stderr (main process; others warnings only) and to `<run_dir>/train.log` (held
    in memory until the run starts, so that a failed command leaves no run folder)."""
    logger = logging.getLogger("map3d")
    logger.setLevel(logging.INFO if dist.is_main and verbose else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for handler in list(logger.handlers):
        if getattr(handler, "_map3d", False):
            logger.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [TqdmLoggingHandler(sys.stderr)]
    if run_dir is not None and dist.is_main:
        handlers.append(RunLogHandler(run_dir / "train.log"))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler._map3d = True
        logger.addHandler(handler)
    logger.propagate = False


def _check_out(run_dir, resume, overwrite: bool) -> None:
    """`check_run_dir` on the main process, its refusal raised on every process."""
    error = None
    if run_dir is not None and is_main_process():
        try:
            check_run_dir(run_dir, resume=resume, overwrite=overwrite)
        except RunDirError as err:
            error = err
    refuse_everywhere(error)


def train(
    cfg: ExperimentConfig,
    run_dir: str | os.PathLike | None,
    *,
    resume: str | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Train `cfg` into `run_dir` (resuming from a checkpoint if given; `overwrite` replaces a
    run already there, which is refused otherwise); pretraining runs also export their encoder
    to `<run_dir>/encoder.safetensors`."""
    _check_out(run_dir, resume, overwrite)
    trainer = Trainer(cfg, run_dir, resume=resume, overwrite=overwrite)
    result = trainer.fit()
    if (
        trainer.task.model_task == "pretrain"
        and result.stopped is None
        and trainer.dist.is_main
        and result.run_dir is not None
    ):
        export_encoder(
            trainer.model.state_dict(),
            result.run_dir / ENCODER_FILE,
            metadata={
                "model_name": cfg.model.name,
                "modality": model_modality(cfg.model.name),
                "model_overrides": cfg.model.overrides,
                "step": result.step,
            },
        )
    return result


def train_fewshot(
    cfg: ExperimentConfig,
    run_dir: str | os.PathLike,
    *,
    folds: list[int],
    overwrite: bool = False,
) -> dict[str, Any]:
    """One finetuning run per fold (`data.options.fold`), in `<run_dir>/fold<k>`; writes and
    returns `fewshot.json`: best test OA per fold and their mean ± std
    (docs/protocols.md#few-shot-modelnet40)."""
    run_dir = Path(run_dir)
    _check_out(run_dir, None, overwrite)
    per_fold: dict[str, float] = {}
    for fold in folds:
        fold_cfg = apply_overrides(cfg, [f"data.options.fold={fold}"])
        result = train(fold_cfg, run_dir / f"fold{fold}", overwrite=overwrite)
        if result.stopped is not None:
            raise RuntimeError(f"fold {fold} stopped early ({result.stopped}); rerun it")
        per_fold[str(fold)] = result.best_metric
        log.info("fold %d: best %s %.2f", fold, result.best_metric_name, result.best_metric)
    stats = mean_std(list(per_fold.values()))
    summary = {
        "metric": "best test overall accuracy (%) per fold, then mean ± sample std over folds",
        "way": cfg.data.options.get("way"),
        "shot": cfg.data.options.get("shot"),
        "folds": per_fold,
        **stats,
    }
    if is_main_process():
        write_json(run_dir / "fewshot.json", summary)
    return summary


def _model_from_checkpoint(
    ckpt: dict, cfg: ExperimentConfig, dataset, path: str | os.PathLike
) -> torch.nn.Module:
    """The checkpoint's model, built from the experiment config `cfg` (its `model.overrides`
    apply) with the sizes of `dataset`."""
    task = get_task(ckpt["task"])
    cfg = adopt_release(cfg, ckpt, model_task=task.model_task, whole_model=True)
    config = cfg.model_config(task.model_task, task.dataset_sizes(cfg, dataset))
    return model_from_checkpoint(ckpt, path, config=config)


def checkpoint_config(ckpt: dict, overrides: list[str] | None = None) -> ExperimentConfig:
    """The experiment config stored in a checkpoint, with `a.b=value` overrides applied."""
    if ckpt.get("config") is None:
        raise ConfigError(
            f"this {ckpt.get('release', 'foreign')} release checkpoint carries no experiment "
            "config; pass --config (e.g. configs/finetune/modelnet40.yaml)"
        )
    return apply_overrides(config_from_dict(ckpt["config"]), overrides or [])


def _context(cfg: ExperimentConfig, env: RunEnv) -> TaskContext:
    """An evaluation context: one generator (seeded by `train.seed`) for augments and model."""
    g = torch.Generator(env.device).manual_seed(cfg.train.seed)
    return TaskContext(
        cfg=cfg,
        device=env.device,
        generator=g,
        model_generator=g,
        dist=env.dist,
        autocast=env.autocast(),
    )


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    cfg: ExperimentConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run the checkpoint's task test protocol on `cfg.data.test_split` (cfg defaults to the one
    stored in the checkpoint); writes the results (with their protocol) as JSON to `out`."""
    ckpt = load_checkpoint(checkpoint)
    cfg = cfg if cfg is not None else checkpoint_config(ckpt)
    task = get_task(ckpt["task"])
    env = start_run(cfg)
    dist, ctx = env.dist, _context(cfg, env)
    dataset = task.build_dataset(cfg, cfg.data.test_split)
    model = _model_from_checkpoint(ckpt, cfg, dataset, checkpoint).to(ctx.device).eval()
    loader = eval_loader(dataset, cfg, dist, ctx.device)
    log.info(
        "evaluating %s on %s/%s | %s",
        checkpoint,
        cfg.data.name,
        cfg.data.test_split,
        threads_note(),
    )
    batches = Progress(
        loader,
        desc=f"eval {cfg.data.name}/{cfg.data.test_split}",
        unit="batch",
        enabled=dist.is_main,
    )
    results = task.test(model, batches, ctx)
    results["checkpoint"] = {
        "path": str(checkpoint),
        "epoch": ckpt["epoch"],
        "step": ckpt["step"],
        "model_name": ckpt["model_name"],
        "map3d_version": ckpt["map3d_version"],
    }
    if out is not None and dist.is_main:
        write_json(out, results)
    return results


@torch.no_grad()
def _features(model, dataset, cfg, ctx, dist) -> tuple[torch.Tensor, torch.Tensor]:
    from map3d.engine.inputs import batch_input

    feats, labels = [], []
    for batch in eval_loader(dataset, cfg, dist, ctx.device):
        inputs, x = batch_input(batch, ctx.device)
        with ctx.autocast():
            tokens = model.features(inputs.evaluate(x, cfg))[:, 1:].float()  # (B,G,C), no cls
        feats.append(torch.cat([tokens.amax(1), tokens.mean(1)], dim=-1).cpu())  # (B,2C)
        labels.append(torch.as_tensor(batch["label"]).view(-1))
    return torch.cat(feats), torch.cat(labels)


def _classifier_overrides(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The model overrides a classifier accepts (a pretraining config also sets decoder ones)."""
    from map3d.models import build_config

    kept = {}
    for key, value in overrides.items():
        try:
            build_config(name, "classify", **{key: value})
        except ValueError:
            log.info("SVM probe: classifier ignores model override %s=%r", key, value)
            continue
        kept[key] = value
    return kept


def svm_probe(
    checkpoint: str | os.PathLike | None, cfg: ExperimentConfig, *, c: float = 1.0
) -> dict[str, Any]:
    """Linear-SVM probe (docs/protocols.md#linear-svm-probe): frozen encoder of `checkpoint` (any
    task; None = the randomly initialised encoder seeded by `train.seed`, the probe's baseline),
    features of a classifier built from `cfg` on its train/test splits,
    `sklearn.svm.LinearSVC(C=c)` (seeded); returns the test accuracy (%). Single process."""
    try:
        from sklearn.svm import LinearSVC
    except ImportError as err:
        raise MissingDependencyError(
            "the SVM probe needs scikit-learn: pip install scikit-learn"
        ) from err
    from map3d.models import load_pretrained

    dist = DistInfo()
    ctx = _context(cfg, run_env(cfg, dist))
    task = get_task("classify")
    cfg = copy.deepcopy(cfg)
    cfg.model.overrides = _classifier_overrides(cfg.model.name, cfg.model.overrides)
    train_set = task.build_dataset(cfg, cfg.data.train_split)
    test_set = task.build_dataset(cfg, cfg.data.test_split)
    torch.manual_seed(cfg.train.seed)
    if checkpoint is not None and Path(checkpoint).suffix != ".safetensors":
        cfg = adopt_release(cfg, load_checkpoint(checkpoint), model_task=task.model_task)
    model = task.build_model(cfg, train_set)
    if checkpoint is not None:
        load_pretrained(
            model,
            model_state_dict(checkpoint),
            prefix=cfg.train.pretrained_prefix,
            allow_partial=cfg.train.allow_partial_pretrained,
            source=checkpoint,
        )
    model = model.to(ctx.device).eval()
    x_train, y_train = _features(model, train_set, cfg, ctx, dist)
    x_test, y_test = _features(model, test_set, cfg, ctx, dist)
    svm = LinearSVC(C=c, random_state=0).fit(x_train.numpy(), y_train.numpy())
    acc = 100.0 * float((svm.predict(x_test.numpy()) == y_test.numpy()).mean())
    return {
        "svm_oa": acc,
        "protocol": {
            "probe": f"sklearn LinearSVC(C={c}, random_state=0) on frozen encoder features "
            "concat[max, mean] of the G tokens (head unused)",
            "encoder": str(checkpoint) if checkpoint is not None else "random init",
            "dataset": cfg.data.name,
            "train_split": cfg.data.train_split,
            "test_split": cfg.data.test_split,
            "npoints": cfg.data.npoints,
            "train_samples": len(train_set),
            "test_samples": len(test_set),
        },
    }
