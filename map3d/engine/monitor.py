"""Run observability: metrics.jsonl (one JSON object per line), optional TensorBoard, progress bar.

Only the main process writes; other ranks get a `MetricsWriter(None)` that drops everything.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from map3d.atomic import atomic_write
from map3d.errors import MissingDependencyError

log = logging.getLogger(__name__)


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
