"""Prefix-aware loading of pretrained weights into a task model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

_NESTED_KEYS = ("model", "state_dict", "base_model")


def _state_dict_from(source: Mapping | str | os.PathLike) -> Mapping[str, Tensor]:
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"pretrained checkpoint not found: {source}")
        source = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise TypeError(f"expected a state dict or a checkpoint dict, got {type(source).__name__}")
    for key in _NESTED_KEYS:
        if key in source and isinstance(source[key], Mapping):
            return source[key]
    return source


def _converted_release(model: nn.Module, state: Mapping) -> Mapping[str, Tensor]:
    """`state` with release keys converted when it is a PointMAP / Mamba3D / Point-MAE
    checkpoint (a warning when `model` was not built with its compat), else `state`."""
    from map3d.models.compat import RELEASES, detect_release
    from map3d.models.release import convert_release_state_dict, release_pattern

    name = detect_release(state)
    if name is None:
        return state
    log.info("found a %s release checkpoint; converting its keys", RELEASES[name].title)
    if getattr(getattr(model, "config", None), "compat", None) != name:
        log.warning(
            "the model was not built with compat=%r: the %s weights load into a different "
            "model (create_model(..., compat=%r) builds the release's)", name, name, name
        )
    return convert_release_state_dict(state, release_pattern(state))[0]


def load_pretrained(
    model: nn.Module,
    state_dict_or_path,
    prefix: str = "encoder.",
) -> tuple[list[str], list[str]]:
    """Load the `prefix`-ed entries of a state dict (or checkpoint path / dict holding
    "model") into `model`'s entries with the same prefix; everything else is left alone.
    PointMAP / Mamba3D / Point-MAE release checkpoints are recognized and converted.

    A DDP "module." prefix is stripped. Returns (missing, unexpected): model keys under
    `prefix` absent from the checkpoint, checkpoint keys under `prefix` the model lacks; both
    are logged. A shape mismatch raises ValueError naming the key.
    """
    source = _state_dict_from(state_dict_or_path)
    source = {k.removeprefix("module."): v for k, v in _converted_release(model, source).items()}
    selected = {k: v for k, v in source.items() if k.startswith(prefix)}
    if not selected:
        raise ValueError(f"no checkpoint keys start with prefix {prefix!r}")
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    for key, value in selected.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"shape mismatch for {key}: checkpoint {tuple(value.shape)}, "
                f"model {tuple(own[key].shape)}"
            )
    result = model.load_state_dict(selected, strict=False)
    missing = sorted(k for k in result.missing_keys if k.startswith(prefix))
    unexpected = sorted(result.unexpected_keys)
    log.info("loaded %d tensors under %r", len(selected) - len(unexpected), prefix)
    if missing:
        log.warning("missing keys under %r: %s", prefix, ", ".join(missing))
    if unexpected:
        log.warning("unexpected keys under %r: %s", prefix, ", ".join(unexpected))
    return missing, unexpected
