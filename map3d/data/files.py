"""Checked file access for the loaders: every failure names the file and what was expected."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from map3d.data.errors import DatasetFormatError


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path; FileNotFoundError saying which folder is expected if it is missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} folder not found (see data/README.md)")
    return path


def require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found (see data/README.md)")
    return path


def read_lines(path: str | os.PathLike, what: str) -> list[tuple[int, str]]:
    """Non-empty stripped lines of a text list file with their 1-based line numbers."""
    path = require_file(path, what)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetFormatError(path, f"unreadable {what}: {error}") from None
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_split_list(
    path: str | os.PathLike, what: str, *, allow_empty: bool = False
) -> list[tuple[int, str]]:
    """`read_lines` of a split list, which must name at least one shape (unless `allow_empty`,
    for one list of a split made of several), each shape once.

    An empty list or a repeated entry (it would silently weigh that shape double) is a
    DatasetFormatError naming the file and the lines.
    """
    lines = read_lines(path, what)
    if not lines and not allow_empty:
        raise DatasetFormatError(path, f"empty {what}: no entries")
    check_unique(path, [(f"line {number}", entry) for number, entry in lines])
    return lines


def check_unique(path: str | os.PathLike, entries: list[tuple[str, str]]) -> None:
    """Refuse the first entry listed twice; `entries` are (where, entry) pairs, in file order."""
    first: dict[str, str] = {}
    for where, entry in entries:
        if entry in first:
            raise DatasetFormatError(
                path, f"{entry!r} is listed twice ({first[entry]} and {where}); each shape may "
                "appear once (a repeat would weigh it double)", where,
            )  # fmt: skip
        first[entry] = where


def _npy_data_bytes(path: Path) -> tuple[tuple[int, ...], int, int]:
    """(shape, bytes the header's shape and dtype need, bytes the file holds after the header)."""
    from numpy.lib import format as npy_format

    with open(path, "rb") as f:
        version = npy_format.read_magic(f)
        read_header = (
            npy_format.read_array_header_1_0 if version == (1, 0)
            else npy_format.read_array_header_2_0
        )  # fmt: skip
        shape, _, dtype = read_header(f)
        return shape, math.prod(shape) * dtype.itemsize, path.stat().st_size - f.tell()


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """np.load without pickles; missing -> FileNotFoundError, damaged -> DatasetFormatError.

    The header's shape is checked against the file's size before the array is allocated (a
    small file cannot ask for a large array)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: point file not found")
    try:
        shape, needed, held = _npy_data_bytes(path)
        if needed > held:
            raise DatasetFormatError(
                path, f"truncated .npy: its header promises shape {shape} ({needed:,} bytes), "
                f"the file holds {held:,}; refused before allocating",
            )  # fmt: skip
        return np.load(path, allow_pickle=False)
    except DatasetFormatError:
        raise
    except (ValueError, OSError, EOFError) as error:
        raise DatasetFormatError(
            path, f"unreadable .npy (truncated or not a numpy array file): {error}"
        ) from None


def load_txt(path: str | os.PathLike, *, delimiter: str | None, columns: int) -> np.ndarray:
    """Read a float text table with exactly `columns` values per line -> (M, columns) float32.

    A malformed line raises DatasetFormatError naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: point file not found")
    try:
        data = np.loadtxt(path, delimiter=delimiter, dtype=np.float32, ndmin=2)
    except ValueError as error:
        raise DatasetFormatError(
            path,
            f"expected {columns} numbers per line ({_first_bad_line(path, delimiter, columns)}): {error}",
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetFormatError(path, f"unreadable text file: {error}") from None
    if data.size == 0:
        raise DatasetFormatError(path, f"empty file; expected lines of {columns} numbers")
    if data.shape[1] != columns:
        raise DatasetFormatError(path, f"expected {columns} numbers per line, got {data.shape[1]}")
    return data


def _first_bad_line(path: Path, delimiter: str | None, columns: int) -> str:
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            fields = line.strip().split(delimiter)
            if not line.strip():
                continue
            try:
                [float(v) for v in fields]
            except ValueError:
                return f"line {number} is not numeric"
            if len(fields) != columns:
                return f"line {number} has {len(fields)} values"
    return "no single bad line found"
