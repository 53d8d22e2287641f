"""The `map3d finetune` command that fits a pretrained checkpoint: printed after pretraining,
and in the error for weights loaded into the wrong kind of model."""

from __future__ import annotations

# Shipped finetuning recipe per pretrained preset: (config, None = the built-in default;
# the dataset folder it needs, None = built-in data).
FINETUNE_RECIPES: dict[str, tuple[str | None, str | None]] = {
    "hybridmt3d_tiny": (None, None),
    "hybridmt3d_s": ("configs/finetune/modelnet40.yaml", "/path/to/modelnet40_normal_resampled"),
    "map_nano_patch4_16": ("configs/finetune/image_tiny_digits.yaml", None),
}
# Model overrides that shape the encoder: a finetuning run must repeat them to load its weights.
ENCODER_SHAPE_KEYS = (
    "dim",
    "pattern",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "d_state",
    "d_conv",
    "expand",
    "patch_size",
    "in_channels",
)
# Presets without a recipe of their own use the recipe of a preset of the same size.
_SAME_SIZE = {
    "mamba3d_tiny": "hybridmt3d_tiny",
    "pointmae_tiny": "hybridmt3d_tiny",
    "mamba3d_s": "hybridmt3d_s",
    "pointmae_s": "hybridmt3d_s",
}


def finetune_command(checkpoint, model_name: str | None, overrides: dict | None = None) -> str:
    """A `map3d finetune` command line that finetunes the weights of `checkpoint` (pretrained
    preset `model_name` with model `overrides`, of which those in ENCODER_SHAPE_KEYS are
    repeated); for presets without a shipped recipe, a sentence saying what to write."""
    base = model_name if model_name in FINETUNE_RECIPES else _SAME_SIZE.get(model_name or "")
    if base is None:
        return (
            f"map3d finetune --config YOUR_CONFIG.yaml --pretrained {checkpoint}   "
            f"(no finetuning config ships for {model_name}: copy one from configs/finetune/ "
            f"and set model.name: {model_name})"
        )
    config, data = FINETUNE_RECIPES[base]
    parts = ["map3d finetune"]
    if config is not None:
        parts.append(f"--config {config}")
    if data is not None:
        parts.append(f"--data {data}")
    if base != model_name:
        parts.append(f"--set model.name={model_name}")
    for key, value in (overrides or {}).items():
        if key in ENCODER_SHAPE_KEYS:
            parts.append(f"--set model.overrides.{key}={value}")
    parts.append(f"--pretrained {checkpoint}")
    return " ".join(parts)
