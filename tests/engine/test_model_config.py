"""One config path: `model:` resolves into the preset's typed task config when the experiment
config is made (YAML, --set, checkpoint), with the registry's own override rules and the one
type check (`map3d.typed`); refusals are one line naming the key and the value, and come before
any dataset is built. Old checkpoints' `config` / `model_config` dicts keep loading."""

import dataclasses
from pathlib import Path

import pytest
import torch

import map3d
from map3d.engine.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    check_resume_config,
    config_from_dict,
    config_to_dict,
    default_config,
    load_config,
)
from map3d.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC_PRETRAIN = ROOT / "configs" / "pretrain" / "synthetic.yaml"


def test_model_resolves_into_the_typed_config_of_its_task():
    cfg = load_config(SYNTHETIC_PRETRAIN)
    config = cfg.model_config()
    assert type(config).__name__ == "PointPretrainConfig"
    assert (config.num_groups, config.group_size, config.num_regions) == (32, 16, 4)
    assert config.encoder.backbone.pattern == "MMMT"  # the preset's
    # the one override syntax keeps working, and reaches the typed config
    cfg = apply_overrides(
        cfg, ["model.overrides.num_regions=1", "model.overrides.mask_ratio=[0.3, 0.7]"]
    )
    assert cfg.model.overrides["num_regions"] == 1
    config = cfg.model_config()
    assert config.num_regions == 1 and config.mask_ratio == (0.3, 0.7)
    # the sizes a task takes from its dataset are filled in later; another task on request
    finetune = default_config("classify").model_config(filled={"num_classes": 7})
    assert type(finetune).__name__ == "PointClassifierConfig" and finetune.num_classes == 7
    probe = default_config("classify").model_config("pretrain")
    assert type(probe).__name__ == "PointPretrainConfig" and probe.num_groups == 32


def test_compat_of_the_experiment_reaches_the_model_config():
    cfg = apply_overrides(ExperimentConfig(), ["compat=pointmap"])
    assert cfg.model_config().compat == "pointmap"
    assert cfg.model_config().decoder_order == "release"  # the release's setting


def test_bad_num_regions_is_refused_at_load_naming_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"base: {SYNTHETIC_PRETRAIN}\nmodel: {{overrides: {{num_regions: 7}}}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: model.overrides.num_regions=7: num_groups=32 must be divisible by "
        "num_regions=7 (G % R == 0)"
    )
    with pytest.raises(ConfigError) as info:
        apply_overrides(
            default_config("pretrain"),
            ["model.overrides.num_groups=64", "model.overrides.num_regions=7"],
        )
    assert str(info.value) == (
        "--set: model.overrides.num_regions=7: num_groups=64 must be divisible by "
        "num_regions=7 (G % R == 0)"
    )


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "model.overrides.num_groups=abc",
            "--set: model.overrides.num_groups: expected an integer, got 'abc'",
        ),
        (
            "model.overrides.drop_path_rate=[1]",
            "--set: model.overrides.drop_path_rate: expected a number, got [1]",
        ),
        (
            "model.overrides.num_region=2",
            (
                "--set: unknown override 'model.overrides.num_region' for PointPretrainConfig; did you "
                "mean 'num_regions'?"
            ),
        ),
        (
            "model.overrides.encoder={backbone: {dimm: 3}}",
            (
                "--set: unknown override 'model.overrides.encoder.backbone.dimm' for BackboneConfig; "
                "did you mean 'dim'?"
            ),
        ),
        (
            "model.overrides.decoder_order=sideways",
            "--set: model.overrides.decoder_order='sideways': decoder_order='sideways' must be one of",
        ),
        (
            "model.overrides.compat=pointnet",
            "--set: model.overrides.compat='pointnet': compat='pointnet' must be one of",
        ),
        ("model.name=nosuch", "--set: unknown model 'nosuch'; registered: "),
        ("train.task=segment", "--set: train.task: unknown task 'segment'"),
    ],
)
def test_model_errors_are_one_config_error_line(override, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(default_config("pretrain"), [override])
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text, text
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_a_task_the_preset_has_not_is_refused_at_load():
    with pytest.raises(ConfigError, match="unknown task 'partseg' for images model"):
        apply_overrides(
            ExperimentConfig(), ["model.name=map_tiny_patch16_224", "train.task=partseg"]
        )


def test_cli_refuses_a_bad_model_override_before_building_a_dataset(tmp_path, capsys, monkeypatch):
    from map3d.cli import main

    def no_dataset(*args, **kwargs):
        raise AssertionError("a dataset was built before the model config was checked")

    monkeypatch.setattr("map3d.data.build_dataset", no_dataset)
    monkeypatch.delenv("MAP3D_DEBUG", raising=False)
    assert (
        main(["pretrain", "--out", str(tmp_path / "run"), "--set", "model.overrides.num_regions=7"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "map3d pretrain: error: --set: model.overrides.num_regions=7: num_groups=32 must be "
        "divisible by num_regions=7 (G % R == 0)"
    )
    assert not (tmp_path / "run").exists()


def test_default_config_reads_the_shipped_yaml(tmp_path, monkeypatch):
    from map3d.engine import config

    assert default_config("pretrain") == load_config(SYNTHETIC_PRETRAIN)
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "synthetic.yaml").write_text(
        f"base: {SYNTHETIC_PRETRAIN}\nschedule: {{epochs: 2}}\n"
    )
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
    assert default_config("pretrain").schedule.epochs == 2
    with pytest.raises(
        ConfigError,
        match=r"built-in classify config .*finetune/synthetic\.yaml "
        r"is missing",
    ):
        default_config("classify")
    with pytest.raises(ConfigError, match="no built-in default config for task 'partseg'"):
        default_config("partseg")


# ----------------------------------------------------------------------------- old checkpoints


def _old_config() -> dict:
    """An experiment config as an earlier map3d wrote it into a checkpoint: fields added since
    are absent, floats written as ints, a tuple as a list."""
    config = config_to_dict(default_config("classify"))
    for section, name in (
        ("optim", "layer_decay"),
        ("train", "label_smoothing"),
        ("train", "step_mode"),
        ("train", "compile"),
        ("eval", "vote_permute"),
    ):
        del config[section][name]
    del config["compat"]
    config["optim"]["weight_decay"] = 0
    config["model"]["overrides"].update({"drop_path_rate": 0, "head_dropout": 0})
    return config


def _old_model_config(model) -> dict:
    """`model_config` as a checkpoint stores it (plain dicts and lists), ints for floats."""
    from map3d.engine.trainer import _plain

    plain = _plain(model.config)
    plain["encoder"]["backbone"]["drop_path_rate"] = 0
    plain["head_dropout"] = 0
    return plain


def test_old_checkpoint_configs_keep_loading(tmp_path):
    from map3d.engine.checkpoint import FORMAT_NAME, atomic_torch_save, load_checkpoint
    from map3d.engine.predict import load_model
    from map3d.engine.runs import checkpoint_config

    torch.manual_seed(0)
    model = map3d.create_model(
        "hybridmt3d_tiny",
        task="classify",
        num_classes=5,
        num_groups=32,
        group_size=16,
        drop_path_rate=0.0,
        head_dropout=0.0,
    )
    path = tmp_path / "best.pt"
    atomic_torch_save(
        {
            "format": FORMAT_NAME,
            "format_version": 1,
            "task": "classify",
            "model_name": "hybridmt3d_tiny",
            "model_task": "classify",
            "model_config": _old_model_config(model),
            "config": _old_config(),
            "model": model.state_dict(),
            "epoch": 1,
            "step": 4,
        },
        path,
    )
    ckpt = load_checkpoint(path)

    cfg = checkpoint_config(ckpt, ["eval.votes=1"])
    assert cfg.optim.weight_decay == 0.0 and cfg.optim.layer_decay == 1.0  # new field: default
    typed = cfg.model_config(filled={"num_classes": 5})
    assert typed == model.config and isinstance(typed.head_dropout, float)
    check_resume_config(ckpt["config"], config_from_dict(ckpt["config"]), str(path))

    loaded, _ = load_model(path, "cpu")  # predict: create_model(**model_config), strict weights
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    python = map3d.load_model(path)  # the same rebuild, from Python
    assert python.config == model.config and not python.training
    for key, value in model.state_dict().items():
        assert torch.equal(python.state_dict()[key], value), key
    rebuilt = map3d.create_model("hybridmt3d_tiny", task="classify", **ckpt["model_config"])
    assert dataclasses.asdict(rebuilt.config) == dataclasses.asdict(model.config)
