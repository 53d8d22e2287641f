"""torch's CPU threads come from the cores this process may use, and the choice is logged."""

import os

import pytest
import torch

from map3d.cli import main
from map3d.engine import threads
from map3d.engine.threads import available_cores, configure_threads, threads_note


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_explicit_then_environment_then_available_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert configure_threads(2).startswith("torch CPU threads: 2 (--threads")
    assert torch.get_num_threads() == 2 and threads_note().startswith("torch CPU threads: 2")
    assert configure_threads(None).startswith("torch CPU threads: 1 (OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    assert "threads: 4 (4 cores available" in configure_threads(None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # torchrun: 3 processes share 4 cores
    assert "threads: 1 (4 cores available / 3 local processes" in configure_threads(None)
    assert torch.get_num_threads() == 1


def test_available_cores_follow_affinity_and_cgroup_quota(monkeypatch, tmp_path):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no os.sched_getaffinity on this platform")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_CGROUP_CPU_MAX", tmp_path / "missing")
    assert available_cores() == 4
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs
    monkeypatch.setattr(threads, "_CGROUP_CPU_MAX", quota)
    assert available_cores() == 1
    quota.write_text("max 100000\n")
    assert available_cores() == 4


def test_train_eval_viz_logs_say_how_many_threads(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out = tmp_path / "pre"
    assert (
        main(
            [
                "pretrain",
                "--config",
                "configs/smoke/pretrain.yaml",
                "--out",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert "torch CPU threads: 1 (--threads" in (out / "train.log").read_text()
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(out / "last.pt"),
                "--threads",
                "1",
                "--out",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    assert "torch CPU threads: 1 (--threads" in capsys.readouterr().err
    assert (
        main(
            [
                "viz",
                "--checkpoint",
                str(out / "last.pt"),
                "--threads",
                "1",
                "--index",
                "0",
                "--out",
                str(tmp_path / "viz"),
                "--renderer",
                "matplotlib",
                "--size",
                "40",
                "40",
            ]
        )
        == 0
    )
    assert "torch CPU threads: 1 (--threads" in capsys.readouterr().err
