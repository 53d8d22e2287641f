"""Fixtures of the op tests."""

import pytest

from map3d.ops import dispatch


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the backend registry, restored afterwards; MAP3D_BACKEND unset."""
    dispatch._load_backends()
    saved = {op: dict(backends) for op, backends in dispatch._REGISTRY.items()}
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    yield dispatch._REGISTRY
    dispatch._REGISTRY.clear()
    dispatch._REGISTRY.update(saved)
    for op in dispatch.OPS:
        dispatch._sort(op)
    dispatch.refresh()
