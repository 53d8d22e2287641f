"""Key mapping from the public PointMAP / Mamba3D / Point-MAE checkpoints to map3d models.

    state, skipped = convert_release_state_dict(torch.load(path, weights_only=True),
                                                pattern="MMMT" * 4)
    model = create_model("hybridmt3d_s", task="classify", attention_block="release",
                         bimamba_flip="channel", drop_path_schedule="release",
                         lnp_std="batch", bimamba_init="release")
    model.load_state_dict(state, strict=False)

Handles pretraining checkpoints (`MAE_encoder.*`, `MAE_decoder.*`, `mask_token`,
`decoder_pos_embed.*`, `increase_dim.*`) and finetuning ones (`encoder.*`, `blocks.*`,
`cls_token`, `cls_head_finetune.*`), with or without a DDP `module.` prefix or a
`base_model` / `model` wrapper. The release stores Mamba blocks in `blocks.blocks.{i}` and the
Transformer blocks of the hybrid in `blocks.blocks_vit.{j}`; `pattern` places them in our single
block list. For the same computation build the model with the release options (see
`map3d.models` docstring): `attention_block="release"` (the release's T block has an outer
norm2), and the bimamba flip the checkpoint was trained with (Mamba3D's configs: "channel").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from torch import Tensor

log = logging.getLogger(__name__)

_LNP_KEYS = {
    "lfa.lga.affine_alpha_feat": "local.lnp.affine_alpha",
    "lfa.lga.affine_beta_feat": "local.lnp.affine_beta",
    "lfa.pre_norm_ft.weight": "local.lnp.norm.weight",
    "lfa.pre_norm_ft.bias": "local.lnp.norm.bias",
    "lfa.mlp.share_mlp.weight": "local.lnp.proj.weight",
    "lfa.mlp.share_mlp.bias": "local.lnp.proj.bias",
}
_BLOCK = re.compile(r"^blocks\.(blocks|blocks_vit)\.(\d+)\.(.+)$")


def _unwrap(state: Mapping) -> Mapping[str, Tensor]:
    for key in ("base_model", "model", "state_dict"):
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


def _block_key(rest: str, plain_transformer: bool) -> str:
    """Key inside one release block -> key inside our block."""
    if plain_transformer:  # Point-MAE: the block itself is our T block's Transformer block
        return f"mixer.{rest}"
    if rest in _LNP_KEYS:
        return _LNP_KEYS[rest]
    if rest.startswith("norm1."):
        return f"local.{rest}"
    return rest  # norm2.*, mixer.*


def _encoder_key(key: str, positions: dict[str, list[int]], plain: bool) -> str | None:
    if key.startswith("encoder."):
        return "encoder.patch_embed." + key[len("encoder.") :]
    if key.startswith("pos_embed."):
        return "encoder." + key
    if key.startswith("norm."):
        return "encoder.backbone." + key
    match = _BLOCK.match(key)
    if match:
        group, index, rest = match.group(1), int(match.group(2)), match.group(3)
        kind = "T" if group == "blocks_vit" or plain else "M"
        slots = positions[kind]
        if index >= len(slots):
            return None
        return f"encoder.backbone.blocks.{slots[index]}.{_block_key(rest, plain)}"
    return None


def convert_release_state_dict(
    state: Mapping, pattern: str = "MMMT" * 4
) -> tuple[dict[str, Tensor], list[str]]:
    """Release checkpoint -> (our state dict, release keys that have no counterpart)."""
    positions = {kind: [i for i, c in enumerate(pattern) if c == kind] for kind in "MT"}
    plain = set(pattern) == {"T"}
    converted: dict[str, Tensor] = {}
    skipped: list[str] = []
    for raw_key, value in _unwrap(state).items():
        key = raw_key.removeprefix("module.")
        pretraining = key.startswith("MAE_encoder.")
        key = key.removeprefix("MAE_encoder.")
        target = None
        if key in ("cls_token", "cls_pos"):
            target = None if pretraining else key
        elif key.startswith("cls_head_finetune."):
            target = "head." + key[len("cls_head_finetune.") :]
        elif key == "mask_token":
            target = "decoder.mask_token"
        elif key.startswith("decoder_pos_embed."):
            target = "decoder.pos_embed." + key[len("decoder_pos_embed.") :]
        elif key.startswith("MAE_decoder.blocks."):
            index, rest = key[len("MAE_decoder.blocks.") :].split(".", 1)
            target = f"decoder.blocks.blocks.{index}.mixer.{rest}"
        elif key.startswith("MAE_decoder.norm."):
            target = "decoder.blocks.norm." + key[len("MAE_decoder.norm.") :]
        elif key.startswith("increase_dim.0."):
            target = "head." + key[len("increase_dim.0.") :]
        else:
            target = _encoder_key(key, positions, plain)
        if target is None:
            skipped.append(raw_key)
            continue
        if target.endswith(("affine_alpha", "affine_beta")):
            value = value.reshape(-1)
        elif value.dim() == 3 and target in ("head.weight",) or target.endswith("lnp.proj.weight"):
            value = value.squeeze(-1)  # Conv1d(kernel 1) -> Linear
        converted[target] = value
    if skipped:
        log.info("release keys without a counterpart: %s", ", ".join(skipped))
    return converted, skipped
