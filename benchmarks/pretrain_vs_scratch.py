"""Does MAP pretraining help when labels are scarce? Pretrained encoder vs training from scratch.

1. MAP-pretrain the encoder on the built-in synthetic shapes (unlabelled; their own data seed,
   so none of the labelled or test shapes below is seen during pretraining).
2. For each seed: draw a K-shot labelled training set (K shapes per class, 10 classes) and a test
   set of synthetic shapes, then finetune the same classifier twice with identical
   hyperparameters, data and seed: encoder initialised from step 1, and from scratch.
3. Print the test overall accuracy (%) after the last epoch of both, mean ± std over seeds, and
   the paired difference; write everything to `<out>/summary.json`. `--svm` adds a linear-SVM
   probe of the frozen encoders (pretrained vs random init) on the same K-shot sets.

CPU (default, about 15 min on 2 idle cores):
    python benchmarks/pretrain_vs_scratch.py
GPU, bigger model and more data:
    python benchmarks/pretrain_vs_scratch.py --device cuda --preset hybridmt3d_s \
        --npoints 1024 --groups 64 --group-size 32 --pretrain-samples 8192 --pretrain-epochs 100 \
        --shots 10 --finetune-epochs 100 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from map3d.engine.config import apply_overrides, default_config
from map3d.engine.metrics import mean_std
from map3d.engine.runs import svm_probe, train

NUM_CLASSES = 10  # the built-in synthetic shapes
PRETRAIN_DATA_SEED = 1000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/pretrain_vs_scratch", help="output folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--preset", default="hybridmt3d_tiny", help="model preset")
    p.add_argument("--npoints", type=int, default=512, help="points per shape")
    p.add_argument("--groups", type=int, default=32, help="G tokens")
    p.add_argument("--group-size", type=int, default=16, help="K points per group")
    p.add_argument("--pretrain-samples", type=int, default=1024, help="unlabelled shapes")
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--pretrain-batch", type=int, default=32)
    p.add_argument("--reuse-pretrain", action="store_true",
                   help="reuse <out>/pretrain/last.pt if it exists")
    p.add_argument("--shots", type=int, default=4, help="labelled shapes per class")
    p.add_argument("--test-samples", type=int, default=200, help="test shapes per seed")
    p.add_argument("--finetune-epochs", type=int, default=30)
    p.add_argument("--finetune-batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4, help="finetuning learning rate")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--svm", action="store_true",
                   help="also probe the frozen encoders (pretrained vs random init) with a "
                   "linear SVM on the same K-shot sets")
    return p.parse_args()


def geometry(args) -> list[str]:
    return [f"model.name={args.preset}", f"model.overrides.num_groups={args.groups}",
            f"model.overrides.group_size={args.group_size}", f"data.npoints={args.npoints}",
            f"train.device={args.device}", "output.progress=false"]


def pretrain(args, out: Path) -> Path:
    ckpt = out / "pretrain" / "last.pt"
    if args.reuse_pretrain and ckpt.exists():
        return ckpt
    regions = max(r for r in (8, 4, 2, 1) if args.groups % r == 0)
    cfg = apply_overrides(default_config("pretrain"), [
        *geometry(args), f"model.overrides.num_regions={regions}",
        f"data.options.num_samples={args.pretrain_samples}",
        f"data.options.num_points={args.npoints}", f"data.options.seed={PRETRAIN_DATA_SEED}",
        f"data.batch_size={args.pretrain_batch}", f"schedule.epochs={args.pretrain_epochs}",
    ])
    result = train(cfg, out / "pretrain")
    return result.last_checkpoint


def finetune_config(args, seed: int):
    pool = int(args.npoints * 1.2)
    return apply_overrides(default_config("classify"), [
        *geometry(args), f"data.options.num_samples={args.shots * NUM_CLASSES}",
        f"data.options.num_points={pool}", f"data.point_all={pool}",
        f"data.options.seed={seed}", f"data.test_options.num_samples={args.test_samples}",
        f"data.batch_size={args.finetune_batch}", f"optim.lr={args.lr}",
        f"schedule.epochs={args.finetune_epochs}",
        f"train.eval_every_epochs={args.finetune_epochs}", f"train.seed={seed}",
        f"train.log_every_steps={10**6}",
    ])


def finetune(args, out: Path, seed: int, pretrained: Path | None) -> dict:
    cfg = finetune_config(args, seed)
    cfg.train.pretrained = str(pretrained) if pretrained is not None else None
    name = "pretrained" if pretrained is not None else "scratch"
    result = train(cfg, out / f"{name}-seed{seed}")
    final = result.history[-1]
    return {"seed": seed, "init": name, "test_oa": final["test_oa"],
            "test_macc": final["test_macc"], "train_loss": final["train_loss"]}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    ckpt = pretrain(args, out)
    pretrain_minutes = (time.time() - start) / 60
    print(f"pretrained {args.preset} in {pretrain_minutes:.1f} min: {ckpt}", flush=True)

    runs = []
    for seed in args.seeds:
        for init in (ckpt, None):
            runs.append(finetune(args, out, seed, init))
            r = runs[-1]
            print(f"seed {seed} {r['init']:>10}: test OA {r['test_oa']:.1f} %", flush=True)

    probes = []
    if args.svm:
        for seed in args.seeds:
            cfg = finetune_config(args, seed)
            for init, encoder in (("pretrained", ckpt), ("scratch", None)):
                acc = svm_probe(encoder, cfg)["svm_oa"]
                probes.append({"seed": seed, "init": init, "svm_oa": acc})
                print(f"seed {seed} {init:>10}: linear-SVM probe {acc:.1f} %", flush=True)

    def stats(init):
        return mean_std([r["test_oa"] for r in runs if r["init"] == init])

    pre, scratch = stats("pretrained"), stats("scratch")
    diffs = [a["test_oa"] - b["test_oa"] for a, b in zip(runs[0::2], runs[1::2])]
    gain = mean_std(diffs)
    summary = {
        "setting": f"{NUM_CLASSES}-way {args.shots}-shot synthetic shapes, test OA (%) after "
        f"{args.finetune_epochs} finetuning epochs, {len(args.seeds)} seeds",
        "args": vars(args), "pretrain_minutes": pretrain_minutes,
        "total_minutes": (time.time() - start) / 60,
        "pretrained": pre, "scratch": scratch, "paired_gain": gain, "runs": runs,
    }
    if probes:
        summary["svm"] = {
            init: mean_std([p["svm_oa"] for p in probes if p["init"] == init])
            for init in ("pretrained", "scratch")
        }
        summary["svm_runs"] = probes
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(summary["setting"])
    print(f"  from MAP-pretrained encoder: {pre['mean']:.1f} ± {pre['std']:.1f}")
    print(f"  from scratch:                {scratch['mean']:.1f} ± {scratch['std']:.1f}")
    print(f"  paired gain:                 {gain['mean']:+.1f} ± {gain['std']:.1f} "
          f"(per seed: {', '.join(f'{d:+.1f}' for d in diffs)})")
    if probes:
        svm = summary["svm"]
        print(f"  linear-SVM probe, frozen pretrained encoder: {svm['pretrained']['mean']:.1f} ± "
              f"{svm['pretrained']['std']:.1f}; random encoder: {svm['scratch']['mean']:.1f} ± "
              f"{svm['scratch']['std']:.1f}")
    print(f"total {summary['total_minutes']:.1f} min; details in {out / 'summary.json'}")


if __name__ == "__main__":
    main()
