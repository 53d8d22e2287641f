"""Shared test settings: GPU tests are marked `gpu` and skipped with a reason on CPU."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; run on a GPU machine with `pytest -m gpu`")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def generator():
    """A seeded CPU generator for reproducible random inputs."""
    return torch.Generator().manual_seed(0)
