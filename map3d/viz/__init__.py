"""Looking at point clouds: PLY export, offscreen PNG figures and the interactive Open3D window.

Open3D is optional and imported only inside the functions that use it.
"""

from map3d.viz.interactive import DisplayUnavailableError, show_reconstruction
from map3d.viz.layers import ShapeLayers, View, split_reconstruction
from map3d.viz.ply import PlyPointCloud, read_ply, write_ply
from map3d.viz.render import render_part_segmentation, render_reconstruction, render_views

__all__ = [
    "DisplayUnavailableError",
    "PlyPointCloud",
    "ShapeLayers",
    "View",
    "read_ply",
    "render_part_segmentation",
    "render_reconstruction",
    "render_views",
    "show_reconstruction",
    "split_reconstruction",
    "write_ply",
]
