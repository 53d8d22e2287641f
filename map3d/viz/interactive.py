"""The interactive Open3D window: one reconstructed shape, a key press switches the view.

Keys: SPACE or N next view, 1/2/3 input / reconstruction / ground truth, Q or ESC closes.
The three views are those of the PNG figure (`ShapeLayers.views`).
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from map3d.errors import UserError
from map3d.viz.layers import ShapeLayers

log = logging.getLogger(__name__)

KEY_HELP = "SPACE/N: next view, 1/2/3: input/reconstruction/ground truth, Q/ESC: close"


class DisplayUnavailableError(UserError, RuntimeError):
    """An interactive window was asked for where none can be opened; the message says why."""


def display_problem() -> str | None:
    """Why no window can be opened here (None if a display looks available)."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "no display: neither DISPLAY nor WAYLAND_DISPLAY is set (headless machine?)"
    return None


def require_display() -> None:
    """Raise `DisplayUnavailableError` with advice if no window can be opened here."""
    problem = display_problem()
    if problem is not None:
        raise DisplayUnavailableError(
            f"cannot open an interactive window: {problem}. Without --show, `map3d viz` "
            "writes the PNG figures and PLY files only; open the PLY files in any viewer, or "
            "run under a virtual display (e.g. `xvfb-run -a map3d viz ... --show`)."
        )


def show_reconstruction(layers: ShapeLayers, *, title: str = "map3d reconstruction") -> None:
    """Open a window showing one shape; blocks until it is closed. Keys: see `KEY_HELP`."""
    require_display()
    from map3d.viz.render import _import_open3d

    o3d = _import_open3d()
    views = layers.views()
    clouds = []
    for view in views:
        cloud = o3d.geometry.PointCloud()
        cloud.points = o3d.utility.Vector3dVector(view.points.astype(np.float64))
        cloud.colors = o3d.utility.Vector3dVector(view.colors / 255.0)
        clouds.append(cloud)

    vis = o3d.visualization.VisualizerWithKeyCallback()
    if not vis.create_window(window_name=title, width=960, height=720):
        raise DisplayUnavailableError(
            f"Open3D could not open a window on display {os.environ.get('DISPLAY', '?')!r}"
        )
    current = [0]

    def select(index: int):
        def callback(vis) -> bool:
            vis.remove_geometry(clouds[current[0]], reset_bounding_box=False)
            current[0] = index % len(clouds)
            vis.add_geometry(clouds[current[0]], reset_bounding_box=False)
            log.info("view %d/%d: %s", current[0] + 1, len(views), views[current[0]].title)
            return True

        return callback

    vis.add_geometry(clouds[0])
    vis.get_render_option().point_size = 4.0
    vis.get_render_option().background_color = np.ones(3)
    for key in (ord(" "), ord("N")):
        vis.register_key_callback(key, lambda v: select(current[0] + 1)(v))
    for i in range(len(views)):
        vis.register_key_callback(ord(str(i + 1)), select(i))
    log.info("%s -- view 1/%d: %s", KEY_HELP, len(views), views[0].title)
    try:
        vis.run()
    finally:
        vis.destroy_window()
