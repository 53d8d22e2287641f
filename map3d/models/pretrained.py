"""Prefix-aware loading of pretrained weights into a task model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from map3d.errors import UserError, torch_load_reason
from map3d.models.compat import RELEASES, detect_release
from map3d.models.release import convert_release_state_dict, release_pattern

log = logging.getLogger(__name__)

_NESTED_KEYS = ("model", "state_dict", "base_model")


class PretrainedWeightsError(UserError, ValueError):
    """Pretrained weights that do not fit the model: unreadable, too few matching tensors, or a
    tensor of the wrong shape or dtype. The message names the weights' file and the key."""


def _state_dict_from(source: Mapping | str | os.PathLike) -> Mapping[str, Tensor]:
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"pretrained checkpoint not found: {source}")
        try:
            source = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated zip, foreign pickle, ...
            raise PretrainedWeightsError(
                f"{os.fspath(source)}: not a readable checkpoint ({torch_load_reason(err)})"
            ) from err
    if not isinstance(source, Mapping):
        raise TypeError(f"expected a state dict or a checkpoint dict, got {type(source).__name__}")
    for key in _NESTED_KEYS:
        if key in source and isinstance(source[key], Mapping):
            return source[key]
    return source


def _first(keys: list[str]) -> str:
    return f" (first: {keys[0]})" if keys else ""


def _converted_release(model: nn.Module, state: Mapping) -> Mapping[str, Tensor]:
    """`state` with release keys converted when it is a PointMAP / Mamba3D / Point-MAE
    checkpoint (a warning when `model` was not built with its compat), else `state`."""
    name = detect_release(state)
    if name is None:
        return state
    log.info("found a %s release checkpoint; converting its keys", RELEASES[name].title)
    if getattr(getattr(model, "config", None), "compat", None) != name:
        log.warning(
            "the model was not built with compat=%r: the %s weights load into a different "
            "model (create_model(..., compat=%r) builds the release's)",
            name,
            name,
            name,
        )
    return convert_release_state_dict(state, release_pattern(state))[0]


def load_pretrained(
    model: nn.Module,
    state_dict_or_path,
    prefix: str = "encoder.",
    *,
    allow_partial: bool = False,
    source: str | os.PathLike | None = None,
) -> tuple[list[str], list[str]]:
    """Load the `prefix`-ed entries of a state dict (or checkpoint path / dict holding
    "model") into `model`'s entries with the same prefix; everything else is left alone.
    PointMAP / Mamba3D / Point-MAE release checkpoints are recognized and converted.

    A DDP "module." prefix is stripped. Logs how many of the model's tensors under `prefix`
    matched, and returns (missing, unexpected): model keys under `prefix` absent from the
    checkpoint, checkpoint keys under `prefix` the model lacks. Raises `PretrainedWeightsError`
    (a ValueError naming `source`, the path by default, and the key) when

    - some of the model's tensors under `prefix` are missing from the checkpoint, unless
      `allow_partial` (those tensors then keep their fresh initialisation);
    - a tensor's shape differs, or a floating-point weight is stored as integers (nothing is
      cast silently from integers; float precisions convert, as do integer buffers such as
      BatchNorm's `num_batches_tracked`);
    - no checkpoint key starts with `prefix`.
    """
    if source is None:
        is_path = isinstance(state_dict_or_path, (str, os.PathLike))
        source = os.fspath(state_dict_or_path) if is_path else "pretrained state dict"
    source = os.fspath(source)
    checkpoint = _state_dict_from(state_dict_or_path)
    checkpoint = {
        k.removeprefix("module."): v for k, v in _converted_release(model, checkpoint).items()
    }
    selected = {k: v for k, v in checkpoint.items() if k.startswith(prefix)}
    if not selected:
        raise PretrainedWeightsError(
            f"{source}: no checkpoint keys start with prefix {prefix!r} "
            f"({len(checkpoint)} keys{_first(sorted(checkpoint))}; set train.pretrained_prefix)"
        )
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    for key, value in selected.items():
        if key not in own:
            continue
        if not isinstance(value, Tensor):
            raise PretrainedWeightsError(
                f"{source}: {key} is a {type(value).__name__}, not a tensor"
            )
        if own[key].shape != value.shape:
            raise PretrainedWeightsError(
                f"{source}: shape mismatch for {key}: checkpoint {tuple(value.shape)}, "
                f"model {tuple(own[key].shape)}"
            )
        if own[key].is_floating_point() and not value.is_floating_point():
            raise PretrainedWeightsError(
                f"{source}: {key} is {value.dtype}, the model's is {own[key].dtype}; "
                "pretrained weights must be floating point (not cast silently)"
            )
    missing = sorted(k for k in own if k not in selected)
    unexpected = sorted(k for k in selected if k not in own)
    matched = len(own) - len(missing)
    log.info(
        "pretrained %s: %d of %d tensors under %r matched, %d missing, %d unexpected",
        source, matched, len(own), prefix, len(missing), len(unexpected),
    )  # fmt: skip
    if missing and not allow_partial:
        raise PretrainedWeightsError(
            f"{source}: only {matched} of the model's {len(own)} tensors under {prefix!r} are "
            f"in the checkpoint ({len(missing)} missing{_first(missing)}; {len(unexpected)} "
            f"unexpected{_first(unexpected)}); refusing to train them from scratch silently "
            "(--allow-partial / train.allow_partial_pretrained accepts a partial load)"
        )
    model.load_state_dict({k: v for k, v in selected.items() if k in own}, strict=False)
    if missing:
        log.warning("missing keys under %r: %s", prefix, ", ".join(missing))
    if unexpected:
        log.warning("unexpected keys under %r: %s", prefix, ", ".join(unexpected))
    return missing, unexpected
