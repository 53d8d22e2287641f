"""The one base type of map3d's refusals.

`UserError` marks an error caused by what the user gave map3d (a file, a config key, a flag
value, a checkpoint) or by the machine it runs on (a full disk, a process of a multi-process
run that died), not by a bug. Its message names the file / key / value and what is wrong
in one line. The `map3d` command prints such errors as `map3d <command>: error: <message>` and
exits with status 2 (`--debug` or `MAP3D_DEBUG=1` shows the traceback instead); any other
exception is a bug and keeps its traceback.

Library code raises a subclass that also derives from the built-in type callers already catch
(`ValueError` for bad content), e.g. `DatasetFormatError`, `CheckpointError`, `ConfigError`.
"""

from __future__ import annotations

import errno

# OSErrors caused by the paths a user gave or the storage behind them, not by map3d
USER_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOSPC,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EDQUOT,
    }
)


class UserError(Exception):
    """A refusal of user input; the message says which file/key/value and why, in one line."""


def torch_load_reason(err: BaseException) -> str:
    """The informative part of a `torch.load` failure, in one line: the weights-only loader's
    own reason (without its long preamble) or the first line of the message."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
        return "refused by the weights-only loader: " + " ".join(reason.split())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


class OptionError(UserError, ValueError):
    """An option (config key, flag, keyword argument) whose value cannot be used; the message
    names the option, the value and what is allowed."""


class ConfigError(UserError, ValueError):
    """A config file, `--set` override or model keyword argument that does not fit the schema;
    the message names the key (and the value) in one line."""


class MissingDependencyError(UserError, ImportError):
    """An optional package that a requested feature needs is not installed; the message says
    which and how to install it."""
