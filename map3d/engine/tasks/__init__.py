"""Task registry: each training job (pretrain, classify, part segmentation, ...) is one `Task`
subclass in its own module, registered by name; the engine's loops only call the `Task` methods.

Add a task by writing `map3d/engine/tasks/<name>.py` with a `@register_task("<name>")` class and
listing the module in `_MODULES` below (imported lazily on first lookup).
"""

from __future__ import annotations

from map3d.engine.inputs import batch_input
from map3d.engine.tasks.base import Task, TaskContext
from map3d.plugins import PluginModules

_REGISTRY: dict[str, type[Task]] = {}

# Modules that define built-in tasks; imported the first time the registry is read.
_MODULES = (
    "map3d.engine.tasks.pretrain",
    "map3d.engine.tasks.classify",
    "map3d.engine.tasks.partseg",
)


def register_task(name: str):
    """Class decorator: make a `Task` subclass available as `train.task: <name>`."""

    def wrap(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


_BUILTIN = PluginModules(_MODULES)


def _import_builtin() -> None:
    _BUILTIN.load()


def get_task(name: str) -> Task:
    """A fresh instance of the task registered as `name`."""
    _import_builtin()
    if name not in _REGISTRY:
        raise ValueError(
            f"train.task: unknown task {name!r}; choose from {', '.join(list_tasks())}"
        )
    return _REGISTRY[name]()


def list_tasks() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


__all__ = ["Task", "TaskContext", "batch_input", "get_task", "list_tasks", "register_task"]
