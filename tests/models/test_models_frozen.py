"""Checkpoints written by map3d 0.1.0 still load, key for key, and compute the same outputs.

`tests/models/fixtures/frozen_models_0.1.0.pt` holds, for a tiny model of every modality and
task, the state-dict keys (names, shapes, dtypes), inputs and the outputs that version computed
with the weights `frozen.weights` derives from the keys (see `tests/models/frozen.py`).
"""

import pytest
import torch

from . import frozen

FROZEN = torch.load(frozen.FILE, map_location="cpu", weights_only=True)["cases"]


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_frozen_checkpoint_loads_with_identical_outputs(name):
    case = FROZEN[name]
    model = frozen.build(case["preset"], case["task"], case["overrides"])
    keys = [(k, tuple(shape), dtype) for k, shape, dtype in case["keys"]]
    assert frozen.key_list(model) == keys, "state-dict keys, shapes or dtypes changed"
    model.load_state_dict(frozen.weights(keys), strict=True)
    result = frozen.outputs(model, case["task"], case["inputs"])
    assert result.keys() == case["outputs"].keys()
    for key, expected in case["outputs"].items():
        torch.testing.assert_close(result[key], expected, rtol=1e-4, atol=1e-5, msg=key)


def test_frozen_outputs_are_not_degenerate():
    """The derived weights give each sample its own outputs (a constant would prove nothing)."""
    for name, case in FROZEN.items():
        for key, value in case["outputs"].items():
            if value.is_floating_point() and key != "rec.centers":
                assert not torch.equal(value[0], value[1]), (name, key)
