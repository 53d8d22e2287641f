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


def test_checkpoint_tensors_are_staged_before_the_step_s_reads(tmp_path, monkeypatch):
    """At a step that writes a checkpoint, its weights' host copies are enqueued before the
    logging window's read waits for the device (the copies' enqueueing overlaps its work)."""
    from map3d.engine.config import apply_overrides, load_config
    from map3d.engine.metrics import RunningMean
    from map3d.engine.runs import train
    from map3d.engine.trainer import Trainer

    events = []
    stage, compute = Trainer.stage_checkpoint, RunningMean.compute

    def staged(self):
        events.append(("stage", self.step))
        stage(self)

    def read(self, reduce=True):
        events.append(("read",))
        return compute(self, reduce)

    monkeypatch.setattr(Trainer, "stage_checkpoint", staged)
    monkeypatch.setattr(RunningMean, "compute", read)
    cfg = apply_overrides(load_config("configs/smoke/pretrain.yaml"), ["schedule.epochs=3"])
    train(cfg, tmp_path / "run")  # 2 steps per epoch, a record every step
    stages = [i for i, event in enumerate(events) if event[0] == "stage"]
    assert [events[i][1] for i in stages] == [2, 4, 6]  # the epoch ends
    assert all(events[i + 1] == ("read",) for i in stages)
