import pytest
import torch

import map3d
from map3d.models import PretrainedWeightsError, load_pretrained

from .conftest import SMALL


def test_pretrained_encoder_loads_into_classifier(tiny_pretrainer, points, tmp_path):
    classifier = map3d.create_model("hybridmt3d_tiny", task="classify", **SMALL)
    state = tiny_pretrainer.state_dict()
    missing, unexpected = load_pretrained(classifier, state)
    assert missing == [] and unexpected == []
    for key, value in classifier.state_dict().items():
        if key.startswith("encoder."):
            assert torch.equal(value, state[key]), key
    # a checkpoint file holding {"model": ...}, with a DDP prefix
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "step": 3}, path)
    assert load_pretrained(classifier, str(path)) == ([], [])
    assert classifier(points).shape == (2, 40)


def test_load_pretrained_reports_missing_and_unexpected(tiny_pretrainer):
    classifier = map3d.create_model("hybridmt3d_tiny", task="classify", **SMALL)
    state = dict(tiny_pretrainer.state_dict())
    state.pop("encoder.backbone.norm.weight")
    state["encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(PretrainedWeightsError, match="1 missing .first: encoder.backbone.norm"):
        load_pretrained(classifier, state)
    missing, unexpected = load_pretrained(classifier, state, allow_partial=True)
    assert missing == ["encoder.backbone.norm.weight"]
    assert unexpected == ["encoder.extra.weight"]


def test_load_pretrained_errors(tiny_pretrainer, tmp_path):
    bigger = map3d.create_model("hybridmt3d_tiny", task="classify", dim=64, **SMALL)
    with pytest.raises(ValueError, match="shape mismatch for encoder"):
        load_pretrained(bigger, tiny_pretrainer.state_dict())
    with pytest.raises(FileNotFoundError):
        load_pretrained(bigger, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="prefix"):
        load_pretrained(bigger, {"head.weight": torch.zeros(1)})


def test_head_matches_mamba3d(points):
    model = map3d.create_model("mamba3d_tiny", task="classify", num_classes=5, **SMALL)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 256), (256, 256), (256, 5)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.head) == 2
    assert all(m.p == 0.5 for m in model.head if isinstance(m, torch.nn.Dropout))
    model.eval()
    assert torch.allclose(model(points)[1:], model(points[1:]), atol=1e-5)  # per-sample


def test_bad_input():
    model = map3d.create_model("pointmae_tiny", task="classify", **SMALL)
    with pytest.raises(ValueError, match="fewer than"):
        model(torch.rand(2, 10, 3))
    with pytest.raises(ValueError, match=r"\(B,N,3\)"):
        model(torch.rand(128, 3))
