"""Models: a modality-agnostic core and one wing per modality.

    create_model("hybridmt3d_s", task="pretrain" | "classify" | "partseg", **overrides)
    create_model("map_tiny_patch16_224", task="pretrain" | "classify", **overrides)

Core (this package): the hybrid backbone, `TokenEncoder`, `MAPPretrainer` / `MAPDecoder` /
`PretrainObjective`, the registry, pretrained loading, release conversion and compat. Wings:
`map3d.models.points` (grouping, mini-PointNet, Chamfer objective, classifier, part segmenter,
presets) and `map3d.models.images` (patchify, embeddings, pixel objective, classifier, presets).

Faithfulness to the MAP / Mamba3D / Point-MAE releases. Everything below the line is a
config field whose default is our choice; the other value reproduces the release.

`compat="pointmap" | "mamba3d" | "pointmae"` (`map3d.models.compat`) sets all of them at once.

- Grouping, mini-PointNet, position MLP (SiLU for Mamba3D-based presets, GELU for Point-MAE),
  LNP (k=4, softmax-weighted pooling), bidirectional Mamba, masking (per sample, floor(ratio*G),
  0.6), decoder (4 blocks, drop path 0.1, GELU position MLP), Chamfer "cdl2" (the Point-MAE
  and Mamba3D pretraining configs; the PointMAP code builds on Mamba3D and ships no config of
  its own), classification head layers: as in the releases.
--------------------------------------------------------------------------------------------
- decoder_order = "serialized": the full sequence in serialized order with mask tokens in place
  (the MAP 2D release's convention; release 3D: "release", [visible ; masked], which breaks the
  spatial order the region-causal mask relies on).
- mask_type = "random" (the release configs' "rand"; the release also offers "block").
- head_pooling = "cls_max_mean" (Point-MAE: "cls_max"; Mamba3D/PointMAP as written:
  "release_exact", whose mean term is sample 0's, shared by the batch).
- serialization = "hilbert" (release: "none", FPS order); fps_rule = "map3d" (release:
  pointnet2_ops never picks a point with |p|^2 <= 1e-3).
- BackboneConfig.lnp_std = "sample" (release: "batch", one std over the whole batch, which
  makes a shape's features depend on the other shapes of its batch).
- BackboneConfig.bimamba_flip = "sequence" (Vim v2 / MAP 2D; release 3D configs: "channel",
  Mamba3D's bimamba v4), bimamba_divide_out = False (MAP 2D: True).
- BackboneConfig.bimamba_init = "mamba_ssm" (release: "release", which re-initializes the
  Mamba projections with trunc_normal and zeroes the dt bias).
- BackboneConfig.attention_block = "prenorm" (release: "release", a ViT block nested in an
  outer residual with an extra LayerNorm).
- BackboneConfig.drop_path_schedule = "linear" over all blocks (release: "release", the T
  blocks reuse the first values of the M blocks' schedule).
"""

from map3d.models.backbone import BackboneConfig, HybridBackbone
from map3d.models.compat import COMPATS, RELEASES, detect_release
from map3d.models.encoder import TokenEncoder
from map3d.models.pretrained import PretrainedWeightsError, load_pretrained
from map3d.models.pretrainer import MAPDecoder, MAPPretrainer, PretrainObjective, PretrainOutput
from map3d.models.registry import (
    apply_overrides,
    build_config,
    create_model,
    list_models,
    list_tasks,
    register_head,
    register_model,
)
from map3d.models.release import convert_release_state_dict, release_pattern

__all__ = [
    "COMPATS",
    "RELEASES",
    "BackboneConfig",
    "HybridBackbone",
    "MAPDecoder",
    "MAPPretrainer",
    "PretrainObjective",
    "PretrainOutput",
    "PretrainedWeightsError",
    "TokenEncoder",
    "apply_overrides",
    "build_config",
    "convert_release_state_dict",
    "create_model",
    "detect_release",
    "list_models",
    "list_tasks",
    "load_pretrained",
    "register_head",
    "register_model",
    "release_pattern",
]


_MOVED = {
    "ChamferObjective": "points",
    "PointClassifier": "points",
    "PointClassifierConfig": "points",
    "PointEncoderConfig": "points",
    "PointPretrainConfig": "points",
    "Reconstruction": "points",
    "build_point_encoder": "points",
    "build_point_pretrainer": "points",
}


def __getattr__(name: str):
    if name == "register_task":
        raise AttributeError(
            "map3d.models.register_task is now register_head (a model head for a task=; "
            "engine jobs are map3d.engine.tasks)"
        )
    if name in _MOVED:
        raise AttributeError(
            f"map3d.models.{name} moved to its modality wing: "
            f"from map3d.models.{_MOVED[name]} import {name}"
        )
    raise AttributeError(f"module 'map3d.models' has no attribute {name!r}")
