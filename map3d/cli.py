"""The `map3d` command: one entry point, one subcommand per job.

Each subcommand lives next to the code it drives and is declared as a `Command`
(`map3d.command`, so declaring one does not import this file); this file only lists them, so
adding a job never means editing another job's code.

Errors. A refusal of the user's input ends every command the same way, here in `main`: one line
`map3d <command>: error: <message naming the file / key / value>` on stderr and exit status 2.
Refusals are `map3d.errors.UserError` (dataset, checkpoint and config errors derive from it) and
the `OSError`s of user paths: missing files, no space left, read-only file system, no
permission. Anything else is a bug and keeps its traceback; `--debug` (or `MAP3D_DEBUG=1`)
shows the traceback of refusals too. Ctrl-C exits with status 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from map3d.command import Command
from map3d.errors import USER_ERRNOS, UserError
from map3d.plugins import load_object

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


def build_parser() -> argparse.ArgumentParser:
    from map3d import __version__

    parser = argparse.ArgumentParser(
        prog="map3d",
        description="Masked Autoregressive Pretraining for point clouds and images.",
    )
    parser.add_argument("--version", action="version", version=f"map3d {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, target in COMMANDS.items():
        command: Command = load_object(target)
        p = sub.add_parser(
            name,
            help=command.help,
            description=command.description or command.help,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        command.add_arguments(p)
        # also accepted after the command name; SUPPRESS keeps the global value otherwise
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        p.set_defaults(_run=command.run)
    return parser


DEBUG_ENV = "MAP3D_DEBUG"
DEBUG_HELP = f"show the full traceback of an error (also {DEBUG_ENV}=1)"
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130


def refusal(err: BaseException) -> str | None:
    """The one-line message of a refusal of user input; None for an error that is a bug."""
    if isinstance(err, OSError) and (
        isinstance(err, FileNotFoundError) or err.errno in USER_ERRNOS
    ):
        if err.strerror and err.filename is not None:
            target = os.fspath(err.filename)
            if err.filename2 is not None:
                target += f" -> {os.fspath(err.filename2)}"
            return f"{target}: {err.strerror}"
        return _one_line(str(err))
    if isinstance(err, UserError):
        return _one_line(str(err))
    return None


def _one_line(text: str) -> str:
    """Join a message's lines; an error re-raised from a DataLoader worker (its text holds the
    worker's traceback) is reduced to the original error's message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        lines = [lines[-1].split(": ", 1)[-1]]
    return " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"map3d {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        message = refusal(err)
        if message is None or debug:
            raise
        print(f"map3d {args.command}: error: {message}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
