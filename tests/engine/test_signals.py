"""Preemption: SIGTERM to the whole process group (what Slurm sends) with DataLoader workers."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from map3d.engine.checkpoint import load_checkpoint
from map3d.engine.config import apply_overrides, load_config
from map3d.engine.monitor import read_metrics
from map3d.engine.runs import train

SMOKE = "configs/smoke/pretrain.yaml"
THREE_STEPS_AN_EPOCH = ["data.options.num_samples=24", "train.log_every_steps=2"]


def _records(run_dir):
    return [
        {k: v for k, v in r.items() if k not in ("time", "samples_per_s")}
        for r in read_metrics(run_dir / "metrics.jsonl")
    ]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_sigterm_to_the_process_group_with_workers_stops_cleanly_and_resumes(tmp_path):
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        from map3d.cli import main
        from map3d.engine.tasks.pretrain import PretrainTask
        real_step, calls = PretrainTask.training_step, []
        def step(self, model, batch, ctx):
            calls.append(1)
            if len(calls) == 2:  # mid-epoch 1, the scheduler (another process) preempts the job
                subprocess.run(["kill", "-TERM", "--", f"-{{os.getpgid(0)}}"], check=False)
            return real_step(self, model, batch, ctx)
        PretrainTask.training_step = step
        sets = {[*THREE_STEPS_AN_EPOCH, "data.num_workers=4"]!r}
        sys.exit(main(["pretrain", "--config", {SMOKE!r}, "--out", {str(out)!r},
                       *[a for s in sets for a in ("--set", s)]]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        check=False,
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "continue with" in proc.stdout
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]) == (0, 2, 2)

    # the same float reductions as the preempted process (OMP_NUM_THREADS=1), so that the
    # records can be compared exactly
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = apply_overrides(load_config(SMOKE), THREE_STEPS_AN_EPOCH)
        resumed = train(apply_overrides(cfg, ["data.num_workers=4"]), out, resume=out / "last.pt")
        assert resumed.stopped is None and resumed.step == 6
        train(cfg, tmp_path / "full")
    finally:
        torch.set_num_threads(threads)
    assert _records(out) == _records(tmp_path / "full")


def test_a_stopped_run_exits_with_its_signals_status():
    from map3d.engine.commands import stop_status

    assert stop_status("SIGTERM") == 143  # what Slurm's requeue scripts test for
    assert stop_status("SIGINT") == 130  # Ctrl-C, as a shell reports it
    assert stop_status("max_steps") == 0
