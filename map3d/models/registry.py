"""timm-style registry: presets (encoder configs by name) x heads (model builders by task).

    @register_model                       # preset: a function returning an encoder config
    def hybridmt3d_s() -> PointEncoderConfig: ...

    @register_head("classify", modality="points", config=PointClassifierConfig)
    def build(config) -> nn.Module: ...   # config: the task config holding `encoder`

    create_model("hybridmt3d_s", task="classify", num_classes=15, drop_path_rate=0.2)

Overrides go straight into the typed task config: a top-level field by name, a nested
dataclass field by a dict (e.g. `encoder={"backbone": {"dim": 256}}`) or, when the name is
unique, by its bare name (`drop_path_rate=...` reaches `encoder.backbone.drop_path_rate`).
Each value is checked against its field's type by `map3d.typed.coerce`, the same check the
experiment config uses (so `model.overrides` of a YAML file and keyword arguments here mean
the same); unknown names, wrong types and values the config's own checks refuse are one-line
`ConfigError`s naming the key (`resolve_config`). The experiment config resolves its
`model.overrides` here when it loads (`ExperimentConfig.model_config`).
`create_model(name, task=t, **dataclasses.asdict(model.config))` rebuilds a model.
`compat="pointmap" | "mamba3d" | "pointmae"` first applies that release's settings
(`map3d.models.compat`); the other overrides win over them.
Presets and heads in other files register themselves when `PLUGIN_MODULES` are imported
(lazily, on first use; a plugin module that does not exist yet is skipped).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from map3d.errors import ConfigError
from map3d.plugins import PluginModules
from map3d.typed import coerce

if typing.TYPE_CHECKING:  # annotations only
    from torch import nn

PLUGIN_MODULES = ("map3d.models.points", "map3d.models.images")


@dataclass(frozen=True)
class Preset:
    name: str
    build_config: Callable[[], Any]
    modality: str


@dataclass(frozen=True)
class Head:
    """What a preset is built into for one `task=` of `create_model` ("pretrain",
    "classify", ...): the task's config type and its builder. Not an engine job
    (`map3d.engine.tasks.Task`), which trains or evaluates such a model."""

    name: str
    modality: str
    config: type
    build: Callable[[Any], nn.Module]


_PRESETS: dict[str, Preset] = {}
_HEADS: dict[tuple[str, str], Head] = {}
_PLUGINS = PluginModules(PLUGIN_MODULES)


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


def register_head(task: str, *, modality: str = "points", config: type):
    """Decorator registering `build(config) -> nn.Module` for (modality, task); `config` is
    the task's dataclass, with an `encoder` field that receives the preset's config."""
    if not dataclasses.is_dataclass(config) or "encoder" not in {
        f.name for f in dataclasses.fields(config)
    }:
        raise ValueError(f"task config {config!r} must be a dataclass with an 'encoder' field")

    def wrap(build: Callable) -> Callable:
        _HEADS[(modality, task)] = Head(task, modality, config, build)
        return build

    return wrap


def _load_plugins() -> None:
    _PLUGINS.load()


def list_models(modality: str | None = None) -> list[str]:
    """Registered preset names, sorted (optionally of one modality)."""
    _load_plugins()
    return sorted(n for n, p in _PRESETS.items() if modality in (None, p.modality))


def model_modality(name: str) -> str:
    """The modality of a registered preset: "points" or "images"."""
    return _preset(name).modality


def list_tasks(name: str) -> list[str]:
    """The `task=` values a preset can be built for (its modality's registered heads)."""
    preset = _preset(name)
    return sorted(t for (m, t) in _HEADS if m == preset.modality)


def _preset(name: str) -> Preset:
    _load_plugins()
    if name not in _PRESETS:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _PRESETS[name]


def apply_overrides(config: Any, overrides: dict[str, Any], *, where: str = "") -> Any:
    """A copy of dataclass `config` with `overrides` applied (see the module docstring); each
    value is checked against its field's type by `map3d.typed.coerce`, the one type check of
    map3d's configs. Errors are `ConfigError`s naming the key under `where` (e.g.
    "model.overrides"); a constructor's own check (`__post_init__`) raises as it is."""
    hints = typing.get_type_hints(type(config))
    fields = [f.name for f in dataclasses.fields(config)]
    direct, nested_by_path = {}, {}
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else str(key)
        if key in fields:
            current = getattr(config, key)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                value = apply_overrides(current, value, where=path)
            else:
                value = coerce(value, hints[key], path)
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
            close = difflib.get_close_matches(str(key), _field_names(config), n=1)
            hint = f"; did you mean '{close[0]}'?" if close and not owners else ""
            raise ConfigError(
                f"{reason} override {path!r} for {type(config).__name__}{hint} "
                f"(fields: {', '.join(sorted(fields))})"
            )
        nested_by_path.setdefault(owners[0], {})[key] = value
    for owner, values in nested_by_path.items():
        base = direct.get(owner, getattr(config, owner))
        direct[owner] = apply_overrides(base, values, where=where)  # the key as the user wrote it
    return dataclasses.replace(config, **direct)


def _has_field(config: Any, key: str) -> bool:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == key or (dataclasses.is_dataclass(value) and _has_field(value, key)):
            return True
    return False


def _field_names(config: Any) -> list[str]:
    """Every field name of dataclass `config` and of the dataclasses it nests."""
    names = []
    for f in dataclasses.fields(config):
        names.append(f.name)
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            names.extend(_field_names(value))
    return names


def _head(name: str, task: str) -> tuple[Preset, Head]:
    preset = _preset(name)
    key = (preset.modality, task)
    if key not in _HEADS:
        raise ConfigError(
            f"unknown task {task!r} for {preset.modality} model {name!r}; "
            f"available: {', '.join(list_tasks(name))}"
        )
    return preset, _HEADS[key]


def _ordered(overrides: dict[str, Any]) -> list[tuple[str, Any]]:
    """The overrides in the order they are applied: `compat` (the release's settings), then
    `encoder` (a whole encoder config), then the others as given."""
    first = [k for k in ("compat", "encoder") if k in overrides]
    return [(k, overrides[k]) for k in first] + [
        (k, v) for k, v in overrides.items() if k not in first
    ]


def _apply(preset: Preset, spec: Head, items: list[tuple[str, Any]], where: str) -> Any:
    config = spec.config(encoder=preset.build_config())
    rest = dict(items)
    compat = rest.get("compat")
    if compat is not None:  # the release's settings first: explicit overrides win
        from map3d.models.compat import get_release

        release = {"compat": compat, **get_release(compat).overrides(spec.name)}
        config = apply_overrides(config, release, where=where)
    encoder = rest.pop("encoder", None)
    if encoder is not None:
        config = apply_overrides(config, {"encoder": encoder}, where=where)
    return apply_overrides(config, rest, where=where)


def resolve_config(name: str, task: str, overrides: dict[str, Any], *, where: str = "") -> Any:
    """The typed task config of preset `name` for `task` with `overrides` (keyword arguments
    of `create_model`, or `model.overrides` of an experiment) applied.

    Every refusal is one `ConfigError` line naming the override: a value of the wrong type or
    an unknown name by `apply_overrides`; a value the config's own checks refuse (e.g.
    num_groups % num_regions != 0) as "`where`.key=value: reason", where key is the first
    override (in the order they are applied) with which the config no longer builds.
    """
    preset, spec = _head(name, task)
    items = _ordered(overrides)
    try:
        return _apply(preset, spec, items, where)
    except ConfigError:
        raise
    except ValueError as err:
        _apply(preset, spec, [], where)  # the preset alone must build (else: a bug, raised)
        for i, (key, value) in enumerate(items):
            try:
                _apply(preset, spec, items[: i + 1], where)
            except ValueError:
                path = f"{where}.{key}" if where else key
                raise ConfigError(f"{path}={value!r}: {err}") from None
        raise


def build_config(name: str, task: str = "pretrain", **overrides) -> Any:
    """The task config `create_model` would build, without building the model."""
    return resolve_config(name, task, overrides)


def model_from_config(name: str, task: str, config: Any) -> nn.Module:
    """Build preset `name`'s model for `task` from its (resolved) task config."""
    model = _head(name, task)[1].build(config)
    model.config = config
    return model


def create_model(name: str, task: str = "pretrain", **overrides) -> nn.Module:
    """Build preset `name` for `task` ("pretrain", "classify", ...) with config overrides."""
    return model_from_config(name, task, build_config(name, task, **overrides))
