"""Run observability: metrics.jsonl (one JSON object per line), optional TensorBoard, progress.

Progress of long loops (`Progress`): a tqdm bar when stderr is a terminal, periodic log lines when
it is not (a batch job's log file); log records go through `TqdmLoggingHandler`, which writes
above an active bar instead of through it.

Only the main process writes; other ranks get a `MetricsWriter(None)` that drops everything.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from map3d.atomic import atomic_write
from map3d.errors import MissingDependencyError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Without a terminal, `track` logs a progress line at most this often (seconds).
LOG_EVERY_S = 30.0


class TqdmLoggingHandler(logging.StreamHandler):
    """A stream handler whose lines do not collide with tqdm bars (`tqdm.write`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            super().emit(record)
            return
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def echo(text: str) -> None:
    """`print(text)` to stdout that does not collide with a progress bar (`tqdm.write`)."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(text, flush=True)
        return
    tqdm.write(text)
    sys.stdout.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Progress(Iterable[T]):
    """`iterable` with progress: a tqdm bar when stderr is a terminal, otherwise an INFO line
    `desc: i/total (p%), rate, ETA` at most every `LOG_EVERY_S` seconds and one at the end.
    `enabled=False` (e.g. on non-main processes) shows nothing. Other attributes are the
    wrapped iterable's (a DataLoader's `dataset` stays reachable)."""

    def __init__(
        self,
        iterable: Iterable[T],
        *,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        enabled: bool = True,
    ):
        self.iterable, self.desc, self.unit, self.enabled = iterable, desc, unit, enabled
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total

    def __len__(self) -> int:
        return len(self.iterable)

    def __getattr__(self, name: str) -> Any:
        if name == "iterable":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.iterable, name)

    def __iter__(self) -> Iterator[T]:
        if not self.enabled:
            yield from self.iterable
            return
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                yield from tqdm(
                    self.iterable,
                    total=self.total,
                    desc=self.desc,
                    unit=self.unit,
                    dynamic_ncols=True,
                    leave=False,
                )
                return
        start = last = time.monotonic()
        count = 0
        for count, item in enumerate(self.iterable, 1):
            yield item
            now = time.monotonic()
            if now - last >= LOG_EVERY_S:
                last = now
                log.info("%s", self._line(count, now - start))
        log.info("%s", self._line(count, time.monotonic() - start))

    def _line(self, count: int, elapsed: float) -> str:
        return _progress_line(self.desc, count, self.total, self.unit, elapsed)


def _progress_line(desc: str, count: int, total: int | None, unit: str, elapsed: float) -> str:
    rate = count / elapsed if elapsed > 0 else 0.0
    if total is None:
        return f"{desc}: {count} {unit}, {_duration(elapsed)}, {rate:.1f} {unit}/s"
    line = f"{desc}: {count}/{total} {unit} ({100 * count / max(total, 1):.0f}%)"
    if count >= total:
        return f"{line}, done in {_duration(elapsed)}"
    eta = _duration((total - count) / rate) if rate > 0 else "?"
    return f"{line}, {rate:.1f} {unit}/s, ETA {eta}"


class MetricsWriter:
    """Appends records to `<run_dir>/metrics.jsonl` and, if asked, scalars to TensorBoard."""

    def __init__(self, run_dir: str | Path | None, *, tensorboard: bool = False):
        self.path = Path(run_dir) / "metrics.jsonl" if run_dir is not None else None
        self._tb = self._tb_dir = None
        if run_dir is not None and tensorboard:
            try:
                import torch.utils.tensorboard  # noqa: F401
            except ImportError as err:  # tensorboard is an optional dependency
                raise MissingDependencyError(
                    "output.tensorboard=true needs the tensorboard package: pip install tensorboard"
                ) from err
            self._tb_dir = Path(run_dir) / "tensorboard"  # created at the first record

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """One record `{"kind", "step", "time", **values}`; numbers also go to TensorBoard."""
        if self.path is None:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb_dir is not None and self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self._tb_dir))
        if self._tb is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{name}", value, step)

    def truncate_after(self, step: int) -> None:
        """Drop records logged after `step` (a resumed run redoes that work) and a torn last
        line (a crash or a full disk during an append)."""
        if self.path is None or not self.path.exists():
            return
        kept = [json.dumps(r) for r in _parse(self.path) if r.get("step", 0) <= step]
        with atomic_write(self.path, "w") as f:
            f.write("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _parse(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a torn last line is dropped with a warning."""
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for i, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i != lines[-1][0]:
                raise ValueError(f"{path}: line {i} is not a JSON record ({err})") from None
            log.warning("%s: dropped a torn last line %d (an interrupted append)", path, i)
    return records


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict]:
    """Records of a metrics.jsonl (optionally only one `kind`)."""
    return [r for r in _parse(Path(path)) if kind is None or r["kind"] == kind]


def progress_bar(total: int, initial: int, *, enabled: bool, desc: str):
    """A tqdm bar over optimizer steps, or a silent stand-in when disabled or not a terminal."""
    show = enabled and sys.stderr.isatty()
    if show:
        try:
            from tqdm import tqdm
        except ImportError:
            log.warning("tqdm is not installed; no progress bar (pip install tqdm)")
            show = False
    if not show:
        return _NoBar()
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, unit="step")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
