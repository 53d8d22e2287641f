"""Lazy imports by name: the one loader of map3d's registries.

`PluginModules` imports a fixed list of modules once, on first use, for what they register:
the op backends (`map3d.ops.dispatch`), the model wings (`map3d.models.registry`) and the engine
jobs (`map3d.engine.tasks`). `load_object("module:attr")` imports one object named by a string:
the CLI's commands and the dataset registry. Imports nothing of map3d.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger(__name__)


class PluginModules:
    """Modules imported together, once, when `load()` is first called.

    A module that does not exist is skipped (a wing or backend family not shipped). Any other
    import error is raised, unless `optional`: then it is kept in `errors` (module -> "Type:
    message") and logged, and the other modules still load, so that a broken optional
    dependency (e.g. a Triton build that fails to import) removes only its own registrations.
    """

    def __init__(self, modules: tuple[str, ...], *, optional: bool = False):
        self.modules = modules
        self.optional = optional
        self.loaded = False
        self.errors: dict[str, str] = {}

    def load(self) -> None:
        if self.loaded:
            return
        self.loaded = True
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as error:
                if error.name != module and not self.optional:
                    raise  # a real import error inside an existing module
                self._skip(module, error, logging.DEBUG)
            except ImportError as error:
                if not self.optional:
                    raise
                self._skip(module, error, logging.DEBUG)
            except Exception as error:
                if not self.optional:
                    raise
                self._skip(module, error, logging.WARNING)

    def _skip(self, module: str, error: BaseException, level: int) -> None:
        if self.optional:
            self.errors[module] = f"{type(error).__name__}: {error}"
        logger.log(level, "module %s not loaded: %s", module, error)


def load_object(target: str) -> Any:
    """The object named `"package.module:attr"`, its module imported on demand."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
