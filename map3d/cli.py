"""The `map3d` command: one entry point, one subcommand per job.

Each subcommand lives next to the code it drives and is declared as a `Command`; this file only
lists them, so adding a job never means editing another job's code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: one-line help, an argument builder and the function that runs it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


# name -> "module:attribute" of a `Command`; imported when the parser is built.
COMMANDS: dict[str, str] = {
    "pretrain": "map3d.engine.commands:PRETRAIN",
    "finetune": "map3d.engine.commands:FINETUNE",
    "eval": "map3d.engine.commands:EVAL",
    "export": "map3d.engine.commands:EXPORT",
    "predict": "map3d.engine.predict:PREDICT",
    "viz": "map3d.viz.command:VIZ",
    "backends": "map3d.commands:BACKENDS",
    "bench": "map3d.commands:BENCH",
}


def _load(target: str) -> Command:
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def build_parser() -> argparse.ArgumentParser:
    from map3d import __version__

    parser = argparse.ArgumentParser(
        prog="map3d",
        description="Masked Autoregressive Pretraining for point clouds and images.",
    )
    parser.add_argument("--version", action="version", version=f"map3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, target in COMMANDS.items():
        command = _load(target)
        p = sub.add_parser(
            name,
            help=command.help,
            description=command.description or command.help,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
