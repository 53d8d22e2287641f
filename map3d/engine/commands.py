"""`map3d pretrain | finetune | eval | export`: argument parsing around `map3d.engine.runs`.

Every option can also be set in the YAML config; the command line wins. Under
`torchrun --nproc_per_node=N map3d ...` (or `python -m torch.distributed.run ... -m map3d ...`)
the same commands train with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from map3d.command import Command
from map3d.engine.config import ConfigError, apply_overrides, default_config, load_config
from map3d.errors import UserError

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"


def _add_common(p: argparse.ArgumentParser, *, task: str) -> None:
    p.add_argument(
        "--config",
        metavar="YAML",
        help="experiment config (configs/...); default: the built-in synthetic-shapes "
        f"{task} experiment (configs/{'pretrain' if task == 'pretrain' else 'finetune'}"
        "/synthetic.yaml)",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="dataset root folder (sets data.root; see data/README.md for layouts); omit to "
        "use the built-in synthetic shapes",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="run directory for config.yaml, metrics.jsonl, train.log, last.pt, best.pt "
        "(default: output.dir, runs/<task>-<time>)",
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a config value, repeatable, e.g. --set optim.lr=1e-4 "
        "--set data.augment=[rotate_y] --set model.overrides.num_groups=64 (values are YAML)",
    )
    p.add_argument(
        "--resume",
        metavar="CKPT",
        help="continue a stopped run exactly where it stopped: its last.pt or its run "
        "directory (uses the checkpoint's config; --set still applies)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (without it, a new run refuses an --out that "
        "holds one)",
    )
    p.add_argument("--device", help="auto (CUDA if available), cpu, cuda, cuda:1 (train.device)")
    p.add_argument("--seed", type=int, help="random seed of the run (train.seed)")
    _add_threads(p)
    p.add_argument("--epochs", type=int, help="number of epochs (schedule.epochs)")


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads per process (default: OMP_NUM_THREADS if set, else the cores "
        "this process may use, divided among torchrun's local processes); logged at start",
    )


def _flag_overrides(args: argparse.Namespace, flags: tuple[tuple[str, str], ...]) -> list[str]:
    """`key=value` overrides for the (flag, config key) pairs whose flag was given."""
    return [
        f"{key}={getattr(args, flag)}" for flag, key in flags if getattr(args, flag) is not None
    ]


def _build_config(args: argparse.Namespace, task: str):
    """Config from --config / --resume / built-in default, then CLI flags, then --set."""
    if args.resume:
        if args.config:
            raise ConfigError("--resume uses the checkpoint's config; drop --config")
        from map3d.engine.checkpoint import load_checkpoint
        from map3d.engine.runs import checkpoint_config

        cfg = checkpoint_config(load_checkpoint(_resume_path(args.resume)))
    elif args.config:
        cfg = load_config(args.config)
    else:
        cfg = default_config(task)
    if args.data is not None and cfg.data.name == SYNTHETIC:
        raise ConfigError(
            "--data needs a config that names the dataset, e.g. "
            "--config configs/finetune/modelnet40.yaml --data /path/to/ModelNet40"
        )
    flags = (("device", "train.device"), ("seed", "train.seed"), ("epochs", "schedule.epochs"))
    cfg = apply_overrides(cfg, _flag_overrides(args, flags))
    if args.data is not None:
        cfg.data.root = args.data
    if getattr(args, "pretrained", None):
        cfg.train.pretrained = args.pretrained
    if getattr(args, "allow_partial", False):
        cfg.train.allow_partial_pretrained = True
    cfg = apply_overrides(cfg, list(args.overrides))
    if (task == "pretrain") != (cfg.train.task == "pretrain"):
        raise ConfigError(
            f"this config trains task {cfg.train.task!r}; use `map3d "
            f"{'pretrain' if cfg.train.task == 'pretrain' else 'finetune'}`"
        )
    return cfg


def _resume_path(path: str) -> Path:
    p = Path(path)
    return p / "last.pt" if p.is_dir() else p


def _start(cfg, args):
    from map3d.engine.runs import resolve_run_dir, setup_logging
    from map3d.engine.setup import start_distributed
    from map3d.engine.threads import configure_threads

    dist = start_distributed(cfg)
    out = args.out
    if out is None and args.resume:
        out = _resume_path(args.resume).parent
    run_dir = resolve_run_dir(cfg, out)
    setup_logging(run_dir, dist)
    configure_threads(args.threads)
    return dist, run_dir


def _report(lines: list[str], dist) -> None:
    if dist.is_main:
        print("\n".join(lines), flush=True)


def stop_status(reason: str) -> int:
    """Exit status of a run that stopped early: 0 at train.max_steps, else 128 + the signal's
    number (143 for SIGTERM, 130 for Ctrl-C), as a shell reports a process ended by it."""
    if reason == "max_steps":
        return 0
    return 128 + int(signal.Signals[reason])


def _report_stop(result, command: str, dist) -> int:
    """Say where a run that stopped early stands and how to continue it; its exit status."""
    _report(
        [
            f"stopped ({result.stopped}) at step {result.step}; continue with:",
            f"  map3d {command} --resume {result.last_checkpoint}",
        ],
        dist,
    )
    return stop_status(result.stopped)


def _run_pretrain(args: argparse.Namespace) -> int:
    from map3d.engine.hints import finetune_command
    from map3d.engine.runs import ENCODER_FILE, train

    cfg = _build_config(args, "pretrain")
    dist, run_dir = _start(cfg, args)
    result = train(
        cfg,
        run_dir,
        resume=_resume_path(args.resume) if args.resume else None,
        overwrite=args.overwrite,
    )
    if result.stopped:
        return _report_stop(result, "pretrain", dist)
    lines = [
        f"pretraining done: {result.epoch} epochs, {result.step} steps, "
        f"final {result.best_metric_name} {result.history[-1].get('train_loss', float('nan')):.4f}"
        if result.history
        else f"pretraining done: {result.step} steps",
        f"checkpoint: {result.last_checkpoint}",
        f"encoder (safetensors): {run_dir / ENCODER_FILE}",
        "finetune from it:",
        f"  {finetune_command(result.last_checkpoint, cfg.model.name, cfg.model.overrides)}",
    ]
    _report(lines, dist)
    return 0


def _add_pretrain(p: argparse.ArgumentParser) -> None:
    _add_common(p, task="pretrain")


def _add_finetune(p: argparse.ArgumentParser) -> None:
    _add_common(p, task="classify")
    p.add_argument(
        "--pretrained",
        metavar="CKPT",
        help="initialise the encoder from a pretraining checkpoint (.pt), an exported "
        "encoder (.safetensors) or a PointMAP / Mamba3D / Point-MAE release checkpoint "
        "(detected, converted, model built with its compat), keys under "
        "train.pretrained_prefix (encoder.); omit to train from scratch",
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept --pretrained weights that cover only part of the encoder (the rest starts "
        "from scratch; train.allow_partial_pretrained); by default every encoder tensor must "
        "be in the file",
    )
    p.add_argument(
        "--fold",
        metavar="K|all",
        help="few-shot configs: train fold K (sets data.options.fold), or 'all' to run every "
        "fold of eval.fewshot_folds and report mean ± std (written to fewshot.json)",
    )


def _run_finetune(args: argparse.Namespace) -> int:
    from map3d.engine.runs import train, train_fewshot

    cfg = _build_config(args, "classify")
    if args.fold not in (None, "all"):
        if not args.fold.isdigit():
            raise ConfigError(f"--fold: expected a fold number or 'all', got {args.fold!r}")
        cfg = apply_overrides(cfg, [f"data.options.fold={int(args.fold)}"])
    dist, run_dir = _start(cfg, args)
    if args.fold == "all":
        summary = train_fewshot(
            cfg, run_dir, folds=list(cfg.eval.fewshot_folds), overwrite=args.overwrite
        )
        headline = (
            f"few-shot {summary['way']}-way {summary['shot']}-shot: "
            f"{summary['mean']:.2f} ± {summary['std']:.2f} % over {summary['n']} folds"
        )
        _report([headline, f"details: {run_dir / 'fewshot.json'}"], dist)
        return 0
    result = train(
        cfg,
        run_dir,
        resume=_resume_path(args.resume) if args.resume else None,
        overwrite=args.overwrite,
    )
    if result.stopped:
        return _report_stop(result, "finetune", dist)
    best = result.best_checkpoint or result.last_checkpoint
    score = "n/a" if result.best_metric is None else f"{result.best_metric:.2f}"
    _report(
        [
            f"finetuning done: best {result.best_metric_kind} {result.best_metric_name} {score}",
            f"checkpoints: {result.last_checkpoint}, {best}",
            "evaluate with voting:",
            f"  map3d eval --checkpoint {best}",
        ],
        dist,
    )
    return 0


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="checkpoint to evaluate (best.pt / last.pt, a run directory, or a "
        "release checkpoint with --config)",
    )
    p.add_argument(
        "--config",
        metavar="YAML",
        help="evaluate under this config instead of the one stored in the checkpoint",
    )
    p.add_argument("--data", metavar="DIR", help="dataset root (data.root)")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a config value (repeatable), e.g. --set data.test_split=test",
    )
    p.add_argument("--votes", type=int, help="number of votes (eval.votes, default 10; 0 = off)")
    p.add_argument(
        "--svm",
        action="store_true",
        help="also run the linear-SVM probe on frozen encoder features "
        "(scikit-learn); works on pretraining checkpoints too",
    )
    p.add_argument(
        "--out", metavar="JSON", help="results file (default: results.json next to the checkpoint)"
    )
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 (train.device)")
    p.add_argument("--seed", type=int, help="seed of the vote subsets and augmentations")
    _add_threads(p)


def _run_eval(args: argparse.Namespace) -> int:
    from map3d.atomic import write_json
    from map3d.engine.checkpoint import load_checkpoint, run_checkpoint
    from map3d.engine.runs import checkpoint_config, evaluate_checkpoint, setup_logging, svm_probe
    from map3d.engine.setup import start_distributed
    from map3d.engine.threads import configure_threads

    ckpt_path = run_checkpoint(args.checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    flags = (("device", "train.device"), ("seed", "train.seed"), ("votes", "eval.votes"))
    cfg = load_config(args.config) if args.config else checkpoint_config(ckpt)
    cfg = apply_overrides(cfg, _flag_overrides(args, flags))
    if args.data is not None:
        cfg.data.root = args.data
    cfg = apply_overrides(cfg, list(args.overrides))
    dist = start_distributed(cfg)
    setup_logging(None, dist)
    configure_threads(args.threads)
    out = Path(args.out) if args.out else ckpt_path.parent / f"results_{ckpt_path.stem}.json"
    lines = []
    if ckpt["task"] != "pretrain" or not args.svm:
        results = evaluate_checkpoint(ckpt_path, cfg, out=None)
        lines += [
            f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}"
            for k, v in results.items()
            if k not in ("protocol", "checkpoint")
        ]
    else:
        results = {"checkpoint": {"path": str(ckpt_path)}}
    if args.svm:
        svm_cfg = cfg
        if ckpt["task"] == "pretrain" and cfg.data.options.get("task") == "pretrain":
            svm_cfg = apply_overrides(cfg, ["data.options.task=classify"])
        results["svm"] = svm_probe(ckpt_path, svm_cfg)
        lines.append(f"svm_oa: {results['svm']['svm_oa']:.2f}")
    if dist.is_main:
        _report(lines, dist)  # printed first: a failed write below loses nothing
        try:
            write_json(out, results)
        except OSError as err:
            raise UserError(
                f"could not write the results to {out} ({err.strerror or err}); they are "
                "printed above (choose another file with --out)"
            ) from err
        _report([f"results (with protocol): {out}"], dist)
    return 0


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        help="map3d checkpoint (.pt), run directory or release "
        "checkpoint (PointMAP / Mamba3D / Point-MAE)",
    )
    p.add_argument(
        "output",
        nargs="?",
        help="safetensors file (default: encoder.safetensors next to the checkpoint)",
    )
    p.add_argument(
        "--prefix",
        default="encoder.",
        help="export the weights under this prefix (stripped in the file)",
    )


def _run_export(args: argparse.Namespace) -> int:
    from map3d.engine.checkpoint import (
        checkpoint_modality,
        checkpoint_model_overrides,
        export_encoder,
        load_checkpoint,
    )

    path = _resume_path(args.checkpoint)
    ckpt = load_checkpoint(path)
    out = Path(args.output) if args.output else path.parent / "encoder.safetensors"
    count = export_encoder(
        ckpt["model"],
        out,
        prefix=args.prefix,
        metadata={
            "model_name": ckpt["model_name"],
            "step": ckpt["step"],
            "modality": checkpoint_modality(ckpt),
            "model_overrides": checkpoint_model_overrides(ckpt),
            "model_config": ckpt["model_config"],
        },
    )
    print(f"wrote {count} tensors to {out}")
    return 0


PRETRAIN = Command(
    help="MAP pretraining (default: built-in synthetic shapes, ~5 minutes on a 2-core CPU)",
    description="Masked autoregressive pretraining of a point encoder. With no arguments it "
    "pretrains the small default model on the built-in synthetic shapes and prints where the "
    "checkpoint went and how to finetune from it. Paper recipe: --config "
    "configs/pretrain/shapenet55_map.yaml --data /path/to/ShapeNet55.",
    add_arguments=_add_pretrain,
    run=_run_pretrain,
)

FINETUNE = Command(
    help="finetune a classifier (from a pretrained encoder or from scratch)",
    description="Supervised finetuning for classification. Default: the built-in synthetic "
    "shapes. Recipes: configs/finetune/{modelnet40,scanobjectnn_*,modelnet40_fewshot}.yaml. "
    "Few-shot: --fold all runs every fold and reports mean ± std.",
    add_arguments=_add_finetune,
    run=_run_finetune,
)

EVAL = Command(
    help="evaluate a checkpoint: OA, mean class accuracy, 10-vote accuracy (+ SVM probe)",
    description="Evaluates a checkpoint on its test split with the protocol written into the "
    "results JSON: single-pass OA and mean class accuracy, and voting (logits averaged over "
    "eval.votes random subsets with the test transform). Pretraining checkpoints report their "
    "masked reconstruction loss; --svm adds a linear-SVM probe.",
    add_arguments=_add_eval,
    run=_run_eval,
)

EXPORT = Command(
    help="export a checkpoint's encoder weights as safetensors",
    description="Writes the encoder (keys under --prefix, prefix stripped) of a map3d "
    "checkpoint to a .safetensors file with the model name and config in its metadata; "
    "`map3d finetune --pretrained FILE.safetensors` loads it.",
    add_arguments=_add_export,
    run=_run_export,
)
