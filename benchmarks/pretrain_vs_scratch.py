"""Does MAP pretraining pay? Encoders pretrained on different corpora vs training from scratch.

Arms (each MAP arm gets the same pretraining compute: `--pretrain-steps` optimizer steps of
`--pretrain-batch` shapes, the epoch count rounded to fit):
  scratch        no pretraining (random init; the baseline every other arm is paired with)
  map_synthetic  MAP on `--pretrain-samples` unlabelled built-in synthetic shapes (their own data
                 seed: none of the labelled or test shapes below is seen)
  map_corpus     MAP on the real-shape corpus of `--corpus` (`python -m map3d.data.build_corpus`)
  map_both       MAP on both sets together
All pretraining sets are read through the `shapenet55` loader (the synthetic shapes are written
in its layout under `<out>/data`), so the arms differ only in their shapes.

Evaluation on the built-in synthetic shapes, per seed (the seed draws a 10-way K-shot labelled
set and a test set, and seeds the training), identical for every arm:
  (a) few-shot finetuning of the whole classifier; test OA (%) after the last epoch (no
      best-epoch selection). `--layer-decay` applies to pretrained encoders only; label
      smoothing and drop path to all arms.
  (b) a linear probe: `LinearSVC` on frozen encoder features (concat[max, mean] of the tokens)
      of the same K-shot set; the scratch arm's encoder is the random init of that seed.
Table: mean ± sample std per arm, and per pretrained arm the paired difference to scratch over
seeds with a two-sided paired t-test. Results go to `<out>/arm-<name>.json` (updated after every
run; a rerun with the same `--out` skips runs already there), `<out>/table.md` and
`<out>/summary.json`. Arms can run in separate processes or machines into separate folders;
`--table-only --merge DIR...` builds the table from their JSON files.

CPU smoke run (tiny model, a few steps; proves the pipeline, measures nothing):
    python benchmarks/pretrain_vs_scratch.py --smoke --out runs/pvs_smoke
GPU study at paper size, all arms in one process (benchmarks/RESULTS.md, "Pretraining that
pays", splits it into one process per arm and GPU, and says how to bring the corpus along):
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
from pathlib import Path

import numpy as np
import torch

from map3d.engine.config import apply_overrides, default_config
from map3d.engine.metrics import mean_std, paired_t_test
from map3d.engine.runs import svm_probe, train

NUM_CLASSES = 10  # the built-in synthetic shapes
PRETRAIN_DATA_SEED = 1000
ARMS = ("scratch", "map_synthetic", "map_corpus", "map_both")

# The CPU protocol of the earlier results (built-in shapes, hybridmt3d_tiny): the defaults.
CPU = {"preset": "hybridmt3d_tiny", "npoints": 512, "groups": 32, "group_size": 16,
       "pretrain_samples": 1024, "pretrain_steps": 192, "pretrain_batch": 32,
       "stored_points": 2048, "shots": 4, "test_samples": 200, "finetune_epochs": 30,
       "finetune_batch": 8, "seeds": [0, 1, 2]}
# Paper size on one GPU: HybridMT3D-S (C=384, "MMMT" x 4), G=64 groups of K=32 from 1,024
# points, MAP decoder with R=8 regions; 10-way 10-shot finetuning, seeds 0-4.
PAPER = {"preset": "hybridmt3d_s", "npoints": 1024, "groups": 64, "group_size": 32,
         "pretrain_samples": 8192, "pretrain_steps": 1000, "pretrain_batch": 128,
         "stored_points": 2048, "shots": 10, "test_samples": 500, "finetune_epochs": 100,
         "finetune_batch": 32, "seeds": [0, 1, 2, 3, 4]}
# Tiny CPU smoke: every stage runs, in a few minutes.
SMOKE = {"preset": "hybridmt3d_tiny", "npoints": 256, "groups": 16, "group_size": 16,
         "pretrain_samples": 64, "pretrain_steps": 4, "pretrain_batch": 16,
         "stored_points": 512, "shots": 2, "test_samples": 20, "finetune_epochs": 2,
         "finetune_batch": 8, "seeds": [0, 1]}
SMOKE_CORPUS_FILES = 40  # mesh files per package for the smoke run's own small corpus


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/pretrain_vs_scratch", help="output folder")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                   help="arms to run (the corpus arms need --corpus, or --smoke with a mesh "
                   "package installed)")
    p.add_argument("--corpus", help="real-shape corpus folder (ShapeNet-55 layout) built by "
                   "python -m map3d.data.build_corpus")
    p.add_argument("--paper", action="store_true", help=f"paper-size settings: {PAPER}")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny CPU settings, builds a small corpus if none is given: {SMOKE}")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes for pretraining (finetuning sets are small "
                   "and cached in the main process)")
    # Options below default to --paper / --smoke / the CPU protocol, in that order.
    p.add_argument("--preset", help="model preset")
    p.add_argument("--npoints", type=int, help="points per shape")
    p.add_argument("--groups", type=int, help="G tokens")
    p.add_argument("--group-size", type=int, help="K points per group")
    p.add_argument("--pretrain-samples", type=int, help="synthetic pretraining shapes")
    p.add_argument("--pretrain-steps", type=int,
                   help="optimizer steps per MAP arm (fixed compute)")
    p.add_argument("--pretrain-batch", type=int)
    p.add_argument("--stored-points", type=int,
                   help="points stored per pretraining shape (the corpus needs at least these)")
    p.add_argument("--shots", type=int, help="labelled shapes per class")
    p.add_argument("--test-samples", type=int, help="test shapes per seed")
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--finetune-batch", type=int)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--corpus-split", default="all", choices=("train", "test", "all"),
                   help="corpus split used for pretraining")
    p.add_argument("--lr", type=float, default=5e-4, help="finetuning learning rate")
    p.add_argument("--layer-decay", type=float, default=1.0,
                   help="optim.layer_decay for pretrained encoders (1.0 = off)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="train.label_smoothing")
    p.add_argument("--drop-path", type=float, help="model drop_path_rate (default: preset's)")
    p.add_argument("--no-probe", dest="probe", action="store_false",
                   help="skip the linear probe (needs scikit-learn)")
    p.add_argument("--table-only", action="store_true",
                   help="only build the table from arm-*.json in --out and --merge")
    p.add_argument("--merge", nargs="*", default=[], metavar="DIR",
                   help="more folders whose arm-*.json join the table")
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
    shapes = build_dataset("synthetic", split="train", task="pretrain", cache=False,
                           num_samples=args.pretrain_samples, num_points=args.stored_points,
                           seed=PRETRAIN_DATA_SEED)
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
    if not names:
        print("smoke: no mesh package installed (pip install 'map3d[corpus]'); corpus arms "
              "skipped", flush=True)
        return None
    folder = out / "data" / "corpus"
    build_corpus([installed_source(n) for n in names], folder, points=args.stored_points,
                 limit=SMOKE_CORPUS_FILES, log=lambda line: print(f"corpus: {line}", flush=True))
    return folder


def pretraining_sets(args, out: Path) -> dict[str, tuple[Path, str]]:
    """Arm -> (ShapeNet-55-layout folder, split) for the MAP arms asked for."""
    wanted = [a for a in args.arms if a != "scratch"]
    sets: dict[str, tuple[Path, str]] = {}
    if not wanted:
        return sets
    synthetic = None
    if {"map_synthetic", "map_both"} & set(wanted):
        synthetic = write_synthetic(args, out / "data" / f"synthetic-{args.pretrain_samples}"
                                    f"x{args.stored_points}")
        sets["map_synthetic"] = (synthetic, "train")
    corpus = Path(args.corpus) if args.corpus else None
    if corpus is None and args.smoke and {"map_corpus", "map_both"} & set(wanted):
        corpus = smoke_corpus(args, out)
    if corpus is not None:
        sets["map_corpus"] = (corpus, args.corpus_split)
        if synthetic is not None:
            union = write_union([(synthetic, "train"), (corpus, args.corpus_split)],
                                out / "data" / "both")
            sets["map_both"] = (union, "train")
    missing = [a for a in wanted if a not in sets]
    if missing and not args.smoke:
        raise SystemExit(f"arms {missing} need --corpus DIR (python -m map3d.data.build_corpus "
                         f"--out DIR --points {args.stored_points})")
    return {a: sets[a] for a in wanted if a in sets}


# ----------------------------------------------------------------------------- runs


def geometry(args) -> list[str]:
    out = [f"model.name={args.preset}", f"model.overrides.num_groups={args.groups}",
           f"model.overrides.group_size={args.group_size}", f"data.npoints={args.npoints}",
           f"train.device={args.device}", "output.progress=false"]
    if args.drop_path is not None:
        out.append(f"model.overrides.drop_path_rate={args.drop_path}")
    return out


def pretrain(args, out: Path, arm: str, folder: Path, split: str) -> dict:
    """MAP pretraining of one arm for about `args.pretrain_steps` steps; reuses a finished run."""
    size = len(split_files(folder, split))
    steps_per_epoch = size // args.pretrain_batch
    if steps_per_epoch == 0:
        raise SystemExit(f"{arm}: {size} shapes, fewer than one batch of {args.pretrain_batch}")
    epochs = max(1, round(args.pretrain_steps / steps_per_epoch))
    regions = max(r for r in (8, 4, 2, 1) if args.groups % r == 0)
    cfg = apply_overrides(default_config("pretrain"), [
        *geometry(args), f"model.overrides.num_regions={regions}", "data.name=shapenet55",
        f"data.root={folder}", f"data.train_split={split}",
        f"data.options={{npoints: {args.npoints}, stored_points: {args.stored_points}}}",
        f"data.batch_size={args.pretrain_batch}", f"data.num_workers={args.workers}",
        f"schedule.epochs={epochs}",
        f"schedule.warmup_epochs={epochs / 30}", f"train.log_every_steps={10**6}",
        f"train.checkpoint_every_steps={10**6}",
    ])
    run_dir = out / f"pretrain-{arm}"
    info_file = run_dir / "pretrain.json"
    if info_file.exists() and (run_dir / "last.pt").exists():
        info = json.loads(info_file.read_text())
        if info["settings"] == settings(args):
            return info
    start = time.time()
    result = train(cfg, run_dir)
    info = {"arm": arm, "shapes": size, "split": split, "epochs": epochs, "steps": result.step,
            "batch": args.pretrain_batch, "minutes": (time.time() - start) / 60,
            "checkpoint": str(result.last_checkpoint),
            "final_loss": result.history[-1].get("train_loss") if result.history else None,
            "settings": settings(args)}
    info_file.write_text(json.dumps(info, indent=2) + "\n")
    return info


def finetune_config(args, seed: int, pretrained: bool):
    pool = int(args.npoints * 1.2)
    layer_decay = args.layer_decay if pretrained else 1.0
    return apply_overrides(default_config("classify"), [
        *geometry(args), f"data.options.num_samples={args.shots * NUM_CLASSES}",
        f"data.options.num_points={pool}", f"data.point_all={pool}",
        f"data.options.seed={seed}", f"data.test_options.num_samples={args.test_samples}",
        f"data.batch_size={args.finetune_batch}", f"optim.lr={args.lr}",
        f"optim.layer_decay={layer_decay}", f"train.label_smoothing={args.label_smoothing}",
        f"schedule.epochs={args.finetune_epochs}",
        f"train.eval_every_epochs={args.finetune_epochs}", f"train.seed={seed}",
        f"train.log_every_steps={10**6}", f"train.checkpoint_every_steps={10**6}",
    ])


def run_arm(args, out: Path, arm: str, data: tuple[Path, str] | None) -> dict:
    """Pretraining (MAP arms), then per seed the finetuning run and the probe; the arm's JSON
    is rewritten after every run so that an interrupted arm keeps what it finished."""
    arm_file = out / f"arm-{arm}.json"
    record = json.loads(arm_file.read_text()) if arm_file.exists() else {}
    if record.get("settings") != settings(args):
        record = {"arm": arm, "settings": settings(args), "finetune": {}, "probe": {}}
    encoder = None
    if data is not None:
        record["pretrain"] = pretrain(args, out, arm, *data)
        encoder = Path(record["pretrain"]["checkpoint"])
        print(f"{arm}: pretrained on {record['pretrain']['shapes']} shapes, "
              f"{record['pretrain']['steps']} steps, {record['pretrain']['minutes']:.1f} min",
              flush=True)
    for seed in args.seeds:
        key = str(seed)
        if key not in record["finetune"]:
            cfg = finetune_config(args, seed, pretrained=encoder is not None)
            cfg.train.pretrained = str(encoder) if encoder is not None else None
            start = time.time()
            final = train(cfg, None).history[-1]  # no run folder: nothing but the table is kept
            record["finetune"][key] = {"test_oa": final["test_oa"],
                                       "train_loss": final["train_loss"],
                                       "minutes": (time.time() - start) / 60}
            arm_file.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{arm} seed {seed}: finetuned test OA {record['finetune'][key]['test_oa']:.1f} %",
              flush=True)
        if args.probe and key not in record["probe"]:
            cfg = finetune_config(args, seed, pretrained=False)
            record["probe"][key] = {"svm_oa": svm_probe(encoder, cfg)["svm_oa"]}
            arm_file.write_text(json.dumps(record, indent=2) + "\n")
        if args.probe:
            print(f"{arm} seed {seed}: linear probe {record['probe'][key]['svm_oa']:.1f} %",
                  flush=True)
    arm_file.write_text(json.dumps(record, indent=2) + "\n")
    return record


def settings(args) -> dict:
    """What must match for runs to be reused or compared (all but arms, seeds, output)."""
    skip = {"out", "arms", "seeds", "corpus", "threads", "workers", "table_only", "merge",
            "probe", "paper", "smoke", "device"}
    return {k: v for k, v in sorted(vars(args).items()) if k not in skip}


# ----------------------------------------------------------------------------- table


def fmt(stats: dict) -> str:
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def table(records: dict[str, dict], header: str) -> tuple[str, dict]:
    """Markdown table and its numbers: per arm and measure, mean ± std over seeds and the
    paired difference to scratch (seeds present in both) with its t-test."""
    columns = ("arm", "pretraining", "few-shot finetune OA %", "Δ vs scratch (p)",
               "linear probe OA %", "Δ vs scratch (p)")
    lines = [header, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    numbers: dict[str, dict] = {}
    base = records.get("scratch")
    for arm in ARMS:
        record = records.get(arm)
        if record is None:
            continue
        pre = record.get("pretrain")
        pre_text = (f"{pre['shapes']} shapes, {pre['steps']} steps" if pre else "none")
        cells, numbers[arm] = [arm, pre_text], {}
        for measure, field in (("finetune", "test_oa"), ("probe", "svm_oa")):
            runs = record.get(measure, {})
            if not runs:
                cells += ["-", "-"]
                continue
            values = [runs[s][field] for s in sorted(runs, key=int)]
            numbers[arm][measure] = {**mean_std(values), "seeds": sorted(runs, key=int)}
            cells.append(f"{fmt(numbers[arm][measure])} (n={len(values)})")
            paired = sorted(set(runs) & set(base.get(measure, {})), key=int) if base else []
            if arm == "scratch" or len(paired) < 2:
                cells.append("-")
                continue
            test = paired_t_test([runs[s][field] for s in paired],
                                 [base[measure][s][field] for s in paired])
            numbers[arm][f"{measure}_vs_scratch"] = {**test, "seeds": paired}
            cells.append(f"{test['mean']:+.1f} ± {test['std']:.1f} ({fmt_p(test['p'])})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", numbers


def collect(folders: list[Path]) -> dict[str, dict]:
    records: dict[str, dict] = {}
    for folder in folders:
        for path in sorted(folder.glob("arm-*.json")):
            record = json.loads(path.read_text())
            if record["arm"] in records and records[record["arm"]]["settings"] != record[
                    "settings"]:
                raise SystemExit(f"{path}: settings differ from another {record['arm']} run")
            records.setdefault(record["arm"], record)
    settings_seen = {json.dumps(r["settings"], sort_keys=True) for r in records.values()}
    if len(settings_seen) > 1:
        raise SystemExit("the arms were run with different settings; not comparable")
    return records


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    warnings.filterwarnings("ignore", message="Liblinear failed to converge")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if not args.table_only:
        sets = pretraining_sets(args, out)
        for arm in args.arms:
            if arm == "scratch" or arm in sets:
                run_arm(args, out, arm, sets.get(arm))
    records = collect([out, *map(Path, args.merge)])
    if not records:
        raise SystemExit(f"no arm-*.json under {out} {args.merge}")
    some = next(iter(records.values()))["settings"]
    header = (f"{'SMOKE RUN (tiny model, a few steps; not a result). ' if args.smoke else ''}"
              f"{NUM_CLASSES}-way {some['shots']}-shot built-in shapes; {some['preset']}, "
              f"{some['npoints']} points, G={some['groups']}; MAP arms: "
              f"~{some['pretrain_steps']} steps of {some['pretrain_batch']}; finetuning "
              f"{some['finetune_epochs']} epochs, lr {some['lr']}, layer decay "
              f"{some['layer_decay']} (pretrained arms), label smoothing "
              f"{some['label_smoothing']}; test OA after the last epoch; mean ± sample std over "
              "seeds; Δ = paired difference to scratch, two-sided paired t-test p")
    text, numbers = table(records, header)
    (out / "table.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(
        {"header": header, "numbers": numbers, "settings": some,
         "minutes_this_call": (time.time() - start) / 60}, indent=2) + "\n")
    print(text)
    print(f"{(time.time() - start) / 60:.1f} min; {out / 'table.md'}, {out / 'summary.json'}")


if __name__ == "__main__":
    main()
