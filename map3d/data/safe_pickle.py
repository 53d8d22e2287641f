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
"""

from __future__ import annotations

import codecs
import os
import pickle
from typing import Any

import numpy as np

from map3d.data.errors import DatasetFormatError, UnsafePickleError


def _numpy_core():
    try:
        import numpy._core as core  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy import core
    return core


def _allowed(module: str, name: str):
    core = _numpy_core()
    for prefix in ("numpy.core", "numpy._core"):
        if (module, name) == (f"{prefix}.multiarray", "_reconstruct"):
            return core.multiarray._reconstruct
        if (module, name) == (f"{prefix}.multiarray", "scalar"):
            return core.multiarray.scalar
        if (module, name) == (f"{prefix}.numeric", "_frombuffer"):
            return core.numeric._frombuffer
    return {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }.get((module, name))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        found = _allowed(module, name)
        if found is None:
            raise UnsafePickleError(
                self.path,
                f"refused global {module}.{name}: data pickles may hold only lists, tuples, dicts, "
                "numpy arrays/scalars/dtypes and Python scalars",
            )
        return found


def load_pickle(path: str | os.PathLike) -> Any:
    """Load a data pickle with the restricted unpickler (see module docstring).

    Raises FileNotFoundError if absent, `UnsafePickleError` for a refused global, and
    `DatasetFormatError` for a truncated or corrupt file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: pickle file not found")
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
            raise DatasetFormatError(
                path, f"unreadable pickle (truncated or corrupt): {type(error).__name__}: {error}"
            ) from None
