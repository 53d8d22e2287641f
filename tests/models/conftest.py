import pytest
import torch

import map3d

# Small token counts keep every preset cheap on CPU; R=4 divides G=16.
SMALL = {"num_groups": 16, "group_size": 8}
SMALL_PRETRAIN = {**SMALL, "num_regions": 4}


def small_overrides(task: str) -> dict:
    return dict(SMALL_PRETRAIN if task == "pretrain" else SMALL)


@pytest.fixture
def points(generator):
    """(2,128,3) random clouds."""
    return torch.rand(2, 128, 3, generator=generator)


@pytest.fixture
def tiny_pretrainer():
    torch.manual_seed(0)
    return map3d.create_model("hybridmt3d_tiny", task="pretrain", **SMALL_PRETRAIN)
