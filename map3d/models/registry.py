"""timm-style registry: presets (encoder configs by name) x tasks (model builders).

    @register_model                       # preset: a function returning an encoder config
    def hybridmt3d_s() -> PointEncoderConfig: ...

    @register_task("classify", modality="points", config=PointClassifierConfig)
    def build(config) -> nn.Module: ...   # config: the task config holding `encoder`

    create_model("hybridmt3d_s", task="classify", num_classes=15, drop_path_rate=0.2)

Overrides fill the task config: a top-level field by name, a nested dataclass field by a
dict (e.g. `encoder={"backbone": {"dim": 256}}`) or, when the name is unique, by its bare
name (`drop_path_rate=...` reaches `encoder.backbone.drop_path_rate`). Unknown names are
errors. `create_model(name, task=t, **dataclasses.asdict(model.config))` rebuilds a model.
`compat="pointmap" | "mamba3d" | "pointmae"` first applies that release's settings
(`map3d.models.compat`); the other overrides win over them.
Presets and tasks in other files register themselves when `PLUGIN_MODULES` are imported
(lazily, on first use; a plugin module that does not exist yet is skipped).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

PLUGIN_MODULES = ("map3d.models.points", "map3d.models.images")


@dataclass(frozen=True)
class Preset:
    name: str
    build_config: Callable[[], Any]
    modality: str


@dataclass(frozen=True)
class Task:
    name: str
    modality: str
    config: type
    build: Callable[[Any], nn.Module]


_PRESETS: dict[str, Preset] = {}
_TASKS: dict[tuple[str, str], Task] = {}
_loaded = False


def register_model(
    fn: Callable | None = None, *, name: str | None = None, modality: str = "points"
):
    """Decorator registering a preset: a no-argument function returning an encoder config."""

    def wrap(f: Callable) -> Callable:
        key = name or f.__name__
        if key in _PRESETS and _PRESETS[key].build_config is not f:
            raise ValueError(f"model preset {key!r} is already registered")
        _PRESETS[key] = Preset(key, f, modality)
        return f

    return wrap(fn) if fn is not None else wrap


def register_task(task: str, *, modality: str = "points", config: type):
    """Decorator registering `build(config) -> nn.Module` for (modality, task); `config` is
    the task's dataclass, with an `encoder` field that receives the preset's config."""
    if not dataclasses.is_dataclass(config) or "encoder" not in {
        f.name for f in dataclasses.fields(config)
    }:
        raise ValueError(f"task config {config!r} must be a dataclass with an 'encoder' field")

    def wrap(build: Callable) -> Callable:
        _TASKS[(modality, task)] = Task(task, modality, config, build)
        return build

    return wrap


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def list_models(modality: str | None = None) -> list[str]:
    """Registered preset names, sorted (optionally of one modality)."""
    _load_plugins()
    return sorted(n for n, p in _PRESETS.items() if modality in (None, p.modality))


def model_modality(name: str) -> str:
    """The modality of a registered preset: "points" or "images"."""
    return _preset(name).modality


def list_tasks(name: str) -> list[str]:
    """Tasks available for a preset."""
    preset = _preset(name)
    return sorted(t for (m, t) in _TASKS if m == preset.modality)


def _preset(name: str) -> Preset:
    _load_plugins()
    if name not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _PRESETS[name]


def apply_overrides(config: Any, overrides: dict[str, Any], *, where: str = "config") -> Any:
    """A copy of dataclass `config` with `overrides` applied (see the module docstring)."""
    fields = {f.name for f in dataclasses.fields(config)}
    direct, nested_by_path = {}, {}
    for key, value in overrides.items():
        if key in fields:
            current = getattr(config, key)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                value = apply_overrides(current, value, where=f"{where}.{key}")
            else:
                value = _checked(config, key, value, where)
            direct[key] = value
            continue
        owners = [
            f.name
            for f in dataclasses.fields(config)
            if dataclasses.is_dataclass(getattr(config, f.name))
            and _has_field(getattr(config, f.name), key)
        ]
        if len(owners) != 1:
            reason = "unknown" if not owners else f"ambiguous (in {owners})"
            raise ValueError(
                f"{reason} override {key!r} for {type(config).__name__} ({where}); "
                f"fields: {', '.join(sorted(fields))}"
            )
        nested_by_path.setdefault(owners[0], {})[key] = value
    for owner, values in nested_by_path.items():
        base = direct.get(owner, getattr(config, owner))
        direct[owner] = apply_overrides(base, values, where=f"{where}.{owner}")
    return dataclasses.replace(config, **direct)


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` fits a (resolved) type hint: unions, tuples, lists, scalars, dataclasses."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (tuple, list):
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_matches, value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _checked(config: Any, key: str, value: Any, where: str) -> Any:
    """`value` for field `key` of dataclass `config`, or ValueError naming the field."""
    hint = typing.get_type_hints(type(config)).get(key, Any)
    if not _matches(value, hint):
        raise ValueError(
            f"override {key}={value!r} for {type(config).__name__} ({where}) does not match "
            f"its type {hint}"
        )
    return value


def _has_field(config: Any, key: str) -> bool:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == key or (dataclasses.is_dataclass(value) and _has_field(value, key)):
            return True
    return False


def build_config(name: str, task: str = "pretrain", **overrides) -> Any:
    """The task config `create_model` would build, without building the model."""
    preset = _preset(name)
    key = (preset.modality, task)
    if key not in _TASKS:
        raise ValueError(
            f"unknown task {task!r} for {preset.modality} model {name!r}; "
            f"available: {', '.join(list_tasks(name))}"
        )
    spec = _TASKS[key]
    encoder = overrides.pop("encoder", None)
    config = spec.config(encoder=preset.build_config())
    compat = overrides.get("compat")
    if compat is not None:  # the release's settings first: explicit overrides win
        from map3d.models.compat import get_release

        release = {"compat": compat, **get_release(compat).overrides(task)}
        config = apply_overrides(config, release, where=f"{name}/{task} compat={compat}")
    if encoder is not None:
        config = apply_overrides(config, {"encoder": encoder})
    return apply_overrides(config, overrides, where=f"{name}/{task}")


def create_model(name: str, task: str = "pretrain", **overrides) -> nn.Module:
    """Build preset `name` for `task` ("pretrain", "classify", ...) with config overrides."""
    config = build_config(name, task, **overrides)
    model = _TASKS[(_preset(name).modality, task)].build(config)
    model.config = config
    return model
