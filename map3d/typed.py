"""Typed dataclasses from plain data: the one type check of map3d's configs.

`coerce(value, tp, path)` checks a plain value (from YAML, `--set`, a checkpoint or a keyword
argument) against a dataclass field's type hint and converts what is lossless (int -> float,
list -> tuple, a mapping -> a nested dataclass); `fill(cls, data, path)` builds a dataclass
from a nested mapping with strict keys. The experiment config (`map3d.engine.config`) and the
model registry (`map3d.models.registry`) both go through them, so a value means the same thing
and is refused with the same one-line `ConfigError`, naming its key, whichever way it arrives.

Only the standard library is imported here: `map3d --help` reads it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

from map3d.errors import ConfigError

__all__ = ["ConfigError", "coerce", "fill", "type_name"]


def type_name(tp: Any) -> str:
    """`int`, `float | None`, `tuple[float, float]`: a type hint as a config user reads it."""
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, path: str) -> Any:
    """`value` checked against type hint `tp` (converting int -> float, list -> tuple and a
    mapping -> dataclass `tp` via `fill`); ConfigError naming `path` otherwise."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return fill(tp, value, path)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
        args = typing.get_args(tp)
        if args and args[-1] is Ellipsis:
            args = (args[0],) * len(value)
        elif args and len(args) != len(value):
            raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
        items = args or (Any,) * len(value)
        return tuple(coerce(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, items)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {type_name(tp)}")


def unknown_key(path: str, key: Any, names: list[str]) -> ConfigError:
    """The error for key `key` under `path` that is none of the field `names`."""
    where = f"{path}.{key}" if path else str(key)
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{where}'{hint} (known: {', '.join(names)})")


def fill(cls: type, data: dict, path: str = "") -> Any:
    """Dataclass `cls` from mapping `data`: every key must be a field (ConfigError naming the
    full path otherwise, with the closest field name); missing fields keep `cls()`'s defaults;
    a mapping given for a dataclass field fills it on top of that field's default."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise unknown_key(path, unknown[0], names)
    defaults = cls()
    values = {}
    for name in names:
        sub = f"{path}.{name}" if path else name
        if name not in data:
            values[name] = getattr(defaults, name)
            continue
        value, hint = data[name], hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = fill(hint, {**dataclasses.asdict(getattr(defaults, name)), **value}, sub)
        else:
            value = coerce(value, hint, sub)
        values[name] = value
    return cls(**values)
