"""`map3d.plugins`: the one lazy loader of the registries (backends, wings, engine jobs)."""

import sys

import pytest

from map3d.plugins import PluginModules, load_object


@pytest.fixture
def modules(tmp_path, monkeypatch):
    (tmp_path / "plugin_ok.py").write_text("LOADED = []\nLOADED.append(1)\n")
    (tmp_path / "plugin_broken.py").write_text("import plugin_dependency_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("plugin_ok", "plugin_broken"):
        sys.modules.pop(name, None)


def test_imports_once_and_skips_a_missing_module(modules):
    plugins = PluginModules(("plugin_ok", "plugin_not_shipped"))
    plugins.load()
    plugins.load()
    assert sys.modules["plugin_ok"].LOADED == [1] and plugins.errors == {}


def test_an_error_inside_a_module_is_raised_unless_optional(modules):
    with pytest.raises(ModuleNotFoundError, match="plugin_dependency_not_there"):
        PluginModules(("plugin_broken",)).load()
    optional = PluginModules(("plugin_broken", "plugin_ok"), optional=True)
    optional.load()
    assert "plugin_dependency_not_there" in optional.errors["plugin_broken"]
    assert "plugin_ok" in sys.modules


def test_load_object():
    assert load_object("map3d.plugins:PluginModules") is PluginModules
