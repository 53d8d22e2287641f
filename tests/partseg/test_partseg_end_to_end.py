"""`map3d finetune` + `map3d eval` for part segmentation, on ShapeNetPart-layout fixtures and on
the built-in part set (tiny model, one epoch)."""

import argparse
import json
from pathlib import Path

import pytest

from map3d.data.layouts import make_shapenetpart
from map3d.engine.commands import EVAL, FINETUNE

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke" / "partseg.yaml"
FAST = [  # the smoke config, lighter still for the test suite
    "model.name=pointmae_tiny",
    "model.overrides={num_groups: 8, group_size: 16}",
    "data.npoints=128",
    "data.batch_size=4",
    "output.progress=false",
    "train.device=cpu",
]


def _run(command, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def _sets(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def _finetune_and_eval(tmp_path, extra: list[str]) -> dict:
    run_dir = tmp_path / "run"
    assert (
        _run(FINETUNE, ["--config", str(SMOKE), "--out", str(run_dir), *_sets(FAST + extra)]) == 0
    )
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("test_instance_miou" in row for row in history)
    out = tmp_path / "results.json"
    assert _run(EVAL, ["--checkpoint", str(run_dir), "--votes", "2", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _check_results(results: dict, categories: set[str]) -> None:
    for key in ("instance_miou", "class_miou", "accuracy", "vote_instance_miou"):
        assert 0.0 <= results[key] <= 100.0
    assert {k.removeprefix("iou/") for k in results if k.startswith("iou/")} == categories
    assert results["protocol"]["task"] == "partseg" and results["protocol"]["votes"] == 2


def test_builtin_part_set(tmp_path):
    results = _finetune_and_eval(tmp_path, ["data.options={num_samples: 10, num_points: 128}"])
    _check_results(results, {"Airplane", "Chair", "Lamp", "Mug", "Table"})


def test_shapenetpart_layout(tmp_path):
    root = make_shapenetpart(tmp_path / "data", per_split={"train": 2, "val": 1, "test": 1})
    results = _finetune_and_eval(
        tmp_path,
        [
            "data.name=shapenetpart",
            f"data.root={root}",
            "data.options={npoints: 160}",  # more than data.npoints: a shared subset is taken
            "data.train_split=trainval",
        ],
    )
    _check_results(results, {"Airplane", "Mug", "Table"})
    assert results["protocol"]["dataset"] == "shapenetpart"


def test_batch_without_labels_is_refused(tmp_path):
    import torch

    from map3d.engine.config import load_config
    from map3d.engine.tasks import TaskContext, get_task

    cfg = load_config(SMOKE)
    ctx = TaskContext(cfg, torch.device("cpu"), torch.Generator(), torch.Generator())
    with pytest.raises(ValueError, match="seg"):
        get_task("partseg").training_step(None, {"points": torch.zeros(1, 256, 3)}, ctx)
