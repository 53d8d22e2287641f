import dataclasses

import pytest
import torch

import map3d
from map3d.errors import ConfigError
from map3d.layers import num_masked_tokens
from map3d.models import (
    BackboneConfig,
    MAPPretrainer,
    PretrainOutput,
    build_config,
    list_models,
    list_tasks,
    register_model,
)
from map3d.models.points import PointClassifier, PointEncoderConfig
from map3d.models.registry import _PRESETS

from .conftest import small_overrides

POINT_PRESETS = list_models(modality="points")
PAPER_SIZE = {"hybridmt3d_s", "mamba3d_s", "pointmae_s"}


def preset_params():
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in PAPER_SIZE else name
        for name in POINT_PRESETS
    ]


def overrides_for(name, task):
    """Paper-size presets run on 4 tokens of 4 points to stay cheap on CPU."""
    if name not in PAPER_SIZE:
        return small_overrides(task)
    few = {"num_groups": 4, "group_size": 4}
    return {**few, "num_regions": 2} if task == "pretrain" else few


def test_required_presets_are_registered():
    required = {"hybridmt3d_s", "mamba3d_s", "pointmae_s"}
    required |= {"hybridmt3d_tiny", "mamba3d_tiny", "pointmae_tiny"}
    assert required <= set(POINT_PRESETS)
    assert {"pretrain", "classify"} <= set(list_tasks("hybridmt3d_s"))


def test_model_heads_are_not_named_like_engine_jobs():
    """The registry's builders are heads (`register_head`); `Task` is the engine's job."""
    import map3d.models
    from map3d.models import registry

    assert not hasattr(registry, "Task") and not hasattr(registry, "register_task")
    with pytest.raises(AttributeError, match="register_head"):
        map3d.models.register_task  # noqa: B018


@pytest.mark.parametrize("name", preset_params())
def test_pretrain_forward_backward(name, points):
    torch.manual_seed(0)
    overrides = overrides_for(name, "pretrain")
    model = map3d.create_model(name, task="pretrain", **overrides)
    assert isinstance(model, MAPPretrainer)
    out = model(points, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, PretrainOutput)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.per_sample_loss.shape == (2,)
    assert out.mask_ratio == 0.6
    assert out.num_masked == num_masked_tokens(0.6, overrides["num_groups"])
    out.loss.backward()
    no_grad = [n for n, p in model.encoder.named_parameters() if p.grad is None]
    assert not no_grad, f"encoder parameters without gradient: {no_grad}"


@pytest.mark.parametrize("name", preset_params())
def test_classify_forward_backward(name, points):
    torch.manual_seed(0)
    model = map3d.create_model(
        name, task="classify", num_classes=7, **overrides_for(name, "classify")
    )
    assert isinstance(model, PointClassifier)
    logits = model(points)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_hybridmt3d_s_parameter_count(capsys):
    torch.manual_seed(0)
    pretrainer = map3d.create_model("hybridmt3d_s", task="pretrain")
    classifier = map3d.create_model("hybridmt3d_s", task="classify", num_classes=40)
    encoder = count(pretrainer.encoder)
    backbone = count(pretrainer.encoder.backbone)
    assert count(classifier.encoder) == encoder
    pattern = pretrainer.encoder.backbone.config.pattern
    assert pattern.count("M") == 12 and pattern.count("T") == 4
    with capsys.disabled():
        print(
            f"\nhybridmt3d_s parameters: encoder {encoder:,} (backbone {backbone:,}); "
            f"MAP pretrainer {count(pretrainer):,}; ModelNet40 classifier {count(classifier):,}"
        )
    assert 20e6 < encoder < 40e6


def test_overrides_reach_nested_fields():
    config = build_config("hybridmt3d_tiny", "classify", num_classes=15, drop_path_rate=0.2)
    assert config.num_classes == 15 and config.encoder.backbone.drop_path_rate == 0.2
    config = build_config("hybridmt3d_tiny", "pretrain", encoder={"backbone": {"dim": 64}})
    assert config.encoder.backbone.dim == 64 and config.encoder.backbone.pattern == "MMMT"
    config = build_config("hybridmt3d_tiny", "pretrain", mask_ratio=[0.3, 0.7])
    assert config.mask_ratio == (0.3, 0.7)


def test_unknown_and_invalid_overrides_are_errors():
    # ConfigError is a ValueError (what callers catch) and a one-line UserError naming the key
    with pytest.raises(
        ConfigError, match="unknown override 'num_clases'.*did you mean 'num_classes'"
    ):
        map3d.create_model("hybridmt3d_tiny", task="classify", num_clases=10)
    with pytest.raises(ValueError, match="unknown model 'hybrid'"):
        map3d.create_model("hybrid")
    with pytest.raises(ValueError, match="unknown task 'segment'"):
        map3d.create_model("hybridmt3d_tiny", task="segment")
    with pytest.raises(ConfigError, match=r"^num_regions=7: num_groups=64 must be divisible"):
        build_config("hybridmt3d_tiny", "pretrain", num_groups=64, num_regions=7)
    with pytest.raises(ConfigError, match=r"^pattern='MXT': .*pattern"):
        build_config("hybridmt3d_tiny", "pretrain", pattern="MXT")
    with pytest.raises(ConfigError, match=r"^num_groups: expected an integer, got '64'$"):
        build_config("hybridmt3d_tiny", "pretrain", num_groups="64")
    with pytest.raises(ConfigError, match=r"^drop_path_rate: expected a number, got '0.1'$"):
        build_config("hybridmt3d_tiny", "classify", drop_path_rate="0.1")
    with pytest.raises(ConfigError, match="mask_ratio"):
        build_config("hybridmt3d_tiny", "pretrain", mask_ratio=(0.3, 0.5, 0.7))
    with pytest.raises(ConfigError, match=r"^encoder\.backbone\.dim: expected an integer"):
        build_config("hybridmt3d_tiny", "pretrain", encoder={"backbone": {"dim": 6.5}})


def test_override_errors_name_the_override_that_breaks_the_config():
    """The key named is the first override (in order) with which the config no longer builds;
    the reason is the config's own check on all of them."""
    with pytest.raises(
        ConfigError,
        match=r"^num_groups=30: num_groups=30 must be divisible by "
        r"num_regions=4",
    ):
        build_config("hybridmt3d_tiny", "pretrain", num_groups=30, num_regions=4)
    with pytest.raises(ConfigError, match=r"^decoder_order='x': decoder_order='x' must be one"):
        build_config("hybridmt3d_tiny", "pretrain", num_groups=32, decoder_order="x")
    config = build_config("hybridmt3d_tiny", "pretrain", num_groups=30, num_regions=5)
    assert (config.num_groups, config.num_regions) == (30, 5)  # only the result is checked


def test_override_values_are_coerced_like_config_values():
    """Keyword arguments go through the experiment config's type check: ints become floats,
    lists become tuples, and a rebuilt config equals the original."""
    config = build_config("hybridmt3d_tiny", "classify", drop_path_rate=0, head_dropout=1)
    assert config.encoder.backbone.drop_path_rate == 0.0
    assert isinstance(config.encoder.backbone.drop_path_rate, float)
    assert isinstance(config.head_dropout, float)
    config = build_config("hybridmt3d_tiny", "pretrain", mask_ratio=[0.3, 0.7])
    assert config.mask_ratio == (0.3, 0.7)


@pytest.mark.parametrize("task", ["pretrain", "classify"])
def test_model_is_rebuildable_from_its_config(task):
    model = map3d.create_model("mamba3d_tiny", task=task, **small_overrides(task))
    rebuilt = map3d.create_model("mamba3d_tiny", task=task, **dataclasses.asdict(model.config))
    assert rebuilt.config == model.config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}


def test_other_files_can_register_presets():
    @register_model(name="test_only_hybrid")
    def preset():
        return PointEncoderConfig(BackboneConfig(dim=16, num_heads=2, pattern="MT", d_state=2))

    try:
        assert "test_only_hybrid" in map3d.list_models()
        model = map3d.create_model("test_only_hybrid", task="classify", num_classes=3)
        assert model.config.encoder.backbone.pattern == "MT"
    finally:
        del _PRESETS["test_only_hybrid"]
