"""Release checkpoints through every door, and the engine's release settings."""

import math

import pytest
import torch

import map3d
from map3d.cli import main
from map3d.engine.batching import shared_subset
from map3d.engine.checkpoint import adopt_release, load_checkpoint, model_state_dict
from map3d.engine.config import ConfigError, load_config
from map3d.engine.optim import build_scheduler, parameter_groups
from map3d.engine.tasks import get_task
from map3d.viz.command import load_pretrainer
from tests.models import test_models_release as layout

FINETUNE = "configs/smoke/finetune.yaml"
PRETRAIN = "configs/smoke/pretrain.yaml"
C = 24  # divisible by the release's 6 heads


@pytest.fixture
def width(monkeypatch):
    monkeypatch.setattr(layout, "C", C)


def _pointmap_pretrain():
    return {k.removeprefix("module."): v for k, v in layout.release_pretrain_state().items()}


def _pointmae_pretrain():
    shapes = layout.mini_pointnet("MAE_encoder.encoder.")
    shapes.update(layout.mlp3("MAE_encoder.pos_embed."))
    for i in range(2):
        shapes.update(layout.vit_block(f"MAE_encoder.blocks.blocks.{i}."))
    shapes.update({"MAE_encoder.norm.weight": (C,), "MAE_encoder.norm.bias": (C,)})
    shapes.update({"mask_token": (1, 1, C), **layout.mlp3("decoder_pos_embed.")})
    shapes.update(layout.vit_block("MAE_decoder.blocks.0."))
    shapes.update({"MAE_decoder.norm.weight": (C,), "MAE_decoder.norm.bias": (C,)})
    shapes.update({"increase_dim.0.weight": (3 * layout.K, C, 1),
                   "increase_dim.0.bias": (3 * layout.K,)})  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v, generator=gen) for k, v in shapes.items()}


def _release_state(name):
    if name == "pointmae":
        return _pointmae_pretrain()
    state = _pointmap_pretrain()
    if name == "mamba3d":
        state = {k: v for k, v in state.items() if "blocks_vit" not in k}
    return state


def _classification(state, num_classes):
    """The finetuned layout: encoder keys without `MAE_encoder.`, a `cls_head_finetune`."""
    out = {k.removeprefix("MAE_encoder."): v for k, v in state.items() if "MAE_encoder." in k}
    gen = torch.Generator().manual_seed(1)
    for i, (rows, cols) in {0: (256, 2 * C), 4: (256, 256), 8: (num_classes, 256)}.items():
        out[f"cls_head_finetune.{i}.weight"] = torch.randn(rows, cols, generator=gen) * 0.05
        out[f"cls_head_finetune.{i}.bias"] = torch.zeros(rows)
    for i in (1, 5):
        out[f"cls_head_finetune.{i}.weight"] = torch.ones(256)
        out[f"cls_head_finetune.{i}.bias"] = torch.zeros(256)
        out[f"cls_head_finetune.{i}.running_mean"] = torch.zeros(256)
        out[f"cls_head_finetune.{i}.running_var"] = torch.ones(256)
        out[f"cls_head_finetune.{i}.num_batches_tracked"] = torch.tensor(0)
    return out


@pytest.mark.parametrize("name", ["pointmap", "mamba3d", "pointmae"])
def test_release_checkpoint_reads_as_a_map3d_checkpoint(name, width, tmp_path, caplog):
    path = tmp_path / "ckpt-last.pth"
    torch.save({"base_model": _release_state(name), "epoch": 300}, path)
    caplog.set_level("INFO", logger="map3d")
    ckpt = load_checkpoint(path)
    assert ckpt["release"] == name and ckpt["task"] == "pretrain"
    assert f"found a {map3d.models.RELEASES[name].title} release checkpoint" in caplog.text
    model = map3d.create_model(ckpt["model_name"], task="pretrain", **ckpt["model_config"])
    assert model.config.compat == name and model.config.decoder_order == "release"
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()(torch.rand(2, 128, 3))
    assert model_state_dict(path).keys() == ckpt["model"].keys()


def test_release_checkpoint_finetunes_evaluates_exports_and_visualizes(width, tmp_path, caplog):
    pretrained = tmp_path / "pointmap-pretrain.pth"
    torch.save({"base_model": _pointmap_pretrain()}, pretrained)
    caplog.set_level("INFO", logger="map3d")
    ft = tmp_path / "ft"
    assert main(["finetune", "--config", FINETUNE, "--out", str(ft),
                 "--pretrained", str(pretrained)]) == 0  # fmt: skip
    log = (ft / "train.log").read_text()
    assert "found a PointMAP" in log and "0 missing, 0 unexpected keys" in log
    ckpt = load_checkpoint(ft / "last.pt")
    assert ckpt["model_config"]["compat"] == "pointmap"
    assert ckpt["model_config"]["encoder"]["backbone"]["attention_block"] == "release"

    finetuned = tmp_path / "pointmap-cls.pth"
    torch.save({"base_model": _classification(_pointmap_pretrain(), 10)}, finetuned)
    assert main(["eval", "--checkpoint", str(finetuned)]) == 2  # no experiment config inside
    results = tmp_path / "results.json"
    assert main(["eval", "--checkpoint", str(finetuned), "--config", FINETUNE,
                 "--out", str(results)]) == 0  # fmt: skip
    assert results.exists()

    assert main(["export", str(pretrained), str(tmp_path / "enc.safetensors")]) == 0
    assert all(k.startswith("encoder.") for k in model_state_dict(tmp_path / "enc.safetensors"))
    model, _ = load_pretrainer(pretrained, "cpu")
    assert model.config.compat == "pointmap"


def test_adopt_release_switches_preset_only_when_blocks_differ(width):
    ckpt = {
        "release": "mamba3d",
        "model_config": {
            "compat": "mamba3d",
            "pattern": "MMM",
            "dim": C,
            "d_state": 4,
            "num_classes": 7,
        },
    }
    cfg = load_config(FINETUNE)
    adopted = adopt_release(cfg, ckpt, model_task="classify")
    assert adopted.model.name == "mamba3d_s" and cfg.model.name == "hybridmt3d_tiny"
    assert adopted.model.overrides["pattern"] == "MMM"
    assert "num_classes" not in adopted.model.overrides
    whole = adopt_release(cfg, ckpt, model_task="classify", whole_model=True)
    assert whole.model.overrides["num_classes"] == 7
    same = {
        "release": "pointmap",
        "model_config": {"compat": "pointmap", "pattern": "MMMT", "dim": 32, "d_state": 4},
    }
    adopted = adopt_release(cfg, same, model_task="classify")
    assert adopted.model.name == "hybridmt3d_tiny"
    assert adopted.model.overrides["compat"] == "pointmap"
    assert adopt_release(cfg, {"format": "map3d-checkpoint"}, model_task="classify") is cfg


def test_experiment_compat_fills_unset_engine_fields_and_reaches_the_model():
    cfg = load_config(FINETUNE, ["compat=pointmap"])
    assert cfg.optim.weight_decay_groups == "release"
    assert cfg.schedule.interval == "epoch" and cfg.eval.vote_permute is True
    cfg = load_config(FINETUNE, ["compat=mamba3d", "schedule.interval=step"])
    assert cfg.schedule.interval == "step"
    cfg = load_config(FINETUNE, ["compat=mamba3d", "model.overrides.num_classes=3"])
    model = get_task("classify").build_model(cfg, None)
    assert model.config.compat == "mamba3d" and model.config.head_pooling == "release_exact"
    plain = load_config(FINETUNE)
    assert plain.optim.weight_decay_groups is None and plain.eval.vote_permute is None
    with pytest.raises(ConfigError, match="compat"):
        load_config(FINETUNE, ["compat=pointbert"])
    with pytest.raises(ConfigError, match="schedule.interval"):
        load_config(FINETUNE, ["schedule.interval=batch"])


def test_release_weight_decay_groups():
    model = map3d.create_model("hybridmt3d_tiny", task="classify", num_classes=3)
    names = {id(p): n for n, p in model.named_parameters()}

    def decayed(groups):
        decay = parameter_groups(model, 0.05, groups)[0]
        return {names[id(p)].rsplit(".", 1)[-1] for p in decay["params"]}

    ours, release = decayed("map3d"), decayed("release")
    for leaf in ("A_log", "A_b_log", "cls_pos", "affine_alpha", "affine_beta"):
        assert leaf not in ours and leaf in release
    for leaf in ("cls_token", "bias", "D"):
        assert leaf not in release
    assert "weight" in ours and "weight" in release


def test_epoch_interval_schedule_follows_the_release_timm_scheduler():
    from map3d.engine.config import ScheduleConfig

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3)
    cfg = ScheduleConfig(epochs=10, warmup_epochs=2, min_lr=1e-6, interval="epoch")
    sched = build_scheduler(opt, cfg, base_lr=1e-3, steps_per_epoch=3)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    per_epoch = [lrs[3 * e : 3 * e + 3] for e in range(10)]
    assert all(len(set(e)) == 1 for e in per_epoch)  # constant within an epoch
    timm = [1e-6 + t * (1e-3 - 1e-6) / 2 if t < 2
            else 1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * t / 10))
            for t in range(10)]  # fmt: skip
    expected = [timm[max(e - 1, 0)] for e in range(10)]  # step(e) after epoch e
    assert [e[0] for e in per_epoch] == pytest.approx(expected, rel=1e-9)


def test_vote_permutation_permutes_a_full_pool():
    points = torch.rand(2, 16, 3)
    gen = torch.Generator().manual_seed(0)
    assert shared_subset(points, 16, gen) is points
    permuted = shared_subset(points, 16, gen, permute=True)
    assert not torch.equal(permuted, points)
    assert torch.equal(permuted.sort(dim=1).values, points.sort(dim=1).values)
