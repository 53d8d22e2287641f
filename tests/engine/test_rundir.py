"""Run directories: no silent mixing of two runs, one writer at a time, no empty folders."""

import os
import socket
import subprocess
import sys

import pytest

from map3d.atomic import temp_name
from map3d.cli import main
from map3d.engine.checkpoint import load_checkpoint
from map3d.engine.rundir import LOCK_FILE, RunDirError, RunLock
from map3d.engine.tasks.pretrain import PretrainTask

SMOKE = "configs/smoke/pretrain.yaml"


def _pretrain(out, *extra):
    return main(["pretrain", "--config", SMOKE, "--out", str(out), *extra])


def test_new_run_refuses_an_occupied_out_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert _pretrain(out, "--set", "train.max_steps=1") == 0
    (out / "best.pt").write_bytes((out / "last.pt").read_bytes())  # an old run's best.pt
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert _pretrain(out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a run" in err
    assert f"--resume {out}" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    assert _pretrain(out, "--overwrite") == 0
    assert load_checkpoint(out / "last.pt")["step"] == 4
    assert not (out / "best.pt").exists()  # nothing of the old run is left
    assert (out / "train.log").read_text().count("task pretrain |") == 1
    assert not (out / LOCK_FILE).exists()


def test_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out), pytest.raises(RunDirError, match="in use by another run"):
        RunLock(out).__enter__()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_FILE).write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        assert _pretrain(out) == 2
        assert "in use by another run" in capsys.readouterr().err
        assert not (out / "last.pt").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the writer died (its lock is stale) in the middle of checkpoint writes, one of them by an
    # older map3d (another temp name)
    stray = [
        out / temp_name("last.pt").replace(f".p{os.getpid()}h", f".p{sleeper.pid}h"),
        out / ".best.pt.k2x9q1zz.tmp",
    ]
    for path in stray:
        path.write_bytes(b"half a checkpoint")
    assert _pretrain(out) == 0
    assert "taking over the lock" in (out / "train.log").read_text()
    assert not (out / LOCK_FILE).exists() and not any(path.exists() for path in stray)


def test_failed_command_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="larger than the 16 training samples"):
        _pretrain(out, "--set", "data.batch_size=64")
    assert not out.exists()


def test_error_that_ends_a_run_is_in_its_train_log(tmp_path, monkeypatch):
    real_step, calls = PretrainTask.training_step, []

    def failing_step(self, model, batch, ctx):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_step(self, model, batch, ctx)

    monkeypatch.setattr(PretrainTask, "training_step", failing_step)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="illegal memory access"):
        _pretrain(out)
    log = (out / "train.log").read_text()
    assert "run ended at epoch 0, step 1 by RuntimeError: CUDA error: an illegal" in log
    assert not (out / LOCK_FILE).exists()


def test_a_requeued_slurm_job_takes_over_its_own_lock_from_another_node(tmp_path, monkeypatch):
    (tmp_path / LOCK_FILE).write_text("4242 node017 9001\n")
    monkeypatch.setenv("SLURM_JOB_ID", "9002")
    with pytest.raises(RunDirError, match="pid 4242 on node017"):
        RunLock(tmp_path).__enter__()
    monkeypatch.setenv("SLURM_JOB_ID", "9001")
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().split()[2] == "9001"
    assert not (tmp_path / LOCK_FILE).exists()
