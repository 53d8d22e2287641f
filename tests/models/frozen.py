"""Frozen models: tiny models of every modality and task, written down once as (key, shape,
dtype) lists, inputs and outputs, so that a later layout of `map3d.models` can be checked
against them: same state-dict keys, same outputs for the same weights.

The weights are not stored (the mini-PointNet alone is ~1 MB): `weights` derives them from the
key order by a closed formula, the same on every machine and torch version. `FILE` was written
by `python -m tests.models.frozen` with map3d 0.1.0 before `map3d.models` was split into a core
and one wing per modality; never regenerate it to make a failing test pass.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

FILE = Path(__file__).parent / "fixtures" / "frozen_models_0.1.0.pt"

# (name, preset, task, overrides): small token counts keep each case cheap on CPU.
CASES = [
    ("points_pretrain", "hybridmt3d_tiny", "pretrain",
     {"num_groups": 16, "group_size": 8, "num_regions": 4}),
    ("points_pretrain_release", "mamba3d_tiny", "pretrain",
     {"num_groups": 16, "group_size": 8, "compat": "mamba3d"}),
    ("points_classify", "hybridmt3d_tiny", "classify",
     {"num_groups": 16, "group_size": 8, "num_classes": 5}),
    ("points_classify_pointmae", "pointmae_tiny", "classify",
     {"num_groups": 16, "group_size": 8, "num_classes": 5, "compat": "pointmae"}),
    ("points_partseg", "hybridmt3d_tiny", "partseg",
     {"num_groups": 16, "group_size": 8, "num_categories": 3, "num_parts": 6}),
    ("images_pretrain", "map_nano_patch4_16", "pretrain", {}),
    ("images_classify", "map_nano_patch4_16", "classify", {"num_classes": 4}),
]  # fmt: skip


def weights(keys: list[tuple[str, tuple[int, ...], str]]) -> dict[str, torch.Tensor]:
    """A state dict for `keys` ((name, shape, dtype) in state-dict order): float tensors are
    0.2 sin(0.61 t + 1.3 i) over their flattened index t (i: the key's position), BatchNorm
    running variances 0.5 + |that|, integer buffers zero."""
    state = {}
    for i, (key, shape, dtype) in enumerate(keys):
        kind = getattr(torch, dtype)
        numel = math.prod(shape)
        if not kind.is_floating_point:
            state[key] = torch.zeros(shape, dtype=kind)
            continue
        t = torch.arange(numel, dtype=torch.float64)
        value = 0.2 * torch.sin(0.61 * t + 1.3 * i)
        if key.endswith("running_var"):
            value = 0.5 + value.abs()
        state[key] = value.reshape(shape).to(kind)
    return state


def key_list(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [
        (k, tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in model.state_dict().items()
    ]


def inputs(preset: str, task: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    if preset.startswith("map_"):
        return {"x": torch.rand(2, 3, 16, 16, generator=gen)}
    out = {"x": torch.rand(2, 96, 3, generator=gen) * 2 - 1}
    if task == "partseg":
        out["category"] = torch.tensor([0, 2])
    return out


@torch.no_grad()
def outputs(model: torch.nn.Module, task: str, data: dict[str, torch.Tensor]) -> dict:
    """Everything the model computes from `data` in eval mode, as plain tensors."""
    model.eval()
    x = data["x"]
    if task == "pretrain":
        out = model(x, generator=torch.Generator().manual_seed(3))
        rec = model.reconstruct(x, generator=torch.Generator().manual_seed(3))
        fields = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
        return {
            "per_sample_loss": out.per_sample_loss,
            **{f"rec.{k}": v for k, v in fields.items() if isinstance(v, torch.Tensor)},
        }
    if task == "partseg":
        return {"logits": model(x, data["category"], generator=torch.Generator().manual_seed(3))}
    if x.dim() == 4:  # images
        return {"logits": model(x)}
    return {"logits": model(x, generator=torch.Generator().manual_seed(3))}


def build(preset: str, task: str, overrides: dict) -> torch.nn.Module:
    from map3d.models import create_model

    return create_model(preset, task=task, **overrides)


def write(path: Path = FILE) -> None:
    cases = {}
    for name, preset, task, overrides in CASES:
        model = build(preset, task, overrides)
        keys = key_list(model)
        model.load_state_dict(weights(keys))
        data = inputs(preset, task)
        result = outputs(model, task, data)
        for k, v in result.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise RuntimeError(f"{name}: {k} is not finite")
        cases[name] = {"preset": preset, "task": task, "overrides": overrides, "keys": keys,
                       "inputs": data, "outputs": result}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"map3d_version": "0.1.0", "cases": cases}, path)


if __name__ == "__main__":
    write()
    print(f"wrote {FILE} ({FILE.stat().st_size} bytes)")
