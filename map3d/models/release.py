"""Key mapping from the public PointMAP / Mamba3D / Point-MAE checkpoints to map3d models.

    state, skipped = convert_release_state_dict(torch.load(path, weights_only=True),
                                                pattern=release_pattern(ckpt))
    model = create_model("hybridmt3d_s", task="classify", compat="pointmap")
    model.load_state_dict(state, strict=False)

`compat` (see `map3d.models.compat`) sets every field the release computes differently:
serialization "none" (FPS order), the release FPS rule, bimamba flip "channel", batch LNP std,
release init, nested T block, release drop-path schedule, decoder order, head pooling. Without
it the weights load into a different model. map3d's checkpoint readers do all of this
themselves: a release file passed to `map3d finetune --pretrained`, `eval`, `viz` or `export`
is detected by its keys, converted and built with its compat.

Handles pretraining checkpoints (`MAE_encoder.*`, `MAE_decoder.*`, `mask_token`,
`decoder_pos_embed.*`, `increase_dim.*`) and finetuning ones (`encoder.*`, `blocks.*`,
`cls_token`, `cls_head_finetune.*`), with or without a DDP `module.` prefix or a
`base_model` / `model` wrapper. The release stores Mamba blocks in `blocks.blocks.{i}` and the
Transformer blocks of the hybrid in `blocks.blocks_vit.{j}` (one after every third Mamba block);
`pattern` places them in our single block list.
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


def unwrap_release(state: Mapping) -> Mapping[str, Tensor]:
    """The state dict inside a release checkpoint (`base_model`, `model` or `state_dict`)."""
    for key in ("base_model", "model", "state_dict"):
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


def release_keys(state: Mapping) -> list[str]:
    """The keys of a release checkpoint's state dict without the DDP `module.` prefix and the
    pretraining `MAE_encoder.` one: encoder keys read alike in every kind of checkpoint."""
    return [k.removeprefix("module.").removeprefix("MAE_encoder.") for k in unwrap_release(state)]


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


def release_pattern(state: Mapping) -> str:
    """The block pattern of a release checkpoint: PointMAP puts its j-th Transformer block after
    the (3j+3)-th Mamba block; Mamba3D is all "M", Point-MAE all "T"."""
    indices: dict[str, set[int]] = {"blocks": set(), "blocks_vit": set()}
    has_mamba = False
    for key in release_keys(state):
        match = _BLOCK.match(key)
        if match:
            indices[match.group(1)].add(int(match.group(2)))
            has_mamba |= match.group(3).startswith(("lfa.", "mixer."))
    depth, vit = len(indices["blocks"]), len(indices["blocks_vit"])
    if not has_mamba:
        return "T" * depth
    pattern = ""
    for n in range(depth):
        pattern += "M"
        if (n + 1) % 3 == 0 and n // 3 < vit:
            pattern += "T"
    return pattern


def convert_release_state_dict(
    state: Mapping, pattern: str = "MMMT" * 4
) -> tuple[dict[str, Tensor], list[str]]:
    """Release checkpoint -> (our state dict, release keys that have no counterpart)."""
    positions = {kind: [i for i, c in enumerate(pattern) if c == kind] for kind in "MT"}
    plain = set(pattern) == {"T"}
    converted: dict[str, Tensor] = {}
    skipped: list[str] = []
    for raw_key, value in unwrap_release(state).items():
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
