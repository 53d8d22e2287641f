"""map3d: Masked Autoregressive Pretraining of hybrid Mamba-Transformer backbones.

Shape glossary used in every docstring: B batch, N points, G groups/tokens, K points per
group, C channels, E inner (expanded) channels, R decoder regions, L sequence length.
"""

__version__ = "0.1.0"


def create_model(name: str, **overrides):
    """Build a registered preset by name (see `list_models()`)."""
    from map3d.models.registry import create_model as _create

    return _create(name, **overrides)


def load_model(path, **overrides):
    """The model saved in a map3d (or PointMAP / Mamba3D / Point-MAE release) checkpoint file,
    rebuilt from the config it carries, weights loaded, in eval mode on the CPU; `overrides`
    are model config fields that leave the weights' shapes alone (e.g. num_groups)."""
    from map3d.engine.checkpoint import load_checkpoint, model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(path), path, **overrides)


def list_models() -> list[str]:
    """Names of all registered presets."""
    from map3d.models.registry import list_models as _list

    return _list()
