"""The core of `map3d.models` imports no modality wing, and no wing imports another: adding a
modality is a new wing plus its name in `registry.PLUGIN_MODULES` (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

import map3d.models
from map3d.models import registry

MODELS = Path(map3d.models.__file__).parent
WINGS = sorted(p.name for p in MODELS.iterdir() if (p / "__init__.py").is_file())


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names), at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _wing_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["map3d", "models"] and len(parts) > 2 and parts[2] in WINGS:
        return parts[2]
    return None


def test_there_is_a_wing_per_modality_and_the_registry_loads_each():
    assert WINGS == ["images", "points"]
    assert set(registry.PLUGIN_MODULES) == {f"map3d.models.{wing}" for wing in WINGS}


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_wing(path):
    wings = {_wing_of(m) for m in _imports(path)} - {None}
    assert not wings, f"core module {path.name} imports the {sorted(wings)} wing"


@pytest.mark.parametrize("wing", WINGS)
def test_wings_do_not_import_each_other(wing):
    for path in sorted((MODELS / wing).glob("*.py")):
        others = {_wing_of(m) for m in _imports(path)} - {None, wing}
        assert not others, f"{wing}/{path.name} imports the {sorted(others)} wing"
