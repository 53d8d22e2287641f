"""Atomic file writes: readers see either the previous file or the complete new one.

Every file map3d writes for keeps (checkpoints, configs, exported weights, PLY/PNG/CSV, data
caches) goes through `atomic_write`: the content goes to a temporary file in the target's
directory, is flushed and fsync'ed, renamed over the target with `os.replace` (atomic on POSIX),
and the directory is fsync'ed so that the rename itself survives a power loss. On any failure
(a full disk, an exception in the writer) the temporary file is removed and the target is left
as it was. A process killed mid-write (SIGKILL, OOM killer) leaves its temporary file behind;
its name records the writer's pid, and `remove_stale_temps` deletes those of dead writers.
```
with atomic_write(run_dir / "last.pt") as f:
    torch.save(state, f)
```
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import socket
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_TEMP = re.compile(r"^\.(?P<name>.+)\.p(?P<pid>\d+)h(?P<host>[0-9a-f]{8})r[0-9a-f]+\.tmp$")


def temp_name(target: str) -> str:
    """Name of a fresh temporary file for `target` (a file name, no directory)."""
    return f".{target}.p{os.getpid()}h{_HOST}r{secrets.token_hex(4)}.tmp"


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make renames and creations inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, newline: str | None = None
) -> Iterator[IO]:
    """Open a temporary file for writing (`mode` "wb" or "w") that replaces `path` on success.

    Creates the parent directory. On an exception the temporary file is removed and `path` is
    untouched. A failed write (a full disk, a read-only file system) is raised as an `OSError`
    that names `path`, not the temporary file.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        with open(tmp, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        named = _naming_target(err, path, tmp)
        if named is None:
            raise
        raise named from err
    fsync_dir(path.parent)


def write_json(path: str | os.PathLike, data: object) -> None:
    """`data` as indented JSON (one trailing newline) in `path`, through `atomic_write`."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")


# a failed write that a library reports as its own error (torch.save: a RuntimeError whose
# context is the OSError) is still the disk's refusal
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _naming_target(err: BaseException, path: Path, tmp: Path) -> OSError | None:
    """The OSError of a failed write to `tmp` as one naming `path` (`path: No space left on
    device`, never the temporary name), or None to re-raise `err` as it is."""
    cause = err if isinstance(err, OSError) else (err.__cause__ or err.__context__)
    if not isinstance(cause, OSError) or cause.errno is None:
        return None
    if cause.filename is not None and os.fspath(cause.filename) != os.fspath(tmp):
        return None  # about another file (the writer's own input, say)
    if cause is not err and cause.errno not in _DISK_FULL:
        return None
    return OSError(cause.errno, cause.strerror or os.strerror(cause.errno), os.fspath(path))


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Delete temporary files of `atomic_write`s whose writer died (on this host), optionally
    only those for `target`; returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = []
    for entry in directory.iterdir():
        match = _TEMP.match(entry.name)
        if match is None or (target is not None and match["name"] != target):
            continue
        pid = int(match["pid"])
        if match["host"] != _HOST or pid == os.getpid() or pid_alive(pid):
            continue
        stale.append(entry)
    return remove_temps(stale, directory)


def remove_temps(paths: Iterable[Path], directory: str | os.PathLike) -> list[Path]:
    """Delete `paths`, temporary files of interrupted writes in `directory`, with a warning
    naming them; returns those removed (one already gone is skipped)."""
    removed = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    if removed:
        log.warning(
            "removed %d temporary file(s) of interrupted writes in %s: %s",
            len(removed),
            directory,
            ", ".join(p.name for p in removed),
        )
    return removed
