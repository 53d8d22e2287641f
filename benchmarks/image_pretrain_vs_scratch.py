"""Does MAP pretraining help a 2D encoder when labels are scarce? Digits, CPU, several seeds.

Protocol (everything through the engine, `map3d.engine.runs.train`, nothing on disk):
1. per seed s: MAP-pretrain `map_nano_patch4_16` (widened to C=64) on the digits train split
   (1,438 real 8x8 scikit-learn digits upsampled to 16x16, labels unused) with
   configs/pretrain/image_digits_c64.yaml (train.seed = s);
2. per seed s and label fraction f: finetune configs/finetune/image_digits_c64.yaml on the
   stratified fraction f of the train labels drawn with data.options.seed = s, once from the
   seed-s pretrained encoder and once from scratch (train.seed = s for both, so both arms see the
   same labelled images, batches and head initialization seed);
3. metric: overall accuracy (%) on the fixed 359-image test split after the last finetuning
   epoch (evaluated once, at the end: no checkpoint selection on the test set); reported as
   mean ± sample std over seeds, with the per-seed values.

    nice python benchmarks/image_pretrain_vs_scratch.py --seeds 0 1 2 --fractions 0.05 0.1

Writes <out>/results.json and prints a Markdown table for benchmarks/RESULTS.md. Uses one
intra-op thread by default: on a shared 2-core machine more threads make it slower.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_CONFIG = REPO / "configs/pretrain/image_digits_c64.yaml"
FINETUNE_CONFIG = REPO / "configs/finetune/image_digits_c64.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--pretrain-epochs", type=int, default=None, help="default: the config's (40)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="default: the config's (100)")
    p.add_argument(
        "--dim",
        type=int,
        default=None,
        help="encoder width C (default: the configs' 64; the preset's is 32)",
    )
    p.add_argument(
        "--heads",
        type=int,
        default=None,
        help="attention heads of the encoder (default: the configs' 4)",
    )
    p.add_argument(
        "--num-regions",
        type=int,
        default=None,
        help="decoder regions (default: the config's R = H/p image rows; 1 = MAE decoder)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=Path("runs/bench_image_pretrain_vs_scratch"))
    return p.parse_args(argv)


def final_test_oa(result) -> float:
    """Test OA of the last epoch record (the only evaluated one)."""
    for record in reversed(result.history):
        if "test_oa" in record:
            return float(record["test_oa"])
    raise RuntimeError("the finetuning run recorded no test_oa")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from map3d.engine.config import load_config
    from map3d.engine.distributed import DistInfo
    from map3d.engine.runs import ENCODER_FILE, setup_logging, train

    setup_logging(None, DistInfo(), verbose=False)
    logging.getLogger("map3d.bench").setLevel(logging.INFO)
    # eager blocks on a GPU too: the runs are short, compiling the blocks would dominate them
    quiet = ["output.progress=false", "train.compile=off"]
    width = [
        f"model.overrides.{key}={value}"
        for key, value in (("dim", args.dim), ("num_heads", args.heads))
        if value is not None
    ]
    pre_overrides = [*width, *_epochs(args.pretrain_epochs)]
    if args.num_regions is not None:
        pre_overrides.append(f"model.overrides.num_regions={args.num_regions}")
    started = time.time()
    for seed in args.seeds:
        pre_dir = args.out / f"pretrain_s{seed}"
        checkpoint = pre_dir / "last.pt"
        if (pre_dir / ENCODER_FILE).is_file():  # written when a pretraining run completes
            print(f"seed {seed}: reusing the finished pretraining run {pre_dir}", flush=True)
        else:
            pre_cfg = load_config(PRETRAIN_CONFIG, [*pre_overrides, f"train.seed={seed}", *quiet])
            pre = train(pre_cfg, pre_dir)
            checkpoint = pre.last_checkpoint
            print(
                f"[{time.time() - started:6.0f}s] seed {seed}: pretrained, final test "
                f"masked-patch loss {pre.history[-1].get('test_loss', float('nan')):.4f}",
                flush=True,
            )
        results: dict[str, dict[str, float]] = {}
        for fraction in args.fractions:
            for arm in ("pretrained", "scratch"):
                overrides = [
                    *width,
                    *_epochs(args.finetune_epochs),
                    f"data.options.label_fraction={fraction}",
                    f"data.options.seed={seed}",
                    f"train.seed={seed}",
                    *quiet,
                ]
                if arm == "pretrained":
                    overrides.append(f"train.pretrained={checkpoint}")
                cfg = load_config(FINETUNE_CONFIG, overrides)
                run = train(cfg, args.out / f"finetune_f{fraction}_{arm}_s{seed}")
                oa = final_test_oa(run)
                results.setdefault(str(fraction), {}).setdefault(arm, {})[str(seed)] = oa
                print(
                    f"[{time.time() - started:6.0f}s] seed {seed} labels {fraction:.0%} "
                    f"{arm}: test OA {oa:.2f}",
                    flush=True,
                )
                write_json(
                    args.out / f"results_s{seed}.json", {"protocol": protocol(args), **results}
                )
    summarize(args.out)
    return 0


def _epochs(epochs: int | None) -> list[str]:
    """Overrides for `epochs` epochs with one evaluation, after the last (none: the config's)."""
    if epochs is None:
        return []
    return [f"schedule.epochs={epochs}", f"train.eval_every_epochs={epochs}"]


def protocol(args: argparse.Namespace) -> dict:
    return {
        "pretrain_config": str(PRETRAIN_CONFIG.relative_to(REPO)),
        "finetune_config": str(FINETUNE_CONFIG.relative_to(REPO)),
        "dim": args.dim,
        "heads": args.heads,
        "pretrain_epochs": args.pretrain_epochs,
        "finetune_epochs": args.finetune_epochs,
        "num_regions": args.num_regions,
        "metric": "test OA (%) after the last finetuning epoch; mean ± sample std over seeds",
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def summarize(out: Path) -> dict:
    """Merge every results_s<seed>.json under `out` (runs of one seed each may run in parallel)
    into results.json and print the Markdown table."""
    from map3d.engine.metrics import mean_std

    merged: dict[str, dict[str, dict[str, float]]] = {}
    for path in sorted(out.glob("results_s*.json")):
        data = json.loads(path.read_text())
        data.pop("protocol", None)
        for fraction, arms in data.items():
            for arm, per_seed in arms.items():
                merged.setdefault(fraction, {}).setdefault(arm, {}).update(per_seed)
    table = {
        fraction: {arm: {"per_seed": v, **mean_std(list(v.values()))} for arm, v in arms.items()}
        for fraction, arms in merged.items()
    }
    write_json(out / "results.json", table)
    print("\n| labels | pretrained (MAP) OA % | scratch OA % | per seed: pretrained / scratch |")
    print("|---|---|---|---|")
    for fraction, arms in table.items():
        if set(arms) != {"pretrained", "scratch"}:
            continue
        pre, scr = arms["pretrained"], arms["scratch"]
        seeds = sorted(set(pre["per_seed"]) & set(scr["per_seed"]), key=int)
        pairs = ", ".join(f"s{s}: {pre['per_seed'][s]:.1f}/{scr['per_seed'][s]:.1f}" for s in seeds)
        print(
            f"| {float(fraction):.0%} | {pre['mean']:.2f} ± {pre['std']:.2f} (n={pre['n']}) | "
            f"{scr['mean']:.2f} ± {scr['std']:.2f} (n={scr['n']}) | {pairs} |"
        )
    return table


if __name__ == "__main__":
    sys.exit(main())
