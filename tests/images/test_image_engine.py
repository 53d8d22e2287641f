"""CPU smoke: MAP-pretrain on the built-in digits, then finetune the pretrained encoder."""

import json
import math
from pathlib import Path

import pytest
import torch

from map3d.engine.config import load_config
from map3d.engine.runs import train
from map3d.models import load_pretrained

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
pytest.importorskip(
    "sklearn", reason="the digits dataset needs scikit-learn (pip install 'map3d[images]')"
)

QUICK = ["output.progress=false", "train.log_every_steps=1", "data.batch_size=16"]


def test_digits_pretrain_then_finetune(tmp_path):
    pre_cfg = load_config(
        CONFIGS / "pretrain/image_tiny.yaml",
        [
            *QUICK,
            "schedule.epochs=1",
            "schedule.warmup_epochs=0",
            "train.max_steps=3",
            "data.test_split=''",
            "model.overrides.decoder_depth=1",
        ],
    )
    assert pre_cfg.model.name == "map_nano_patch4_16" and pre_cfg.data.name == "digits"
    pre = train(pre_cfg, tmp_path / "pre")
    assert pre.step == 3 and pre.last_checkpoint.is_file()
    records = [
        json.loads(line) for line in (tmp_path / "pre/metrics.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in records if r.get("kind") == "train"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)

    ft_cfg = load_config(
        CONFIGS / "finetune/image_tiny_digits.yaml",
        [
            *QUICK,
            "schedule.epochs=1",
            "schedule.warmup_epochs=0",
            "data.options.label_fraction=0.05",
            f"train.pretrained={pre.last_checkpoint}",
        ],
    )
    ft = train(ft_cfg, tmp_path / "ft")
    final = [r for r in ft.history if "test_oa" in r][-1]
    assert 0.0 <= final["test_oa"] <= 100.0
    # the finetuning run started from the pretrained encoder: its checkpoint's encoder differs
    # from a fresh model's only by the few finetuning steps, and loads back without gaps
    state = torch.load(ft.last_checkpoint, map_location="cpu", weights_only=True)["model"]
    from map3d import create_model

    fresh = create_model("map_nano_patch4_16", task="classify", num_classes=10)
    missing, unexpected = load_pretrained(fresh, state)
    assert not missing and not unexpected
