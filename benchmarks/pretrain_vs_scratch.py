"""Does MAP pretraining pay? Encoders pretrained on different corpora vs training from scratch.

Arms: one line each in `ARMS` below (its pretraining data, and the model overrides of its
pretraining and of its encoder on top of the default MAP pretraining config). Every MAP arm gets
the same backbone and the same pretraining compute: `--pretrain-steps` optimizer steps of
`--pretrain-batch` shapes, the epoch count rounded to fit.
  scratch            no pretraining (random init; the baseline every other arm is paired with)
  map_synthetic      MAP (R=8 regions, serialized decoder order, Hilbert order) on
                     `--pretrain-samples` unlabelled built-in synthetic shapes (their own data
                     seed: none of the labelled or test shapes below is seen)
  map_corpus         the same MAP on the real-shape corpus of `--corpus`
                     (`python -m map3d.data.build_corpus`)
  map_both           the same MAP on both sets together
The objective study (issue "reproduce the releases": same data as map_synthetic, one change each):
  map_release_order  decoder fed [visible ; masked] as the 3D release (`decoder_order=release`)
  mae                one region, R=1: an MAE decoder (every masked token sees all visible ones)
  ar                 R=G regions: token-level autoregression
  map_fps            tokens in FPS order instead of the Hilbert curve (`serialization=none`),
                     for pretraining, finetuning and probe alike
  scratch_fps        scratch in FPS order: map_fps's own baseline
All pretraining sets are read through the `shapenet55` loader (the synthetic shapes are written
in its layout under `<out>/data`), so the data arms differ only in their shapes.

Evaluation on the built-in synthetic shapes, per seed (the seed draws a 10-way K-shot labelled
set and a test set, and seeds the training), identical for every arm:
  (a) few-shot finetuning of the whole classifier; test OA (%) after the last epoch (no
      best-epoch selection). `--layer-decay` applies to pretrained encoders only; label
      smoothing and drop path to all arms.
  (b) a linear probe: `LinearSVC` on frozen encoder features (concat[max, mean] of the tokens)
      of the same K-shot set; the scratch arm's encoder is the random init of that seed.
Table: mean ± sample std per arm, and per other arm the paired difference to scratch over
seeds with a two-sided paired t-test. Results go to `<out>/arm-<name>.json` (written atomically
after every run, so a process stopped by a timeout keeps the seeds it finished; a rerun with the
same `--out` skips runs already there and reuses a finished pretraining of the same settings),
`<out>/table.md` and `<out>/summary.json`. Arms can run in separate processes or machines into
separate folders; `--table-only --merge DIR...` builds the table from their JSON files (files of
the same arm, e.g. different seeds from different processes, are joined seed by seed; their
settings and arm definitions must match).

CPU smoke run (tiny model, a few steps; proves the pipeline, measures nothing):
    python benchmarks/pretrain_vs_scratch.py --smoke --out runs/pvs_smoke
GPU study at paper size, all arms in one process (benchmarks/RESULTS.md, "Pretraining that
pays", splits the arms over one process per GPU and device call, and says how to bring the
corpus along):
    python -m map3d.data.build_corpus --out .corpus --points 2048
    python benchmarks/pretrain_vs_scratch.py --paper --device cuda --workers 8 --corpus .corpus \
        --out runs/pvs
The CPU protocol of the earlier results (the defaults; the synthetic pretraining shapes now go
through the `shapenet55` loader, a random 512 of 2,048 stored points per item):
    python benchmarks/pretrain_vs_scratch.py --arms scratch map_synthetic --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from map3d.atomic import atomic_write
from map3d.engine.config import apply_overrides, default_config
from map3d.engine.metrics import mean_std, paired_t_test
from map3d.engine.runs import svm_probe, train

NUM_CLASSES = 10  # the built-in synthetic shapes
PRETRAIN_DATA_SEED = 1000
G = "G"  # an override value meaning "the number of groups" (--groups)


@dataclass(frozen=True)
class Arm:
    """data: the pretraining set ("synthetic", "corpus", "both"; None: no pretraining);
    pretrain: model overrides of the MAP pretraining only; encoder: model overrides of the
    encoder, applied to pretraining, finetuning and probe alike; text: the table's description."""

    data: str | None
    text: str
    pretrain: dict = field(default_factory=dict)
    encoder: dict = field(default_factory=dict)


# One line per arm; every MAP arm starts from the default pretraining config (R=8 regions, or the
# largest of 8, 4, 2, 1 dividing G; serialized decoder order; Hilbert order).
ARMS = {
    "scratch": Arm(None, "none"),
    "map_synthetic": Arm("synthetic", "MAP (default)"),
    "map_release_order": Arm(
        "synthetic", "MAP, release decoder order [visible ; masked]", {"decoder_order": "release"}
    ),
    "mae": Arm("synthetic", "MAE (R=1)", {"num_regions": 1}),
    "ar": Arm("synthetic", "token-level AR (R=G)", {"num_regions": G}),
    "map_fps": Arm(
        "synthetic", "MAP, FPS order (no Hilbert curve)", encoder={"serialization": "none"}
    ),
    "scratch_fps": Arm(None, "none, FPS order", encoder={"serialization": "none"}),
    "map_corpus": Arm("corpus", "MAP (default)"),
    "map_both": Arm("both", "MAP (default)"),
}

# The CPU protocol of the earlier results (built-in shapes, hybridmt3d_tiny): the defaults.
CPU = {
    "preset": "hybridmt3d_tiny",
    "npoints": 512,
    "groups": 32,
    "group_size": 16,
    "pretrain_samples": 1024,
    "pretrain_steps": 192,
    "pretrain_batch": 32,
    "stored_points": 2048,
    "shots": 4,
    "test_samples": 200,
    "finetune_epochs": 30,
    "finetune_batch": 8,
    "seeds": [0, 1, 2],
}
# Paper size on one GPU: HybridMT3D-S (C=384, "MMMT" x 4), G=64 groups of K=32 from 1,024
# points, MAP decoder with R=8 regions; 10-way 10-shot finetuning, seeds 0-4.
PAPER = {
    "preset": "hybridmt3d_s",
    "npoints": 1024,
    "groups": 64,
    "group_size": 32,
    "pretrain_samples": 8192,
    "pretrain_steps": 1000,
    "pretrain_batch": 128,
    "stored_points": 2048,
    "shots": 10,
    "test_samples": 500,
    "finetune_epochs": 100,
    "finetune_batch": 32,
    "seeds": [0, 1, 2, 3, 4],
}
# Tiny CPU smoke: every stage runs, in a few minutes.
SMOKE = {
    "preset": "hybridmt3d_tiny",
    "npoints": 256,
    "groups": 16,
    "group_size": 16,
    "pretrain_samples": 64,
    "pretrain_steps": 4,
    "pretrain_batch": 16,
    "stored_points": 512,
    "shots": 2,
    "test_samples": 20,
    "finetune_epochs": 2,
    "finetune_batch": 8,
    "seeds": [0, 1],
}
SMOKE_CORPUS_FILES = 40  # mesh files per package for the smoke run's own small corpus


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/pretrain_vs_scratch", help="output folder")
    p.add_argument(
        "--arms",
        nargs="+",
        choices=list(ARMS),
        default=list(ARMS),
        help="arms to run, in this order (the corpus arms need --corpus, or --smoke "
        "with a mesh package installed)",
    )
    p.add_argument(
        "--corpus",
        help="real-shape corpus folder (ShapeNet-55 layout) built by "
        "python -m map3d.data.build_corpus",
    )
    p.add_argument("--paper", action="store_true", help=f"paper-size settings: {PAPER}")
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny CPU settings, builds a small corpus if none is given: {SMOKE}",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader worker processes for pretraining (finetuning sets are small "
        "and cached in the main process)",
    )
    # Options below default to --paper / --smoke / the CPU protocol, in that order.
    p.add_argument("--preset", help="model preset")
    p.add_argument("--npoints", type=int, help="points per shape")
    p.add_argument("--groups", type=int, help="G tokens")
    p.add_argument("--group-size", type=int, help="K points per group")
    p.add_argument("--pretrain-samples", type=int, help="synthetic pretraining shapes")
    p.add_argument("--pretrain-steps", type=int, help="optimizer steps per MAP arm (fixed compute)")
    p.add_argument("--pretrain-batch", type=int)
    p.add_argument(
        "--stored-points",
        type=int,
        help="points stored per pretraining shape (the corpus needs at least these)",
    )
    p.add_argument("--shots", type=int, help="labelled shapes per class")
    p.add_argument("--test-samples", type=int, help="test shapes per seed")
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--finetune-batch", type=int)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument(
        "--corpus-split",
        default="all",
        choices=("train", "test", "all"),
        help="corpus split used for pretraining",
    )
    p.add_argument("--lr", type=float, default=5e-4, help="finetuning learning rate")
    p.add_argument(
        "--layer-decay",
        type=float,
        default=1.0,
        help="optim.layer_decay for pretrained encoders (1.0 = off)",
    )
    p.add_argument("--label-smoothing", type=float, default=0.0, help="train.label_smoothing")
    p.add_argument("--drop-path", type=float, help="model drop_path_rate (default: preset's)")
    p.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="skip the linear probe (needs scikit-learn)",
    )
    p.add_argument(
        "--table-only",
        action="store_true",
        help="only build the table from arm-*.json in --out and --merge",
    )
    p.add_argument(
        "--merge",
        nargs="*",
        default=[],
        metavar="DIR",
        help="more folders whose arm-*.json join the table",
    )
    args = p.parse_args(argv)
    if args.paper and args.smoke:
        p.error("--paper and --smoke exclude each other")
    preset = PAPER if args.paper else SMOKE if args.smoke else CPU
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# ----------------------------------------------------------------------------- data


def write_synthetic(args, folder: Path) -> Path:
    """The synthetic pretraining shapes in the ShapeNet-55 layout (written once per setting)."""
    from map3d.data import build_dataset

    stamp = folder / "ShapeNet-55" / "train.txt"
    if stamp.exists() and len(stamp.read_text().split()) == args.pretrain_samples:
        return folder
    (folder / "shapenet_pc").mkdir(parents=True, exist_ok=True)
    (folder / "ShapeNet-55").mkdir(exist_ok=True)
    shapes = build_dataset(
        "synthetic",
        split="train",
        task="pretrain",
        cache=False,
        num_samples=args.pretrain_samples,
        num_points=args.stored_points,
        seed=PRETRAIN_DATA_SEED,
    )
    names = []
    for i in range(len(shapes)):
        names.append(f"synthetic-{i:05d}.npy")
        np.save(folder / "shapenet_pc" / names[-1], shapes[i]["points"].numpy())
    (folder / "ShapeNet-55" / "test.txt").write_text("")
    stamp.write_text("".join(f"{n}\n" for n in names))
    return folder


def split_files(folder: Path, split: str) -> list[str]:
    lists = ["train", "test"] if split == "all" else [split]
    return [n for s in lists for n in (folder / "ShapeNet-55" / f"{s}.txt").read_text().split()]


def write_union(parts: list[tuple[Path, str]], folder: Path) -> Path:
    """A ShapeNet-55 folder of links to the files of several (folder, split) sets."""
    (folder / "shapenet_pc").mkdir(parents=True, exist_ok=True)
    (folder / "ShapeNet-55").mkdir(exist_ok=True)
    names = []
    for source, split in parts:
        for name in split_files(source, split):
            link = folder / "shapenet_pc" / name
            if not link.exists():
                os.symlink((source / "shapenet_pc" / name).resolve(), link)
            names.append(name)
    (folder / "ShapeNet-55" / "train.txt").write_text("".join(f"{n}\n" for n in names))
    (folder / "ShapeNet-55" / "test.txt").write_text("")
    return folder


def smoke_corpus(args, out: Path) -> Path | None:
    """--smoke without --corpus: a small corpus from the installed mesh packages, if any."""
    import importlib.util

    from map3d.data.build_corpus import KNOWN_PACKAGES, build_corpus, installed_source

    names = [n for n in KNOWN_PACKAGES if importlib.util.find_spec(n) is not None]
    if not names or importlib.util.find_spec("trimesh") is None:  # trimesh reads the meshes
        print(
            "smoke: no mesh package installed (pip install 'map3d[corpus]'); corpus arms skipped",
            flush=True,
        )
        return None
    folder = out / "data" / "corpus"
    build_corpus(
        [installed_source(n) for n in names],
        folder,
        points=args.stored_points,
        limit=SMOKE_CORPUS_FILES,
        log=lambda line: print(f"corpus: {line}", flush=True),
    )
    return folder


def pretraining_sets(args, out: Path) -> dict[str, tuple[Path, str]]:
    """Pretraining set ("synthetic", "corpus", "both") -> (ShapeNet-55-layout folder, split), for
    the sets the arms asked for need."""
    wanted = {ARMS[a].data for a in args.arms} - {None}
    sets: dict[str, tuple[Path, str]] = {}
    if not wanted:
        return sets
    synthetic = None
    if {"synthetic", "both"} & wanted:
        synthetic = write_synthetic(
            args, out / "data" / f"synthetic-{args.pretrain_samples}x{args.stored_points}"
        )
        sets["synthetic"] = (synthetic, "train")
    corpus = Path(args.corpus) if args.corpus else None
    if corpus is None and args.smoke and {"corpus", "both"} & wanted:
        corpus = smoke_corpus(args, out)
    if corpus is not None:
        sets["corpus"] = (corpus, args.corpus_split)
        if synthetic is not None:
            union = write_union(
                [(synthetic, "train"), (corpus, args.corpus_split)], out / "data" / "both"
            )
            sets["both"] = (union, "train")
    missing = [a for a in args.arms if ARMS[a].data is not None and ARMS[a].data not in sets]
    if missing and not args.smoke:
        raise SystemExit(
            f"arms {missing} need --corpus DIR (python -m map3d.data.build_corpus "
            f"--out DIR --points {args.stored_points})"
        )
    return sets


# ----------------------------------------------------------------------------- runs


def default_regions(groups: int) -> int:
    """The default MAP decoder's R: 8, or the largest of 4, 2, 1 dividing G."""
    return max(r for r in (8, 4, 2, 1) if groups % r == 0)


def arm_spec(args, arm: str) -> dict:
    """What defines an arm beyond the common settings, with `G` resolved: its pretraining set,
    and the model overrides of its pretraining (on top of the default R) and of its encoder.
    Recorded with its runs; runs are reused and joined only when it matches."""
    spec = ARMS[arm]
    resolve = {G: args.groups}
    pretrain = {k: resolve.get(v, v) if isinstance(v, str) else v for k, v in spec.pretrain.items()}
    encoder = dict(spec.encoder)
    if spec.data is not None:
        pretrain = {"num_regions": default_regions(args.groups), **encoder, **pretrain}
    return {"data": spec.data, "pretrain": pretrain, "encoder": encoder}


def model_overrides(overrides: dict) -> list[str]:
    return [f"model.overrides.{k}={v}" for k, v in overrides.items()]


def geometry(args) -> list[str]:
    out = [
        f"model.name={args.preset}",
        f"model.overrides.num_groups={args.groups}",
        f"model.overrides.group_size={args.group_size}",
        f"data.npoints={args.npoints}",
        f"train.device={args.device}",
        # eager blocks, as the recorded tables ran: each arm's runs are short (100 finetuning
        # steps take seconds), so compiling the blocks (~1 minute a run) would dominate them
        "train.compile=off",
        "output.progress=false",
    ]
    if args.drop_path is not None:
        out.append(f"model.overrides.drop_path_rate={args.drop_path}")
    return out


def write_json(path: Path, data: dict) -> None:
    """All or nothing: a process killed mid-write leaves the previous file."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")


def finished(result, what: str):
    """`result` of a training run that ran to its end; a run stopped by a signal (e.g. the
    timeout's SIGTERM) is not recorded: the process ends, keeping what it finished before."""
    if result.stopped is not None:
        raise SystemExit(f"{what} stopped ({result.stopped}) before its end; not recorded")
    return result


def pretrain_settings(args, arm: str) -> dict:
    """What a finished pretraining must match to be reused (finetuning settings aside)."""
    keys = (
        "preset",
        "npoints",
        "groups",
        "group_size",
        "pretrain_samples",
        "pretrain_steps",
        "pretrain_batch",
        "stored_points",
        "corpus_split",
        "drop_path",
    )
    return {**{k: getattr(args, k) for k in keys}, "spec": arm_spec(args, arm)}


def pretrain(args, out: Path, arm: str, folder: Path, split: str) -> dict:
    """MAP pretraining of one arm for about `args.pretrain_steps` steps; reuses a finished run."""
    size = len(split_files(folder, split))
    steps_per_epoch = size // args.pretrain_batch
    if steps_per_epoch == 0:
        raise SystemExit(f"{arm}: {size} shapes, fewer than one batch of {args.pretrain_batch}")
    epochs = max(1, round(args.pretrain_steps / steps_per_epoch))
    cfg = apply_overrides(
        default_config("pretrain"),
        [
            *geometry(args),
            *model_overrides(arm_spec(args, arm)["pretrain"]),
            "data.name=shapenet55",
            f"data.root={folder}",
            f"data.train_split={split}",
            f"data.options={{npoints: {args.npoints}, stored_points: {args.stored_points}}}",
            f"data.batch_size={args.pretrain_batch}",
            f"data.num_workers={args.workers}",
            f"schedule.epochs={epochs}",
            f"schedule.warmup_epochs={epochs / 30}",
            f"train.log_every_steps={10**6}",
            f"train.checkpoint_every_steps={10**6}",
        ],
    )
    run_dir = out / f"pretrain-{arm}"
    info_file = run_dir / "pretrain.json"
    if info_file.exists() and (run_dir / "last.pt").exists():
        info = json.loads(info_file.read_text())
        if info["settings"] == pretrain_settings(args, arm):
            return info
    info_file.unlink(missing_ok=True)  # a stopped rerun must not leave the old record
    start = time.time()
    result = finished(train(cfg, run_dir), f"{arm}: pretraining")
    info = {
        "arm": arm,
        "shapes": size,
        "split": split,
        "epochs": epochs,
        "steps": result.step,
        "batch": args.pretrain_batch,
        "minutes": (time.time() - start) / 60,
        "checkpoint": str(result.last_checkpoint),
        "final_loss": result.history[-1].get("train_loss") if result.history else None,
        "settings": pretrain_settings(args, arm),
    }
    write_json(info_file, info)
    return info


def finetune_config(args, seed: int, pretrained: bool, encoder: dict):
    """The few-shot finetuning run of `seed` (also the probe's data and features), with the
    arm's `encoder` overrides."""
    pool = int(args.npoints * 1.2)
    layer_decay = args.layer_decay if pretrained else 1.0
    return apply_overrides(
        default_config("classify"),
        [
            *geometry(args),
            *model_overrides(encoder),
            f"data.options.num_samples={args.shots * NUM_CLASSES}",
            f"data.options.num_points={pool}",
            f"data.point_all={pool}",
            f"data.options.seed={seed}",
            f"data.test_options.num_samples={args.test_samples}",
            f"data.batch_size={args.finetune_batch}",
            f"optim.lr={args.lr}",
            f"optim.layer_decay={layer_decay}",
            f"train.label_smoothing={args.label_smoothing}",
            f"schedule.epochs={args.finetune_epochs}",
            f"train.eval_every_epochs={args.finetune_epochs}",
            f"train.seed={seed}",
            f"train.log_every_steps={10**6}",
            f"train.checkpoint_every_steps={10**6}",
        ],
    )


def run_arm(args, out: Path, arm: str, data: tuple[Path, str] | None) -> dict:
    """Pretraining (MAP arms), then per seed the finetuning run and the probe; the arm's JSON
    is rewritten after every run so that an interrupted arm keeps what it finished."""
    arm_file = out / f"arm-{arm}.json"
    spec = arm_spec(args, arm)
    record = json.loads(arm_file.read_text()) if arm_file.exists() else {}
    if record.get("settings") != settings(args) or record.get("spec") != spec:
        record = {"arm": arm, "settings": settings(args), "spec": spec, "finetune": {}, "probe": {}}
    record["text"] = ARMS[arm].text
    encoder = None
    if data is not None:
        record["pretrain"] = pretrain(args, out, arm, *data)
        encoder = Path(record["pretrain"]["checkpoint"])
        print(
            f"{arm}: pretrained on {record['pretrain']['shapes']} shapes, "
            f"{record['pretrain']['steps']} steps, {record['pretrain']['minutes']:.1f} min",
            flush=True,
        )
    for seed in args.seeds:
        key = str(seed)
        if key not in record["finetune"]:
            cfg = finetune_config(args, seed, encoder is not None, spec["encoder"])
            cfg.train.pretrained = str(encoder) if encoder is not None else None
            start = time.time()
            # no run folder: nothing but the table is kept
            final = finished(train(cfg, None), f"{arm} seed {seed}: finetuning").history[-1]
            record["finetune"][key] = {
                "test_oa": final["test_oa"],
                "train_loss": final["train_loss"],
                "minutes": (time.time() - start) / 60,
            }
            write_json(arm_file, record)
        print(
            f"{arm} seed {seed}: finetuned test OA {record['finetune'][key]['test_oa']:.1f} %",
            flush=True,
        )
        if args.probe and key not in record["probe"]:
            cfg = finetune_config(args, seed, False, spec["encoder"])
            start = time.time()
            record["probe"][key] = {
                "svm_oa": svm_probe(encoder, cfg)["svm_oa"],
                "minutes": (time.time() - start) / 60,
            }
            write_json(arm_file, record)
        if args.probe:
            print(
                f"{arm} seed {seed}: linear probe {record['probe'][key]['svm_oa']:.1f} %",
                flush=True,
            )
    write_json(arm_file, record)
    return record


def settings(args) -> dict:
    """What every arm of one table must share (all but the arm list and definitions, seeds,
    output, and how to run). An arm's own overrides are its `arm_spec`, recorded apart."""
    skip = {
        "out",
        "arms",
        "seeds",
        "corpus",
        "threads",
        "workers",
        "table_only",
        "merge",
        "probe",
        "paper",
        "smoke",
        "device",
    }
    return {k: v for k, v in sorted(vars(args).items()) if k not in skip}


# ----------------------------------------------------------------------------- table


def fmt(stats: dict) -> str:
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def describe(arm: str, record: dict) -> str:
    """The table's pretraining cell: what the arm is, on what, for how long."""
    text = record.get("text") or (ARMS[arm].text if arm in ARMS else "?")
    pre = record.get("pretrain")
    if not pre:
        return text
    data = record.get("spec", {}).get("data") or (ARMS[arm].data if arm in ARMS else "?")
    return f"{text}; {data}: {pre['shapes']} shapes, {pre['steps']} steps"


def table(records: dict[str, dict], header: str) -> tuple[str, dict]:
    """Markdown table and its numbers: per arm and measure, mean ± std over seeds and the
    paired difference to scratch (seeds present in both) with its t-test."""
    columns = (
        "arm",
        "pretraining",
        "few-shot finetune OA %",
        "Δ vs scratch (p)",
        "linear probe OA %",
        "Δ vs scratch (p)",
    )
    lines = [header, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    numbers: dict[str, dict] = {}
    base = records.get("scratch")
    for arm in [*[a for a in ARMS if a in records], *[a for a in records if a not in ARMS]]:
        record = records[arm]
        cells, numbers[arm] = [arm, describe(arm, record)], {}
        for measure, field_ in (("finetune", "test_oa"), ("probe", "svm_oa")):
            runs = record.get(measure, {})
            if not runs:
                cells += ["-", "-"]
                continue
            values = [runs[s][field_] for s in sorted(runs, key=int)]
            numbers[arm][measure] = {**mean_std(values), "seeds": sorted(runs, key=int)}
            cells.append(f"{fmt(numbers[arm][measure])} (n={len(values)})")
            paired = sorted(set(runs) & set(base.get(measure, {})), key=int) if base else []
            if arm == "scratch" or len(paired) < 2:
                cells.append("-")
                continue
            test = paired_t_test(
                [runs[s][field_] for s in paired], [base[measure][s][field_] for s in paired]
            )
            numbers[arm][f"{measure}_vs_scratch"] = {**test, "seeds": paired}
            cells.append(f"{test['mean']:+.1f} ± {test['std']:.1f} ({fmt_p(test['p'])})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", numbers


def join(first: dict, other: dict, path: Path) -> dict:
    """Two records of the same arm (e.g. seeds 0-2 and 3-4 from two processes) as one: their
    settings and arm definitions must match; seeds join, a seed in both keeps `first`'s run."""
    if first["settings"] != other["settings"]:
        raise SystemExit(f"{path}: settings differ from another {first['arm']} run")
    if "spec" in first and "spec" in other and first["spec"] != other["spec"]:
        raise SystemExit(f"{path}: arm {first['arm']} was defined differently in another run")
    joined = {**other, **first}
    for measure in ("finetune", "probe"):
        joined[measure] = {**other.get(measure, {}), **first.get(measure, {})}
    runs = [r for r in (first.get("pretrain"), other.get("pretrain")) if r]
    if len(runs) == 2 and runs[0].get("checkpoint") != runs[1].get("checkpoint"):
        print(
            f"note: {first['arm']}: seeds from separate pretraining runs of the same "
            "settings are joined",
            flush=True,
        )
    return joined


def collect(folders: list[Path]) -> dict[str, dict]:
    records: dict[str, dict] = {}
    for folder in folders:
        for path in sorted(folder.glob("arm-*.json")):
            record = json.loads(path.read_text())
            arm = record["arm"]
            records[arm] = join(records[arm], record, path) if arm in records else record
    settings_seen = {json.dumps(r["settings"], sort_keys=True) for r in records.values()}
    if len(settings_seen) > 1:
        raise SystemExit("the arms were run with different settings; not comparable")
    return records


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    warnings.filterwarnings("ignore", message="Liblinear failed to converge")
    warnings.filterwarnings("ignore", message="\\s*Online softmax is disabled")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if not args.table_only:
        sets = pretraining_sets(args, out)
        for arm in args.arms:
            data = ARMS[arm].data
            if data is None or data in sets:
                run_arm(args, out, arm, sets.get(data))
    records = collect([out, *map(Path, args.merge)])
    if not records:
        raise SystemExit(f"no arm-*.json under {out} {args.merge}")
    some = next(iter(records.values()))["settings"]
    header = (
        f"{'SMOKE RUN (tiny model, a few steps; not a result). ' if args.smoke else ''}"
        f"{NUM_CLASSES}-way {some['shots']}-shot built-in shapes; {some['preset']}, "
        f"{some['npoints']} points, G={some['groups']}; MAP arms: "
        f"~{some['pretrain_steps']} steps of {some['pretrain_batch']}; finetuning "
        f"{some['finetune_epochs']} epochs, lr {some['lr']}, layer decay "
        f"{some['layer_decay']} (pretrained arms), label smoothing "
        f"{some['label_smoothing']}; test OA after the last epoch; mean ± sample std over "
        "seeds; Δ = paired difference to scratch, two-sided paired t-test p"
    )
    text, numbers = table(records, header)
    write_json(
        out / "summary.json",
        {
            "header": header,
            "numbers": numbers,
            "settings": some,
            "minutes_this_call": (time.time() - start) / 60,
        },
    )
    (out / "table.md").write_text(text)
    print(text)
    print(f"{(time.time() - start) / 60:.1f} min; {out / 'table.md'}, {out / 'summary.json'}")


if __name__ == "__main__":
    main()
