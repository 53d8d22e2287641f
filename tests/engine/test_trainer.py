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

    key, x = batch_input({"points": torch.zeros(2, 5, 3), "label": [0, 1]}, torch.device("meta"))
    assert key == "points" and x.device.type == "meta"
