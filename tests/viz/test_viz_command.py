"""`map3d viz` end to end on a tiny pretrained-format checkpoint, and its error messages."""

import csv
import dataclasses
import sys

import numpy as np
import pytest

import map3d
from map3d.cli import main
from map3d.engine.checkpoint import FORMAT_NAME, FORMAT_VERSION, atomic_torch_save
from map3d.viz import read_ply


def _save_checkpoint(path, task="pretrain"):
    """A tiny MAP pretrainer in the engine's checkpoint format (untrained weights)."""
    model = map3d.create_model(
        "hybridmt3d_tiny", task="pretrain", num_groups=16, group_size=8, num_regions=4
    )
    data = {"name": "synthetic", "options": {"task": "pretrain", "num_points": 256},
            "test_split": "test", "npoints": 128}  # fmt: skip
    atomic_torch_save(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "task": task,
            "model_name": "hybridmt3d_tiny",
            "model_task": task,
            "model_config": dataclasses.asdict(model.config),
            "config": {"data": data},
            "model": model.state_dict(),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_viz_end_to_end(checkpoint, tmp_path, capsys):
    out = tmp_path / "figures"
    argv = ["viz", "--checkpoint", str(checkpoint), "--index", "1", "4", "--out", str(out),
            "--size", "120", "100", "--seed", "3", "--num-points", "0"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    with open(out / "chamfer.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["index"] for r in rows] == ["1", "4"]
    for row in rows:
        assert float(row["chamfer"]) > 0 and row["num_groups"] == "16"
        assert f"{float(row['chamfer']):.5f}" in printed
        assert (out / row["png"]).stat().st_size > 1000
        cloud = read_ply(out / row["ply"])
        counts = np.bincount(cloud.layer, minlength=3)
        masked = int(row["num_masked"])
        assert counts.tolist() == [(16 - masked) * 8, masked * 8, masked * 8]
    # The masking is seeded: a second run reproduces the same numbers.
    assert main(argv + ["--renderer", "matplotlib"]) == 0
    with open(out / "chamfer.csv") as f:
        assert [r["chamfer"] for r in csv.DictReader(f)] == [r["chamfer"] for r in rows]


@pytest.mark.parametrize(("num_points", "groups"), [(None, 256), (512, 64), (0, 16)])
def test_figures_are_dense_by_default(checkpoint, tmp_path, num_points, groups):
    """Default 2,048 points per figure: the model (trained on 128 points in 16 patches of 8)
    cuts the cloud into 256 patches of 8, so the drawn cloud has 2,048 points."""
    out = tmp_path / "figures"
    argv = ["viz", "--checkpoint", str(checkpoint), "--index", "0", "--out", str(out),
            "--size", "60", "50", "--renderer", "matplotlib"]  # fmt: skip
    if num_points is not None:
        argv += ["--num-points", str(num_points)]
    assert main(argv) == 0
    with open(out / "chamfer.csv") as f:
        (row,) = csv.DictReader(f)
    assert int(row["num_groups"]) == groups
    cloud = read_ply(out / row["ply"])
    counts = np.bincount(cloud.layer, minlength=3)
    assert counts[0] + counts[1] == groups * 8  # visible + reconstructed: the whole cloud


def test_show_without_display_fails_clearly(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    out = tmp_path / "figures"
    argv = ["viz", "--checkpoint", str(checkpoint), "--out", str(out), "--show"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot open an interactive window" in err and "DISPLAY" in err
    assert "Traceback" not in err and not out.exists()  # failed before any work


def test_bad_inputs_fail_clearly(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "figures")
    assert main(["viz", "--checkpoint", str(checkpoint), "--index", "99999", "--out", out]) == 2
    assert "--index [99999] out of range" in capsys.readouterr().err
    classifier = _save_checkpoint(tmp_path / "cls.pt", task="classify")
    assert main(["viz", "--checkpoint", str(classifier), "--out", out]) == 2
    assert "needs a pretraining checkpoint" in capsys.readouterr().err
    assert main(["viz", "--checkpoint", str(tmp_path / "nope.pt"), "--out", out]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
