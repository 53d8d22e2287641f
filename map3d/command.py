"""`Command`: what a `map3d` subcommand declares (help, arguments, the function that runs it).

A module of its own, free of heavy imports, so that the modules declaring commands
(`map3d.engine.commands`, `map3d.engine.predict`, `map3d.viz.command`, `map3d.commands`) do not
import the CLI (`map3d.cli`), which only lists them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: one-line help, an argument builder and the function that runs it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""
