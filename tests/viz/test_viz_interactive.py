"""The interactive window: display detection, and the key callbacks that switch views.

No display exists in CI, so Open3D's visualizer is replaced by a recording fake here.
"""

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from map3d.viz import render, split_reconstruction
from map3d.viz.interactive import (
    DisplayUnavailableError,
    display_problem,
    require_display,
    show_reconstruction,
)


def test_no_display_message(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert "DISPLAY" in display_problem()
    with pytest.raises(DisplayUnavailableError, match="writes the PNG figures and PLY files"):
        require_display()
    monkeypatch.setenv("DISPLAY", ":0")
    assert display_problem() is None


class _FakeVisualizer:
    def __init__(self, window_ok, keys):
        self.window_ok, self.keys = window_ok, keys
        self.shown, self.callbacks, self.destroyed = [], {}, False

    def create_window(self, **kwargs):
        return self.window_ok

    def add_geometry(self, cloud, reset_bounding_box=True):
        self.shown.append(cloud)

    def remove_geometry(self, cloud, reset_bounding_box=True):
        self.shown.remove(cloud)

    def get_render_option(self):
        return SimpleNamespace()

    def register_key_callback(self, key, callback):
        self.callbacks[key] = callback

    def run(self):
        self.history = [len(self.shown[0].points)]
        for key in self.keys:
            self.callbacks[ord(key)](self)
            assert len(self.shown) == 1
            self.history.append(len(self.shown[0].points))

    def destroy_window(self):
        self.destroyed = True


def _fake_open3d(visualizer):
    return SimpleNamespace(
        geometry=SimpleNamespace(PointCloud=SimpleNamespace),
        utility=SimpleNamespace(Vector3dVector=np.asarray),
        visualization=SimpleNamespace(VisualizerWithKeyCallback=lambda: visualizer),
    )


def test_keys_switch_views(monkeypatch, make_reconstruction):
    monkeypatch.setenv("DISPLAY", ":0")
    shape = split_reconstruction(make_reconstruction())[0]
    # Make the three views distinguishable by size: drop one predicted patch.
    shape.predicted = shape.predicted[:-8]
    sizes = [len(view.points) for view in shape.views()]
    visualizer = _FakeVisualizer(True, keys=" 3N1")
    monkeypatch.setattr(render, "_import_open3d", lambda: _fake_open3d(visualizer))
    show_reconstruction(shape)
    assert visualizer.history == [sizes[0], sizes[1], sizes[2], sizes[0], sizes[0]]
    assert visualizer.destroyed

    monkeypatch.setattr(render, "_import_open3d", lambda: _fake_open3d(_FakeVisualizer(False, "")))
    with pytest.raises(DisplayUnavailableError, match="could not open a window"):
        show_reconstruction(shape)
