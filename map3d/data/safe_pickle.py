"""Restricted unpickling for data files (ModelNet `.dat` caches, few-shot `.pkl` splits).

A pickle can call any importable function while it loads. Data files only ever need containers
(list, tuple, dict: native pickle opcodes, no globals), Python scalars and strings (native too),
and numpy arrays, scalars and dtypes, which reach these globals:

- `numpy.ndarray`, `numpy.dtype`;
- `numpy.core.multiarray._reconstruct` / `numpy._core.multiarray._reconstruct` (arrays, protocols
  0-4; numpy 1.x / 2.x module paths);
- `numpy.core.multiarray.scalar` / `numpy._core.multiarray.scalar` (numpy scalars);
- `numpy.core.numeric._frombuffer` / `numpy._core.numeric._frombuffer` (arrays, protocol 5);
- `_codecs.encode` (how protocol 2 stores the bytes of an array).

Anything else is refused before it is imported, with `UnsafePickleError` naming the file and the
global. Allowed names resolve to this numpy's own objects, so numpy 1.x pickles load under
numpy 2.x and back.

Sizes are checked before anything is allocated. Every array's content comes from the file's
bytes, so the arrays of a pickle may not add up to more than the file: each array, however it
is built (`_reconstruct`, `ndarray(...)`, `__setstate__`, `_frombuffer`), must fit its `shape
product x itemsize` in the bytes the file has left to give (file size + 1 MiB for all arrays
together), and its raw buffer must be exactly that size. Dtypes are limited to plain numbers
and strings (no object, structured or sub-array dtypes), and one array may not appear twice (a
memo reference would be normalized, hence copied, once per use). Such a pickle raises
`DatasetFormatError` naming the file, never `MemoryError`.
"""

from __future__ import annotations

import codecs
import math
import os
import pickle
from typing import Any

import numpy as np

from map3d.data.errors import DatasetFormatError, UnsafePickleError

SLACK_BYTES = 1 << 20  # headroom over the file size for all the arrays of one pickle
PLAIN_KINDS = "biufcSU"  # bool, integers, floats, complex, bytes and str
MAX_DEPTH = 16  # containers nested deeper than this are not a data file


def _numpy_core():
    try:
        import numpy._core as core  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy import core
    return core


class _Budget:
    """The array bytes a pickle file may still produce; refuses before an allocation."""

    def __init__(self, path: str):
        self.path = path
        self.file_size = os.path.getsize(path)
        self.left = self.file_size + SLACK_BYTES
        self.array = _guarded_array(self)

    def dtype(self, dtype) -> np.dtype:
        dtype = np.dtype(dtype)
        if dtype.hasobject or dtype.kind not in PLAIN_KINDS or dtype.subdtype or dtype.fields:
            raise DatasetFormatError(
                self.path, f"refused array dtype {dtype!r}: data arrays hold plain numbers"
            )
        return np.dtype(dtype.str)  # a fresh canonical dtype, whatever its pickled state said

    def take(self, shape, dtype) -> tuple[tuple[int, ...], np.dtype]:
        """Check `shape` x `dtype` against the bytes left and spend them; returns both cleaned."""
        dtype = self.dtype(dtype)
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        if not isinstance(shape, (tuple, list)) or not all(
            isinstance(n, (int, np.integer)) and n >= 0 for n in shape
        ):
            raise DatasetFormatError(self.path, f"refused array shape {shape!r}")
        shape = tuple(int(n) for n in shape)
        size = math.prod(shape) * dtype.itemsize
        if size > self.left:
            raise DatasetFormatError(
                self.path,
                f"an array of shape {shape} {dtype} needs {size:,} bytes, more than this "
                f"{self.file_size:,}-byte file can hold ({self.left:,} bytes left); refused "
                "before allocating",
            )
        self.left -= size
        return shape, dtype

    def reconstruct(self, subtype, shape, dtype):
        if subtype not in (np.ndarray, self.array):
            raise DatasetFormatError(self.path, f"refused array subtype {subtype!r}")
        return self.array(shape, dtype)

    def scalar(self, dtype, *data):
        return _numpy_core().multiarray.scalar(self.dtype(dtype), *data)

    def frombuffer(self, buffer, dtype, shape, order):
        shape, dtype = self.take(shape, dtype)
        if memoryview(buffer).nbytes != math.prod(shape) * dtype.itemsize:
            raise DatasetFormatError(self.path, f"array buffer does not fit shape {shape} {dtype}")
        return _numpy_core().numeric._frombuffer(buffer, dtype, shape, order)

    def new_dtype(self, *args):
        return self.dtype(np.dtype(*args))


def _guarded_array(budget: _Budget) -> type:
    """An ndarray subclass whose construction and `__setstate__` spend from `budget`."""

    class GuardedArray(np.ndarray):
        def __new__(cls, shape, dtype=float, *args, **kwargs):
            if args or kwargs:
                raise DatasetFormatError(budget.path, "refused ndarray(...) with a buffer")
            shape, dtype = budget.take(shape, dtype)
            return super().__new__(cls, shape, dtype)

        def __setstate__(self, state):
            version, (shape, dtype, fortran, raw) = (
                (state[0], state[1:]) if len(state) == 5 else (1, state)
            )
            if not isinstance(raw, (bytes, bytearray)):
                raise DatasetFormatError(
                    budget.path, f"refused array data of type {type(raw).__name__}"
                )
            shape, dtype = budget.take(shape, dtype)
            if len(raw) != math.prod(shape) * dtype.itemsize:
                raise DatasetFormatError(
                    budget.path, f"array of shape {shape} {dtype} with {len(raw):,} data bytes"
                )
            super().__setstate__((version, shape, dtype, fortran, raw))

    return GuardedArray


def _allowed(module: str, name: str, budget: _Budget):
    for prefix in ("numpy.core", "numpy._core"):
        if (module, name) == (f"{prefix}.multiarray", "_reconstruct"):
            return budget.reconstruct
        if (module, name) == (f"{prefix}.multiarray", "scalar"):
            return budget.scalar
        if (module, name) == (f"{prefix}.numeric", "_frombuffer"):
            return budget.frombuffer
    return {
        ("numpy", "ndarray"): budget.array,
        ("numpy", "dtype"): budget.new_dtype,
        ("_codecs", "encode"): codecs.encode,
    }.get((module, name))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, budget: _Budget):
        super().__init__(file)
        self.budget = budget

    def find_class(self, module: str, name: str):
        found = _allowed(module, name, self.budget)
        if found is None:
            raise UnsafePickleError(
                self.budget.path,
                f"refused global {module}.{name}: data pickles may hold only lists, tuples, dicts, "
                "numpy arrays/scalars/dtypes and Python scalars",
            )
        return found


def _plain(obj, path: str, seen: set[int], depth: int = 0):
    """`obj` with guarded arrays viewed as plain ndarrays; refuses shared arrays, deep nests."""
    if depth > MAX_DEPTH:
        raise DatasetFormatError(path, f"containers nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, np.ndarray):
        if id(obj) in seen:
            raise DatasetFormatError(path, "the same array appears twice (a memo reference)")
        seen.add(id(obj))
        return obj.view(np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(item, path, seen, depth + 1) for item in obj)
    if isinstance(obj, dict):
        return {key: _plain(value, path, seen, depth + 1) for key, value in obj.items()}
    return obj


def load_pickle(path: str | os.PathLike) -> Any:
    """Load a data pickle with the restricted unpickler (see module docstring).

    Raises FileNotFoundError if absent, `UnsafePickleError` for a refused global, and
    `DatasetFormatError` for a truncated or corrupt file or arrays beyond the size limits.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: pickle file not found")
    budget = _Budget(path)
    with open(path, "rb") as f:
        try:
            data = _RestrictedUnpickler(f, budget).load()
        except DatasetFormatError:
            raise
        except (
            pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            MemoryError, RecursionError,
        ) as error:  # fmt: skip
            raise DatasetFormatError(
                path, f"unreadable pickle (truncated or corrupt): {type(error).__name__}: {error}"
            ) from None
    return _plain(data, path, set())
