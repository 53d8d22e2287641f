"""Errors raised by the dataset loaders: each names the file (and line or key) and the problem."""

from __future__ import annotations

import os

from map3d.errors import UserError


class DatasetFormatError(UserError, ValueError):
    """A dataset file exists but its content is not what the layout promises.

    `path` is the offending file, `where` an optional line number / key / sample index, and
    `problem` what was expected and what was found. A single argument is taken as the whole
    message: that is how a DataLoader worker's error is re-raised in the main process.
    """

    def __init__(
        self, path: str | os.PathLike, problem: str | None = None, where: str | None = None
    ):
        self.path = os.fspath(path)
        self.where = where
        self.problem = problem
        if problem is None:
            super().__init__(self.path)
            return
        location = self.path if where is None else f"{self.path} ({where})"
        super().__init__(f"{location}: {problem}")


class UnsafePickleError(DatasetFormatError):
    """A pickle asked for a global outside the allow-list (it could run code); nothing was run."""
