"""Shared test settings: GPU tests are marked `gpu` and skipped with a reason on CPU; shared
fixtures."""

import os

import pytest
import torch

# Training on CUDA compiles the backbone blocks, the patch embedding and LNP's pooling
# (train.compile=auto), tens of seconds per run: the GPU tests run them eagerly unless a test
# asks for the compiled forms (tests/models/test_compile.py, the compiled-LNP and compiled-step
# tests).
os.environ.setdefault("MAP3D_COMPILE", "0")


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


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A smoke pretraining run directory (last.pt, encoder.safetensors), made once per session;
    for tests that only read it."""
    from map3d.cli import main

    out = tmp_path_factory.mktemp("pre")
    assert main(["pretrain", "--config", "configs/smoke/pretrain.yaml", "--out", str(out)]) == 0
    return out
