"""Typed configs: every YAML in configs/ loads and builds its model config, strict keys, --set."""

from pathlib import Path

import pytest

from map3d.engine.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_to_dict,
    default_config,
    load_config,
    parse_override,
    save_config,
)

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


def test_configs_exist():
    names = {str(p.relative_to(p.parents[1])) for p in CONFIGS}
    for required in (
        "pretrain/shapenet55_map.yaml",
        "pretrain/synthetic.yaml",
        "finetune/modelnet40.yaml",
        "finetune/modelnet40_fewshot.yaml",
        "finetune/scanobjectnn_obj_bg.yaml",
        "finetune/scanobjectnn_obj_only.yaml",
        "finetune/scanobjectnn_pb_t50_rs.yaml",
        "finetune/synthetic.yaml",
        "smoke/pretrain.yaml",
        "smoke/finetune.yaml",
    ):
        assert required in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_loads_and_its_model_config_builds(path):
    from map3d.data.registry import dataset_class
    from map3d.engine.tasks import get_task
    from map3d.models import build_config

    cfg = load_config(path)
    task = get_task(cfg.train.task)
    overrides = dict(cfg.model.overrides)
    if task.model_task == "classify":
        overrides.setdefault("num_classes", 10)
    build_config(cfg.model.name, task.model_task, **overrides)  # validates every override
    dataset_class(cfg.data.name)  # the dataset name is registered


def test_paper_hyperparameters():
    pre = load_config("configs/pretrain/shapenet55_map.yaml")
    assert (pre.optim.lr, pre.optim.weight_decay, pre.schedule.epochs) == (1e-3, 0.05, 300)
    assert (pre.schedule.warmup_epochs, pre.data.batch_size, pre.data.augment) == (
        10,
        128,
        ["rotate_y"],
    )
    ft = load_config("configs/finetune/modelnet40.yaml")
    assert (ft.optim.lr, ft.optim.grad_clip, ft.data.batch_size, ft.eval.votes) == (
        5e-4,
        10,
        32,
        10,
    )
    assert (ft.data.npoints, ft.data.point_all) == (1024, 1200)
    hardest = load_config("configs/finetune/scanobjectnn_pb_t50_rs.yaml")  # via `base:`
    assert hardest.data.options == {"variant": "pb_t50_rs"} and hardest.data.npoints == 2048


@pytest.mark.parametrize(
    "task,path",
    [
        ("pretrain", "configs/pretrain/synthetic.yaml"),
        ("classify", "configs/finetune/synthetic.yaml"),
    ],
)
def test_builtin_defaults_match_their_yaml(task, path):
    assert load_config(path) == default_config(task)


def test_unknown_key_in_yaml_names_the_path(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("optim:\n  lr: 1.0e-3\n  lrr: 2\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'lr'"):
        load_config(f)
    f.write_text("modle: {name: x}\n")
    with pytest.raises(ConfigError, match="'modle'"):
        load_config(f)


def test_wrong_type_names_the_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("data:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer"):
        load_config(f)


@pytest.mark.parametrize(
    "text,keys,value",
    [
        ("optim.lr=1e-4", ["optim", "lr"], 1e-4),
        ("train.seed=3", ["train", "seed"], 3),
        ("data.augment=[rotate_y, scale]", ["data", "augment"], ["rotate_y", "scale"]),
        ("train.pretrained=null", ["train", "pretrained"], None),
        ("output.tensorboard=true", ["output", "tensorboard"], True),
        ("model.overrides.mask_ratio=[0.3, 0.7]", ["model", "overrides", "mask_ratio"], [0.3, 0.7]),
    ],
)
def test_parse_override(text, keys, value):
    assert parse_override(text) == (keys, value)


def test_apply_overrides_types_and_errors():
    cfg = apply_overrides(
        ExperimentConfig(),
        [
            "optim.lr=2e-4",
            "optim.grad_clip=5",
            "model.overrides.num_groups=32",
            "data.root=/d",
        ],
    )
    assert cfg.optim.lr == 2e-4 and isinstance(cfg.optim.grad_clip, float)
    assert cfg.model.overrides == {"num_groups": 32} and cfg.data.root == "/d"
    for bad, match in [
        ("optim.lrr=1", r"optim\.lrr"),
        ("nosuch.x=1", "nosuch"),
        ("optim.lr=fast", "optim.lr"),
        ("train.seed=1.5", "train.seed"),
        ("optim.lr", "KEY=VALUE"),
    ]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(ExperimentConfig(), [bad])


def test_resolved_config_round_trips(tmp_path):
    cfg = apply_overrides(default_config("classify"), ["optim.lr=3e-4", "data.augment=[]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def alias_bomb(levels: int = 9) -> str:
    """A "billion laughs" YAML: 9 ** levels strings from a few hundred bytes."""
    lines = ["model:", "  overrides:", "    l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * 9)
        lines.append(f"    l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 600
    with pytest.raises(ConfigError, match=r"bomb\.yaml.*more than 10,000 values"):
        load_config(path)
    flow = (
        "{l0: &l0 [x, x, x, x, x, x, x, x, x], "
        + ", ".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9))
        + "}"
    )
    with pytest.raises(ConfigError, match="--set model.overrides.x: more than 10,000"):
        apply_overrides(load_config(), [f"model.overrides.x={flow}"])
    # anchors and aliases of a small config still work
    path.write_text("data: {augment: &a [rotate_y], vote_augment: *a}\n")
    cfg = load_config(path)
    assert cfg.data.vote_augment == ["rotate_y"]


def test_checkpoint_config_with_shared_references_is_refused(tmp_path):
    from map3d.engine.checkpoint import (
        FORMAT_NAME,
        CheckpointError,
        atomic_torch_save,
        load_checkpoint,
    )

    nested = ["x"]
    for _ in range(25):
        nested = [nested, nested]  # 2 ** 25 leaves once expanded, 1 object per level on disk
    config = config_to_dict(load_config())
    config["model"]["overrides"] = {"bomb": nested}
    path = tmp_path / "last.pt"
    atomic_torch_save(
        {"format": FORMAT_NAME, "format_version": 1, "config": config, "model": {}}, path
    )
    with pytest.raises(CheckpointError, match=r"last\.pt 'config': more than 10,000 values"):
        load_checkpoint(path)
    config["model"]["overrides"] = {"bomb": "x" * 30_000}
    atomic_torch_save({"format": FORMAT_NAME, "config": config, "model": {}}, path)
    with pytest.raises(CheckpointError, match=r"model\.overrides\.bomb is a string of 30,000"):
        load_checkpoint(path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_states_its_source(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(line.startswith("# Source: ") for line in header)


def test_finetune_recipes_match_the_mamba3d_configs():
    """cfgs/finetune_modelnet.yaml, finetune_scan_*.yaml, fewshot.yaml of xhanxu/Mamba3D."""
    expected = {"modelnet40": (128, 0.2), "scanobjectnn_obj_bg": (128, 0.1),
                "scanobjectnn_obj_only": (128, 0.1), "scanobjectnn_pb_t50_rs": (128, 0.1),
                "modelnet40_fewshot": (128, 0.3)}  # fmt: skip
    for name, (groups, drop_path) in expected.items():
        overrides = load_config(f"configs/finetune/{name}.yaml").model.overrides
        assert (overrides["num_groups"], overrides["drop_path_rate"]) == (groups, drop_path)


def test_train_compile_takes_auto_on_off_and_names_itself_when_wrong():
    from map3d.engine.config import ExperimentConfig

    assert ExperimentConfig().train.compile == "auto"
    for text, value in (("on", True), ("true", True), ("off", False), ("auto", "auto")):
        assert apply_overrides(ExperimentConfig(), [f"train.compile={text}"]).train.compile == value
    with pytest.raises(ConfigError, match=r"^--set: train.compile: expected auto, true \(on\)"):
        apply_overrides(ExperimentConfig(), ["train.compile=fast"])
