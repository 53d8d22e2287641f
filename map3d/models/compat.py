"""Release compatibility: one switch that reproduces a public release, piece by piece.

    create_model("hybridmt3d_s", task="classify", compat="pointmap")   # Python
    compat: pointmap                                                     # experiment YAML

`compat` sets every model field in which map3d's default differs from that release (each is a
documented field of its own, listed in `RELEASES`); overrides given next to it win. The
experiment-level switch also sets the engine's release pieces (weight-decay groups, per-epoch
schedule, vote permutation) wherever the config leaves them unset (None).

Release checkpoints are recognized by their keys (`detect_release`): PointMAP stores its
Transformer blocks under `blocks.blocks_vit.*`, Mamba3D's blocks carry `lfa.*` (LNP) and Mamba
`mixer.*` keys, Point-MAE's blocks carry `attn.*` / `mlp.*` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from map3d.models.release import release_keys

DECODER_ORDERS = ("serialized", "release")
HEAD_POOLINGS = ("cls_max_mean", "cls_max", "release_exact")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """ValueError naming the field unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {choices}")


_MAMBA_RELEASE = {
    "bimamba_flip": "channel",
    "lnp_std": "batch",
    "bimamba_init": "release",
    "drop_path_schedule": "release",
}


@dataclass(frozen=True)
class Release:
    """What reproduces one release.

    preset: the map3d preset of its backbone; model: overrides for every point task; tasks:
    extra overrides per task; engine: experiment settings (`section.field` -> value).
    """

    name: str
    title: str
    preset: str
    model: dict[str, Any]
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)

    def overrides(self, task: str) -> dict[str, Any]:
        """The model overrides of this release for `task` ("pretrain", "classify", ...)."""
        return {**self.model, **self.tasks.get(task, {})}


_ENGINE = {
    "optim.weight_decay_groups": "release",
    "schedule.interval": "epoch",
    "eval.vote_permute": True,
}

RELEASES: dict[str, Release] = {
    "pointmap": Release(
        "pointmap",
        "PointMAP (yunzeliu/MAP, PointMAP/)",
        "hybridmt3d_s",
        {
            "serialization": "none",
            "fps_rule": "release",
            **_MAMBA_RELEASE,
            "attention_block": "release",
        },
        {"pretrain": {"decoder_order": "release"}, "classify": {"head_pooling": "release_exact"}},
        _ENGINE,
    ),
    "mamba3d": Release(
        "mamba3d",
        "Mamba3D (xhanxu/Mamba3D)",
        "mamba3d_s",
        {"serialization": "none", "fps_rule": "release", **_MAMBA_RELEASE},
        {
            "pretrain": {"decoder_order": "release", "num_regions": 1},
            "classify": {"head_pooling": "release_exact"},
        },
        _ENGINE,
    ),
    "pointmae": Release(
        "pointmae",
        "Point-MAE (Pang-Yatian/Point-MAE)",
        "pointmae_s",
        {"serialization": "none", "fps_rule": "release"},
        {
            "pretrain": {"decoder_order": "release", "num_regions": 1},
            "classify": {"head_pooling": "cls_max"},
        },
        _ENGINE,
    ),
}
COMPATS = tuple(RELEASES)


def get_release(compat: str) -> Release:
    """The `Release` named `compat`; ValueError listing the known ones."""
    check_choice("compat", compat, COMPATS)
    return RELEASES[compat]


def detect_release(state: Mapping) -> str | None:
    """The release a checkpoint (state dict, or a dict holding it under `base_model` / `model`)
    was saved by: "pointmap", "mamba3d", "pointmae", or None (not a release layout)."""
    keys = release_keys(state)
    if not any(k.startswith("encoder.first_conv.") for k in keys):
        return None
    blocks = [k for k in keys if k.startswith("blocks.blocks")]
    if any(k.startswith("blocks.blocks_vit.") for k in blocks):
        return "pointmap"
    if any(".lfa." in k or ".mixer." in k for k in blocks):
        return "mamba3d"
    if any(".attn." in k for k in blocks):
        return "pointmae"
    return None
