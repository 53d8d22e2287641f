"""The part-segmentation configs load strictly and hold the published recipe."""

from pathlib import Path

import pytest

from map3d.engine.config import load_config
from map3d.models import build_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PARTSEG = ["finetune/shapenetpart.yaml", "finetune/synthetic_parts.yaml", "smoke/partseg.yaml"]


@pytest.mark.parametrize("name", PARTSEG)
def test_configs_load_and_build_a_partseg_model_config(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.train.task == "partseg"
    model = build_config(cfg.model.name, task="partseg", **cfg.model.overrides)
    assert model.num_categories == 16 and model.num_parts == 50


def test_shapenetpart_recipe():
    cfg = load_config(CONFIGS / "finetune/shapenetpart.yaml")
    model = build_config(cfg.model.name, task="partseg", **cfg.model.overrides)
    assert (cfg.model.name, model.num_groups, model.group_size) == ("hybridmt3d_s", 128, 32)
    assert (cfg.data.name, cfg.data.npoints, cfg.data.options["npoints"]) == (
        "shapenetpart",
        2048,
        2048,
    )
    assert (cfg.data.train_split, cfg.data.test_split, cfg.data.batch_size) == (
        "trainval",
        "test",
        16,
    )
    assert cfg.data.augment == ["scale_shift"]
    assert (cfg.optim.lr, cfg.schedule.epochs, cfg.schedule.warmup_epochs) == (2e-4, 300, 10)
