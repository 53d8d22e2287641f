"""train.label_smoothing: the classification and part-segmentation losses follow
F.cross_entropy(label_smoothing=)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from map3d.engine.config import ExperimentConfig, apply_overrides
from map3d.engine.tasks import TaskContext, get_task


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x, *args):
        return self.logits


def _step(task_name, logits, batch, smoothing, npoints=1024):
    cfg = apply_overrides(
        ExperimentConfig(), [f"train.label_smoothing={smoothing}", f"data.npoints={npoints}"]
    )
    g = torch.Generator().manual_seed(0)
    ctx = TaskContext(cfg=cfg, device=torch.device("cpu"), generator=g, model_generator=g)
    loss, _ = get_task(task_name).training_step(FixedLogits(logits), batch, ctx)
    return loss


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_classification_loss_follows_cross_entropy(smoothing):
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    batch = {"image": torch.zeros(6, 3, 4, 4), "label": labels}
    loss = _step("classify", logits, batch, smoothing)
    assert loss.item() == pytest.approx(
        F.cross_entropy(logits, labels, label_smoothing=smoothing).item(), rel=1e-6
    )
    if smoothing > 0:
        assert loss.item() != pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-4)


def test_partseg_loss_follows_cross_entropy():
    logits = torch.randn(2, 16, 4, generator=torch.Generator().manual_seed(2))  # (B,N,parts)
    seg = torch.randint(0, 4, (2, 16), generator=torch.Generator().manual_seed(3))
    batch = {"points": torch.randn(2, 16, 3), "category": torch.tensor([0, 1]), "seg": seg}
    loss = _step("partseg", logits, batch, 0.2, npoints=16)
    expected = F.cross_entropy(logits.transpose(1, 2), seg, label_smoothing=0.2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_label_smoothing_range_checked():
    with pytest.raises(ValueError, match="train.label_smoothing"):
        _step(
            "classify",
            torch.zeros(1, 2),
            {"image": torch.zeros(1, 3, 4, 4), "label": torch.tensor([0])},
            1.0,
        )
