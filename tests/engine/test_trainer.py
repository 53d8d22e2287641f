"""Trainer settings around the hot path."""

import torch


def test_ops_nan_checks_are_skipped_only_while_training_on_cuda():
    from map3d import ops
    from map3d.engine.trainer import ops_nan_checks_for

    assert ops.set_nan_checks(True) is True
    with ops_nan_checks_for(torch.device("cpu")):
        assert ops.set_nan_checks(True) is True
    with ops_nan_checks_for(torch.device("cuda")):
        assert ops.set_nan_checks(False) is False
    assert ops.set_nan_checks(True) is True


def test_batch_input_moves_the_model_input_to_the_device():
    from map3d.engine.tasks import batch_input

    inputs, x = batch_input({"points": torch.zeros(2, 5, 3), "label": [0, 1]}, torch.device("meta"))
    assert inputs.key == "points" and x.device.type == "meta"


def test_tasks_do_not_branch_on_the_modality():
    """Each modality's batch-time views live in `map3d.engine.inputs`; no task or viz module
    tests which batch key it was given."""
    import re
    from pathlib import Path

    import map3d.engine.tasks
    import map3d.viz

    for package in (map3d.engine.tasks, map3d.viz):
        for path in Path(package.__file__).parent.glob("*.py"):
            found = re.findall(r"key\s*[!=]=\s*[\"'](points|image)", path.read_text())
            assert not found, (path.name, found)


def test_image_inputs_are_used_as_they_are_and_the_single_pass_is_their_vote():
    from map3d.engine.config import default_config
    from map3d.engine.inputs import INPUTS

    cfg, image = default_config("classify"), torch.randn(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    inputs = INPUTS["image"]
    assert inputs.train(image, cfg, g) is image and inputs.evaluate(image, cfg) is image
    assert inputs.pretrain(image, cfg, g, train=True) is image
    assert inputs.votes(image, cfg, g) is None
