"""Stopping (SIGTERM / max_steps) and `resume` reproduce the uninterrupted run step for step."""

import os
import signal

import torch

from map3d.engine.checkpoint import load_checkpoint
from map3d.engine.config import apply_overrides, load_config
from map3d.engine.monitor import read_metrics
from map3d.engine.runs import train
from map3d.engine.tasks.pretrain import PretrainTask

SMOKE = "configs/smoke/pretrain.yaml"
# 2 epochs x 2 steps; a step-interval checkpoint every 3 steps (mid-epoch 2).
OVERRIDES = ["train.checkpoint_every_steps=3"]


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl", "train")]


def test_resume_reproduces_uninterrupted_loss_curve(tmp_path, monkeypatch):
    cfg = apply_overrides(load_config(SMOKE), OVERRIDES)
    full = train(cfg, tmp_path / "full")
    assert full.stopped is None and full.step == 4

    # 1) SIGTERM during step 2 (the last of epoch 1): the step and the epoch's end complete,
    #    last.pt is written, the run stops.
    real_step = PretrainTask.training_step
    calls = {"n": 0}

    def step_then_sigterm(self, model, batch, ctx):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, model, batch, ctx)

    monkeypatch.setattr(PretrainTask, "training_step", step_then_sigterm)
    part = train(cfg, tmp_path / "part")
    monkeypatch.setattr(PretrainTask, "training_step", real_step)
    assert part.stopped == "SIGTERM" and part.step == 2
    ckpt = load_checkpoint(tmp_path / "part" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]) == (1, 0, 2)

    # 2) resume, stop again after 1 more step (mid-epoch 2) via max_steps, 3) resume to the end.
    stopped = train(
        apply_overrides(cfg, ["train.max_steps=1"]),
        tmp_path / "part",
        resume=tmp_path / "part" / "last.pt",
    )
    assert stopped.stopped == "max_steps" and stopped.step == 3
    ckpt = load_checkpoint(tmp_path / "part" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]) == (1, 1, 3)
    done = train(cfg, tmp_path / "part", resume=tmp_path / "part" / "last.pt")
    assert done.stopped is None and done.step == 4

    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")  # bit-identical on CPU
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _records(run_dir):
    """metrics.jsonl without the wall-clock fields."""
    return [
        {k: v for k, v in r.items() if k not in ("time", "samples_per_s")}
        for r in read_metrics(run_dir / "metrics.jsonl")
    ]


def test_mid_epoch_stop_and_resume_writes_the_same_records(tmp_path):
    """The epoch record and a log window cut by the stop average all their steps."""
    cfg = apply_overrides(
        load_config(SMOKE), ["train.log_every_steps=2", "data.options.num_samples=24"]
    )  # 3 steps/epoch
    train(cfg, tmp_path / "full")
    first = train(apply_overrides(cfg, ["train.max_steps=1"]), tmp_path / "part")
    assert first.stopped == "max_steps" and first.step == 1  # mid-epoch, mid-window
    train(cfg, tmp_path / "part", resume=tmp_path / "part" / "last.pt")
    assert _records(tmp_path / "part") == _records(tmp_path / "full")
    assert len([r for r in _records(tmp_path / "full") if r["kind"] == "epoch"]) == 2


def test_best_checkpoint_compares_test_with_test_only(tmp_path):
    cfg = apply_overrides(load_config(SMOKE), ["train.eval_every_epochs=2", "schedule.epochs=3"])
    result = train(cfg, tmp_path / "run")
    epochs = read_metrics(tmp_path / "run" / "metrics.jsonl", "epoch")
    assert "test_loss" not in epochs[0] and epochs[0]["best_loss"] is None  # not evaluated
    best = min(r["test_loss"] for r in epochs if "test_loss" in r)
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert (ckpt["best_metric_kind"], ckpt["best_metric_name"]) == ("test", "test_loss")
    assert ckpt["best_metric"] == best == result.best_metric
    assert epochs[-1]["best_loss"] == best and epochs[-1]["best_metric_name"] == "test_loss"


def test_pretraining_without_a_test_split_keeps_no_best_checkpoint(tmp_path):
    result = train(load_config(SMOKE), tmp_path / "run")
    assert result.best_checkpoint is None and not (tmp_path / "run" / "best.pt").exists()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["best_metric_kind"] is None


def test_resume_refuses_settings_that_change_the_model_data_or_objective(tmp_path, capsys):
    from map3d.cli import main

    out = tmp_path / "run"
    assert (
        main(["pretrain", "--config", SMOKE, "--out", str(out), "--set", "train.max_steps=1"]) == 0
    )
    stored = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert (
        main(
            [
                "pretrain",
                "--resume",
                str(out),
                "--set",
                "model.overrides.num_groups=16",
                "--set",
                "train.seed=3",
                "--set",
                "train.log_every_steps=2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model.overrides.num_groups (8 -> 16)" in err and "train.seed (0 -> 3)" in err
    assert "log_every_steps" not in err
    assert (out / "config.yaml").read_text() == stored  # nothing rewritten
    assert load_checkpoint(out / "last.pt")["step"] == 1
    # settings about running, logging and length may change
    assert (
        main(
            [
                "pretrain",
                "--resume",
                str(out),
                "--set",
                "train.log_every_steps=2",
                "--epochs",
                "3",
                "--set",
                "train.max_steps=null",
            ]
        )
        == 0
    )
    assert load_checkpoint(out / "last.pt")["step"] == 6


def test_pretrained_weight_settings_may_change_on_resume():
    """Pretrained weights are loaded only when a run starts; a resumed run takes its weights
    from the checkpoint, so where they came from and how strictly they matched may change."""
    import pytest

    from map3d.engine.config import ConfigError, check_resume_config, config_to_dict, default_config

    saved = config_to_dict(default_config("classify"))
    resumed = apply_overrides(
        default_config("classify"),
        [
            "train.pretrained=runs/pre/encoder.safetensors",
            "train.allow_partial_pretrained=true",
        ],
    )
    check_resume_config(saved, resumed, "runs/ft/last.pt")
    with pytest.raises(ConfigError, match="train.seed"):
        check_resume_config(saved, apply_overrides(resumed, ["train.seed=3"]), "runs/ft/last.pt")
