"""Where an epoch end's time goes: a `map3d pretrain|finetune` run with its epoch ends taken apart.

    python benchmarks/profile_epoch_end.py [--job pretrain] [--epochs 6] [--set KEY=VALUE ...]

Runs one of bench_cli's jobs (the recipe on the built-in shapes, CUDA graph on a GPU) in this
process with the trainer's epoch-end work timed: closing the epoch (its record, its evaluation),
the checkpoint (its state, its host snapshot, the writer thread's start) and the next epoch's
start; Python's garbage collections are recorded, and the training thread's stack is sampled
every ~1 ms from the end of an epoch's last step to the next step. Prints one row per epoch end
(host milliseconds; `host` is the time from the last step's logging, which waits for the GPU,
to the next step: the GPU is idle meanwhile; the checkpoint's tensors are staged before that
read, so their copies' enqueueing is not in it), the most frequent stacks, and bench_cli's
figures.
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import json
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from bench_cli import JOBS, user_throughput

from map3d.cli import main as map3d_main
from map3d.engine import checkpoint, trainer
from map3d.engine.config import load_config

TIMED = [
    (trainer.Trainer, "_optimizer_step", "step"),
    (trainer.Trainer, "_log_window", "log_window"),
    (trainer.Trainer, "stage_checkpoint", "stage"),
    (trainer.Trainer, "_close_epoch", "close_epoch"),
    (trainer.Trainer, "save", "save"),
    (trainer.Trainer, "checkpoint_state", "state"),
    (checkpoint.HostSnapshot, "__call__", "snapshot"),
    (checkpoint.CheckpointWriter, "_start", "writer_start"),
    (trainer.Trainer, "_begin_epoch", "begin_epoch"),
    (checkpoint.CheckpointWriter, "_write", "writer_thread"),
]
COLUMNS = ["close_epoch", "save", "state", "snapshot", "writer_start", "begin_epoch", "gc"]


class Recorder:
    """(name, start, end) of every timed call and garbage collection, and the training thread's
    sampled stacks while `sampling` is set."""

    def __init__(self):
        self.spans: list[tuple[str, float, float]] = []
        self.stacks: collections.Counter[str] = collections.Counter()
        self.sampling = threading.Event()
        self._gc_start = 0.0

    def wrap(self, owner: type, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans.append((name, start, time.perf_counter()))

        setattr(owner, attr, timed)

    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.spans.append(("gc", self._gc_start, time.perf_counter()))

    def sample(self, thread_id: int, depth: int = 6) -> None:
        while True:
            self.sampling.wait()
            frame = sys._current_frames().get(thread_id)
            if frame is not None:
                stack = traceback.extract_stack(frame)[-depth:]
                self.stacks[
                    " <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in stack[::-1])
                ] += 1
            time.sleep(0.001)

    def named(self, name: str) -> list[tuple[str, float, float]]:
        return [s for s in self.spans if s[0] == name]

    def total_ms(self, name: str, lo: float, hi: float) -> float:
        return 1e3 * sum(
            end - start for n, start, end in self.spans if n == name and lo <= start < hi
        )


def install(recorder: Recorder) -> None:
    for owner, attr, name in TIMED:
        recorder.wrap(owner, attr, name)
    gc.callbacks.append(recorder.on_gc)
    close_epoch = trainer.Trainer._close_epoch
    step = trainer.Trainer._optimizer_step

    def sampled_close(self, *args, **kwargs):
        if self.epoch + 1 < self.cfg.schedule.epochs:  # not the run's end (evaluation, export)
            recorder.sampling.set()
        return close_epoch(self, *args, **kwargs)

    def unsampled_step(self, *args, **kwargs):
        recorder.sampling.clear()
        return step(self, *args, **kwargs)

    trainer.Trainer._close_epoch = sampled_close
    trainer.Trainer._optimizer_step = unsampled_step
    sampler = threading.Thread(
        target=recorder.sample, args=(threading.main_thread().ident,), daemon=True
    )
    sampler.start()


def report(recorder: Recorder, top: int) -> None:
    steps, reads = recorder.named("step"), recorder.named("log_window")
    writes = recorder.named("writer_thread")
    print(f"{'end':>4} {'host':>7} " + " ".join(f"{c:>12}" for c in COLUMNS) + f" {'write s':>8}")
    for i, (_, start, _) in enumerate(recorder.named("close_epoch"), 1):
        last = max(a for a in reads if a[1] < start)
        following = [s for s in steps if s[1] > start]
        if not following:
            break  # the run's last epoch end: the final evaluation and export follow
        lo, hi = last[2], following[0][1]
        write = next((w[2] - w[1] for w in writes if w[1] >= lo), float("nan"))
        cells = " ".join(f"{recorder.total_ms(c, lo, hi):12.1f}" for c in COLUMNS)
        print(f"{i:>4} {1e3 * (hi - lo):7.1f} {cells} {write:8.2f}")
    print(
        f"\nthe training thread during epoch ends, {top} most frequent stacks (~1 ms per sample):"
    )
    for stack, count in recorder.stacks.most_common(top):
        print(f"{count:6d}  {stack}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default="pretrain", choices=list(JOBS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--mode", default="auto", choices=["auto", "eager", "cuda_graph"])
    parser.add_argument("--set", action="append", default=[], dest="extra", help="KEY=VALUE")
    parser.add_argument("--top", type=int, default=15, help="sampled stacks to print")
    args = parser.parse_args(argv)
    config, overrides = JOBS[args.job]
    out = Path(tempfile.mkdtemp()) / "run"
    command = ["pretrain" if args.job == "pretrain" else "finetune", "--config", config]
    sets = [
        *overrides,
        f"train.step_mode={args.mode}",
        f"schedule.epochs={args.epochs}",
        "train.log_every_steps=8",
        "output.progress=false",
        *args.extra,
    ]
    recorder = Recorder()
    install(recorder)
    code = map3d_main([*command, "--out", str(out), *(x for s in sets for x in ("--set", s))])
    recorder.sampling.clear()
    if code:
        return code
    report(recorder, args.top)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = min(r["step"] for r in records if r["kind"] == "epoch")
    batch = load_config(out / "config.yaml").data.batch_size
    print(json.dumps(user_throughput(out / "metrics.jsonl", batch, steps_per_epoch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
