"""Run directories: one writer at a time, no silent mixing of two runs, a log that keeps errors.

- `check_run_dir` refuses to start a new run in a directory that already holds one (continue it
  with `--resume`, pick a new `--out`, or replace it with `--overwrite`).
- `refuse_everywhere` raises the main process's refusal on every process of a run.
- `RunLock` holds `<run_dir>/.lock` (pid and host of the writer) while a run writes there; a
  second writer is refused; the lock of a dead process on this host is taken over.
- `remove_run_temps` deletes what interrupted writes left (the lock holder calls it).
- `RunLogHandler` keeps log records in memory until the run starts for real (`open_run_logs`),
  so a command that fails early leaves no empty run folder behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Self

from map3d.atomic import pid_alive, remove_temps
from map3d.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
# What a run writes into its directory (and `--overwrite` removes).
RUN_FILES = (
    "config.yaml",
    "metrics.jsonl",
    "train.log",
    "last.pt",
    "best.pt",
    "encoder.safetensors",
    "fewshot.json",
    "tensorboard",
)


class RunDirError(UserError, ValueError):
    """A run directory that cannot be used as asked; the message is one line (a refusal:
    `map3d` prints it as `map3d <command>: error: ...` with exit status 2)."""


def _held_files(run_dir: Path) -> list[str]:
    """Run files in `run_dir` and in its few-shot fold folders (`fold<k>/`)."""
    if not run_dir.is_dir():
        return []
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    for fold in sorted(run_dir.glob("fold*/")):
        held += [f"{fold.name}/{name}" for name in RUN_FILES if (fold / name).exists()]
    return held


def _resumes_from(run_dir: Path, resume: str | os.PathLike | None) -> bool:
    return resume is not None and Path(resume).resolve().parent == run_dir.resolve()


def check_run_dir(
    run_dir: str | os.PathLike,
    *,
    resume: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> None:
    """Refuse a run whose `run_dir` holds another run: allowed are an absent or empty folder,
    a resume from a checkpoint in `run_dir` itself, or `overwrite`."""
    run_dir = Path(run_dir)
    if overwrite or _resumes_from(run_dir, resume):
        return
    held = _held_files(run_dir)
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise RunDirError(
            f"--out {run_dir} already holds a run ({shown}): continue it with --resume "
            f"{run_dir}, choose a new --out, or pass --overwrite to replace it"
        )


def claim_run_dir(
    run_dir: str | os.PathLike,
    *,
    resume: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> None:
    """`check_run_dir`, then (`overwrite`, not resuming from `run_dir`) remove the old run."""
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if overwrite and not _resumes_from(Path(run_dir), resume):
        clear_run_files(Path(run_dir))


def remove_run_temps(run_dir: Path) -> None:
    """Remove temporary files of interrupted writes of run files (any writer, any host: the
    caller holds the run lock, so none of them is still writing)."""
    stray = [p for name in RUN_FILES for p in run_dir.glob(f".{name}.*.tmp") if p.is_file()]
    remove_temps(stray, run_dir)


def clear_run_files(run_dir: Path) -> None:
    """Remove what an earlier run wrote into `run_dir` (`--overwrite`); other files stay."""
    removed = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        log.warning(
            "--overwrite: removed the earlier run's %s from %s", ", ".join(removed), run_dir
        )


def refuse_everywhere(error: RunDirError | None) -> None:
    """Raise the main process's refusal `error` (None where there is none, as on the other
    processes) on every process, the others as a RunDirError with its message; a collective."""
    from map3d.engine.distributed import broadcast_object

    message = broadcast_object(None if error is None else str(error))
    if message is not None:
        raise error or RunDirError(message)


class RunLock:
    """`<run_dir>/.lock` while this process writes the run (`with RunLock(run_dir): ...`).

    The lock holds `pid host slurm_job_id`. Creates `run_dir`. Raises `RunDirError` if another
    live process holds the lock; a lock left by a dead process on this host (a killed run) or by
    an earlier incarnation of this Slurm job (requeued after a node failure) is taken over with
    a warning.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self.job = os.environ.get("SLURM_JOB_ID", "-")
        self.owner = f"{os.getpid()} {socket.gethostname()} {self.job}"
        self.held = False

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            self.held = True
            return self
        raise RunDirError(f"{self.path.parent}: could not take the run lock {self.path}")

    def _take_over_stale(self) -> None:
        try:
            pid_text, host, job = ([*self.path.read_text().split(), "", "", ""])[:3]
        except FileNotFoundError:
            return  # released meanwhile
        pid = int(pid_text) if pid_text.isdigit() else -1
        here = host == socket.gethostname()
        requeued = not here and self.job != "-" and job == self.job
        if not (here and not pid_alive(pid)) and not requeued:
            raise RunDirError(
                f"{self.path.parent} is in use by another run (pid {pid_text} on {host}): wait "
                f"for it to finish or choose another --out (a stale {self.path} can be deleted)"
            )
        log.warning(
            "%s: taking over the lock of a run that died (pid %s on %s)",
            self.path.parent,
            pid_text,
            host,
        )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __exit__(self, *exc) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False


class RunLogHandler(logging.Handler):
    """Log records go to `path` (train.log) once `open()` is called; until then they are held
    in memory (and dropped if the run never starts)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self._held: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None

    def open(self) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(self.path)
        self._file.setFormatter(self.formatter)
        for record in self._held:
            self._file.emit(record)
        self._held.clear()

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is not None:
            self._file.emit(record)
        else:
            self._held.append(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def open_run_logs() -> None:
    """The run starts for real: every `RunLogHandler` of the map3d logger writes its file."""
    for handler in logging.getLogger("map3d").handlers:
        if isinstance(handler, RunLogHandler):
            handler.open()
