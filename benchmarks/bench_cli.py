"""What users get: `map3d pretrain|finetune` through the CLI, throughput read from metrics.jsonl.

    python benchmarks/bench_cli.py --mode auto --mode eager [--job pretrain] [--epochs 4] [--nproc 2]

Runs the paper-size recipe on the built-in synthetic shapes (no dataset needed) once per step
mode, then reads the run's metrics.jsonl: samples/s over every training step after the first
epoch (warm-up, CUDA-graph capture and Triton autotuning excluded), epoch ends (evaluation,
checkpoint writes) included, from the records' wall-clock times; also from the first record
after the first epoch end (whose evaluation compiles its own graphs: warm-up too), within epochs,
and each epoch end's cost. Prints one row per run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# job -> (config, overrides that swap in the built-in shapes at the recipe's sizes)
JOBS = {
    "pretrain": (
        "configs/pretrain/shapenet55_map.yaml",
        [
            "data.name=synthetic",
            "data.root=null",
            "data.options={task: pretrain, num_samples: 8192, num_points: 1024}",
        ],
    ),
    "modelnet40": (
        "configs/finetune/modelnet40.yaml",
        [
            "data.name=synthetic",
            "data.root=null",
            "data.options={task: classify, num_samples: 4096, num_points: 1200}",
            "data.test_options={num_samples: 512}",
        ],
    ),
    "scanobjectnn": (
        "configs/finetune/scanobjectnn_pb_t50_rs.yaml",
        [
            "data.name=synthetic",
            "data.root=null",
            "data.options={task: classify, num_samples: 4096, num_points: 2048}",
            "data.test_options={num_samples: 512}",
        ],
    ),
}


def user_throughput(metrics: Path, batch: int, skip_steps: int) -> dict[str, Any]:
    """samples/s between the first train record at or after `skip_steps` (= steps per epoch)
    and the last one; `after_first_end` from the first record after the first epoch end (its
    evaluation's compilation is warm-up too); `within_epoch` over the logging windows that hold
    no epoch end; `epoch_ends_s`: each epoch end's seconds beyond the within-epoch rate."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in records if r["kind"] == "train" and r["step"] >= skip_steps]
    if len(train) < 3:
        raise SystemExit(f"{metrics}: too few training records after step {skip_steps}")

    def rate(first: dict, last: dict) -> float:
        return round((last["step"] - first["step"]) * batch / (last["time"] - first["time"]), 1)

    windows = [
        (b["step"] - a["step"], b["time"] - a["time"], a, b) for a, b in itertools.pairwise(train)
    ]
    crosses = [
        (a["step"] - 1) // skip_steps != (b["step"] - 1) // skip_steps for *_, a, b in windows
    ]
    inner_steps = sum(n for (n, *_), c in zip(windows, crosses) if not c)
    inner_seconds = sum(t for (_, t, *_), c in zip(windows, crosses) if not c)
    step_seconds = inner_seconds / inner_steps if inner_steps else None
    ends = [t - n * step_seconds for (n, t, *_), c in zip(windows, crosses) if c and step_seconds]
    return {
        "steps": train[-1]["step"] - train[0]["step"],
        "seconds": round(train[-1]["time"] - train[0]["time"], 2),
        "samples_per_s": rate(train[0], train[-1]),
        "after_first_end": rate(train[1], train[-1]),
        "within_epoch": round(batch / step_seconds, 1) if step_seconds else None,
        "epoch_ends_s": [round(t, 3) for t in ends],
        "last_loss": train[-1].get("loss"),
    }


def run(
    job: str,
    mode: str,
    epochs: int,
    batch: int | None,
    extra: list[str],
    out: Path,
    nproc: int = 1,
) -> dict:
    config, overrides = JOBS[job]
    command = "pretrain" if job == "pretrain" else "finetune"
    sets = [
        *overrides,
        f"train.step_mode={mode}",
        f"schedule.epochs={epochs}",
        "train.log_every_steps=8",
        "output.progress=false",
        *extra,
    ]
    if batch is not None:
        sets.append(f"data.batch_size={batch}")
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    args = [*launcher, "-m", "map3d", command, "--config", config, "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    proc = subprocess.run(args, check=False, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode:
        print(log[-3000:], file=sys.stderr)
        raise SystemExit(f"{job} {mode}: exit {proc.returncode}")
    cfg = (out / "config.yaml").read_text()
    batch_size = int(
        next(
            line.split(":")[1]
            for line in cfg.splitlines()
            if line.strip().startswith("batch_size:")
        )
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = min(r["step"] for r in records if r["kind"] == "epoch")
    note = next(
        (
            "; ".join(p.strip() for p in line.split("| ") if p.startswith(("step mode", "blocks")))
            for line in log.splitlines()
            if "step mode" in line
        ),
        "",
    )
    losses = {r["step"]: r["loss"] for r in records if r["kind"] == "train"}
    return {
        "job": job,
        "mode": mode,
        "batch": batch_size,
        "note": note,
        "losses": losses,
        **user_throughput(out / "metrics.jsonl", batch_size, steps_per_epoch),
    }


def loss_gap(a: dict[int, float], b: dict[int, float]) -> tuple[int, float]:
    """Steps logged by both runs and the largest relative difference of their losses."""
    common = sorted(set(a) & set(b))
    return len(common), max((abs(a[s] - b[s]) / abs(a[s]) for s in common), default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", action="append", choices=list(JOBS))
    parser.add_argument("--mode", action="append", choices=["auto", "eager", "cuda_graph"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, help="data.batch_size (default: the recipe's)")
    parser.add_argument(
        "--set", action="append", default=[], dest="extra", help="more config overrides (KEY=VALUE)"
    )
    parser.add_argument("--json", help="append the rows to this JSON-lines file")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="processes (GPUs) under torchrun; data.batch_size is global",
    )
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for job in args.job or ["pretrain"]:
            for mode in args.mode or ["auto"]:
                out = Path(tmp) / f"{job}-{mode}"
                row = run(job, mode, args.epochs, args.batch, args.extra, out, args.nproc)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "losses"}), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps({**row, "losses": list(row["losses"].items())}) + "\n")
    print(
        f"{'job':<13} {'mode':<11} {'batch':>5} {'steps':>6} {'samples/s':>10} "
        f"{'after 1st end':>14} {'within epoch':>13}  epoch ends (s); note"
    )
    for r in rows:
        ends = " ".join(f"{t:.2f}" for t in r["epoch_ends_s"])
        print(
            f"{r['job']:<13} {r['mode']:<11} {r['batch']:>5} {r['steps']:>6} "
            f"{r['samples_per_s']:>10.1f} {r['after_first_end']:>14.1f} "
            f"{r['within_epoch'] or 0:>13.1f}  {ends}; {r['note']}"
        )
    for a, b in itertools.pairwise(rows):
        if a["job"] == b["job"]:
            steps, gap = loss_gap(a["losses"], b["losses"])
            print(
                f"{a['job']}: {a['mode']} vs {b['mode']}: largest relative loss difference "
                f"{gap:.2e} over {steps} logged steps"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
