"""map3d: Masked Autoregressive Pretraining of hybrid Mamba-Transformer backbones.

Shape glossary used in every docstring: B batch, N points, G groups/tokens, K points per
group, C channels, E inner (expanded) channels, R decoder regions, L sequence length.
"""

__version__ = "0.1.0"


def create_model(name: str, **overrides):
    """Build a registered preset by name (see `list_models()`)."""
    from map3d.models.registry import create_model as _create

    return _create(name, **overrides)


def list_models() -> list[str]:
    """Names of all registered presets."""
    from map3d.models.registry import list_models as _list

    return _list()
