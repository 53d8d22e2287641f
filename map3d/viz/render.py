"""Side-by-side PNG figures of point clouds, rendered offscreen.

Two renderers draw the same figure (same camera, point size, colours and titles):
- `open3d`: `open3d.visualization.rendering.OffscreenRenderer` (Filament), orthographic camera,
  unlit points, 2x supersampled. Headless Linux needs no display and no environment variable
  with open3d-cpu 0.20: Filament picks its Vulkan backend on Mesa's software device (llvmpipe),
  which needs the Debian packages libvulkan1 and mesa-vulkan-drivers (and libusb-1.0-0, which
  `import open3d` itself needs).
- `matplotlib`: a 3D scatter per view on the Agg canvas; no system packages needed.
`renderer="auto"` uses Open3D when it imports and starts, else matplotlib (with a logged
warning when Open3D is installed but fails). Open3D is imported only inside these functions.

Both shade points by depth (farther = darker) so the shape reads in a still image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from map3d.atomic import atomic_write
from map3d.errors import MissingDependencyError
from map3d.viz.layers import RECONSTRUCTION_LEGEND, ShapeLayers, View, to_numpy

log = logging.getLogger(__name__)

RENDERERS = ("auto", "open3d", "matplotlib")
TITLE_HEIGHT = 34  # pixels of the title band above each view
LEGEND_HEIGHT = 30  # pixels of the legend band below the views (figures with a legend)
_DPI = 100
_SUPERSAMPLE = 2  # Open3D renders at this multiple of the panel size, then averages down
_DEPTH_SHADE = 0.45  # the farthest point is this much darker than the nearest
_HIGHLIGHT_SCALE = 2.0  # highlighted points are this much larger


@dataclass(frozen=True)
class Camera:
    """An orthographic camera shared by all views of a figure (world coordinates are y-up).

    center (3,): the point at the middle of the image; direction (3,): unit vector from the
    center towards the eye; right, up (3,): unit screen axes; half_width, half_height: the
    visible extent around the center; depth: the largest distance of a point from the center.
    """

    center: np.ndarray
    direction: np.ndarray
    right: np.ndarray
    up: np.ndarray
    half_width: float
    half_height: float
    depth: float

    @staticmethod
    def fit(
        views: list[View],
        aspect: float = 1.0,
        elevation: float = 25.0,
        azimuth: float = 50.0,
        margin: float = 0.06,
    ) -> Camera:
        """Frame the union of all views' points tightly.

        aspect: image width / height; elevation above the xz-plane and azimuth about +y (from
        +z towards +x), in degrees; margin: fraction of the image left empty on each side.
        """
        points = np.concatenate([v.points for v in views]).astype(np.float64)
        if not len(points):
            raise ValueError("views contain no points")
        e, a = np.radians(elevation), np.radians(azimuth)
        direction = np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])
        right = np.cross([0.0, 1.0, 0.0], direction)
        right /= np.linalg.norm(right)
        up = np.cross(direction, right)
        middle = (points.min(axis=0) + points.max(axis=0)) / 2
        screen = (points - middle) @ np.stack([right, up], axis=1)  # (N,2)
        lo, hi = screen.min(axis=0), screen.max(axis=0)
        center = middle + right * (lo[0] + hi[0]) / 2 + up * (lo[1] + hi[1]) / 2
        half = (hi - lo) / 2 / (1 - 2 * margin)
        half_height = max(half[1], half[0] / aspect, 1e-6)
        depth = float(np.linalg.norm(points - center, axis=1).max()) or 1.0
        return Camera(center, direction, right, up, half_height * aspect, half_height, depth)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points (N,3) -> screen coordinates (N,2) and nearness (N,) in [-1,1] (1 = nearest)."""
        relative = points - self.center
        screen = relative @ np.stack([self.right, self.up], axis=1)
        return screen, relative @ self.direction / self.depth

    def shade(self, points: np.ndarray, colors: np.ndarray) -> np.ndarray:
        """Darken colours (N,3) uint8 with depth: -> (N,3) uint8."""
        _, nearness = self.project(points)
        factor = 1.0 - _DEPTH_SHADE * (1.0 - nearness) / 2.0
        return np.clip(colors * factor[:, None], 0, 255).astype(np.uint8)


def resolve_renderer(renderer: str) -> str:
    """Map `auto|open3d|matplotlib` to the renderer that will be used."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {RENDERERS}, got {renderer!r}")
    if renderer != "auto":
        return renderer
    try:
        _import_open3d()
    except ImportError as err:
        log.debug("Open3D unavailable (%s); using matplotlib", err)
        return "matplotlib"
    return "open3d"


def render_views(
    views: list[View],
    path: str | os.PathLike,
    *,
    renderer: str = "auto",
    panel_size: tuple[int, int] = (480, 480),
    point_size: float | None = None,
    camera: Camera | None = None,
    legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
) -> Path:
    """Render titled views side by side into a PNG of (len(views)*width) x (height+TITLE_HEIGHT),
    plus LEGEND_HEIGHT pixels for a legend if one is given.

    panel_size: (width, height) pixels of each view; point_size: pixels (default scales with
    the panel); camera: default frames all views together; legend: (label, uint8 RGB colour)
    entries drawn in one row below the views.
    """
    if not views:
        raise ValueError("views must not be empty")
    width, height = panel_size
    if width < 16 or height < 16:
        raise ValueError(f"panel_size must be at least (16,16) pixels, got {panel_size}")
    camera = camera or Camera.fit(views, aspect=width / height)
    point_size = point_size or max(2.0, height / 160)
    backend = resolve_renderer(renderer)
    images = None
    if backend == "open3d":
        try:
            images = _render_open3d(views, camera, (width, height), point_size)
        except RuntimeError as err:  # e.g. no Vulkan/EGL device
            if renderer == "open3d":
                raise RuntimeError(f"Open3D offscreen rendering failed: {err}{_O3D_HINT}") from err
            log.warning("Open3D offscreen rendering failed (%s); falling back to matplotlib", err)
    return _compose(views, images, camera, (width, height), point_size, Path(path), legend)


def render_reconstruction(
    layers: ShapeLayers,
    path: str | os.PathLike,
    *,
    renderer: str = "auto",
    panel_size: tuple[int, int] = (480, 480),
    **kwargs,
) -> Path:
    """PNG of one reconstructed shape: input (masked patches greyed), reconstruction, truth.

    The camera frames the ground-truth shape, so a wild prediction cannot shrink the figure
    (predicted points outside the frame are cut off). A legend names the colours. kwargs:
    `render_views` options (point_size, camera, legend).
    """
    views = layers.views()
    kwargs.setdefault("legend", RECONSTRUCTION_LEGEND)
    kwargs.setdefault("camera", Camera.fit([views[-1]], aspect=panel_size[0] / panel_size[1]))
    return render_views(views, path, renderer=renderer, panel_size=panel_size, **kwargs)


# Distinguishable part colours (uint8); part i uses PART_PALETTE[i % len].
PART_PALETTE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75),
        (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
        (152, 223, 138), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141),
        (158, 218, 229), (57, 59, 121), (99, 121, 57), (140, 109, 49), (123, 65, 115),
    ],
    dtype=np.uint8,
)  # fmt: skip
ERROR_COLOR = (220, 30, 30)
CORRECT_COLOR = (210, 210, 210)


def render_part_segmentation(
    points,
    pred,
    gt,
    path: str | os.PathLike,
    *,
    renderer: str = "auto",
    title: str | None = None,
    **kwargs,
) -> Path:
    """PNG of a part segmentation: prediction and ground truth coloured per part, and errors.

    points: (N,3) float; pred, gt: (N,) integer part labels (any numbering: colours follow the
    label value, so the same part has the same colour in both views); the third view shows
    wrongly labelled points in red over light-grey correct ones. Accepts numpy or torch.
    kwargs: `render_views` options (panel_size, point_size, camera).
    """
    points = to_numpy(points).astype(np.float32)
    pred = to_numpy(pred)
    gt = to_numpy(gt)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N,3), got {points.shape}")
    n = len(points)
    for name, labels in (("pred", pred), ("gt", gt)):
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{name} must be integer labels of shape ({n},), got {labels.dtype} {labels.shape}"
            )
    wrong = pred != gt
    error_colors = np.where(wrong[:, None], ERROR_COLOR, CORRECT_COLOR).astype(np.uint8)
    accuracy = 1.0 - wrong.mean() if n else 1.0
    views = [
        View("prediction" if title is None else f"{title}: prediction", points,
             PART_PALETTE[pred % len(PART_PALETTE)]),
        View("ground truth", points, PART_PALETTE[gt % len(PART_PALETTE)]),
        View(f"errors: {int(wrong.sum())}/{n} points (acc {accuracy:.1%})", points, error_colors,
             highlight=wrong),
    ]  # fmt: skip
    return render_views(views, path, renderer=renderer, **kwargs)


_O3D_HINT = (
    "\nOpen3D offscreen rendering on headless Linux needs the Debian packages libusb-1.0-0, "
    "libvulkan1 and mesa-vulkan-drivers (`apt-get install libusb-1.0-0 libvulkan1 "
    "mesa-vulkan-drivers`); or use renderer='matplotlib'."
)


def _import_open3d():
    """Import open3d, turning every failure (missing package or system library) into ImportError."""
    try:
        import open3d
    except ImportError as err:
        raise MissingDependencyError(
            f"Open3D is not available ({err}). Install it with `pip install 'map3d[viz]'`"
            f"{_O3D_HINT}"
        ) from err
    except OSError as err:  # a missing shared library, e.g. libusb-1.0.so.0
        raise MissingDependencyError(
            f"Open3D failed to load a system library ({err}){_O3D_HINT}"
        ) from err
    return open3d


@contextlib.contextmanager
def _native_stdout_to_stderr():
    """Send what native code prints on stdout (Filament's start-up banner) to stderr instead.

    Keeps stdout clean for command output (tables, CSV). Python-level `sys.stdout` is untouched.
    """
    sys.stdout.flush()
    try:
        stdout_fd = sys.__stdout__.fileno()
        saved = os.dup(stdout_fd)
    except (AttributeError, OSError, ValueError):  # no real file descriptor (e.g. captured)
        yield
        return
    try:
        os.dup2(sys.__stderr__.fileno(), stdout_fd)
        yield
    finally:
        os.dup2(saved, stdout_fd)
        os.close(saved)


def _render_open3d(
    views: list[View], camera: Camera, size: tuple[int, int], point_size: float
) -> list[np.ndarray]:
    """Render each view with one Open3D offscreen renderer: -> list of (H,W,3) uint8 images."""
    o3d = _import_open3d()
    from open3d.visualization import rendering

    scale = _SUPERSAMPLE
    width, height = size
    eye = camera.center + 2.0 * camera.depth * camera.direction
    images = []
    with (
        o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error),
        _native_stdout_to_stderr(),
    ):
        renderer = rendering.OffscreenRenderer(width * scale, height * scale)
        scene = renderer.scene
        try:
            scene.set_background([1.0, 1.0, 1.0, 1.0])
            scene.view.set_post_processing(False)  # exact colours: no tone mapping
            materials = []
            for pixels in (point_size, point_size * _HIGHLIGHT_SCALE):
                material = rendering.MaterialRecord()
                material.shader = "defaultUnlit"
                material.point_size = float(pixels * scale)
                materials.append(material)
            for view in views:
                scene.clear_geometry()
                shaded = camera.shade(view.points, view.colors)
                highlight = _highlight_mask(view)
                for name, keep, material in (
                    ("points", ~highlight, materials[0]),
                    ("highlight", highlight, materials[1]),
                ):
                    if keep.any():
                        cloud = o3d.geometry.PointCloud()
                        cloud.points = o3d.utility.Vector3dVector(
                            view.points[keep].astype(np.float64)
                        )
                        cloud.colors = o3d.utility.Vector3dVector(shaded[keep] / 255.0)
                        scene.add_geometry(name, cloud, material)
                scene.camera.set_projection(
                    rendering.Camera.Projection.Ortho,
                    -camera.half_width, camera.half_width,
                    -camera.half_height, camera.half_height,
                    0.5 * camera.depth, 3.5 * camera.depth,
                )  # fmt: skip
                scene.camera.look_at(camera.center, eye, camera.up)
                image = np.asarray(renderer.render_to_image())[..., :3].astype(np.float32)
                image = image.reshape(height, scale, width, scale, 3).mean(axis=(1, 3))
                images.append(np.rint(image).astype(np.uint8))
        finally:
            # Filament aborts if a renderer dies while geometry still uses its materials.
            scene.clear_geometry()
            del scene, renderer
    return images


def _compose(
    views: list[View],
    images: list[np.ndarray] | None,
    camera: Camera,
    size: tuple[int, int],
    point_size: float,
    path: Path,
    legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
) -> Path:
    """Lay out the views with titles (and the legend below); draw them with matplotlib unless
    images are given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    width, height = size
    bottom = LEGEND_HEIGHT if legend else 0
    fig_w, fig_h = width * len(views), height + TITLE_HEIGHT + bottom
    fig = Figure(figsize=(fig_w / _DPI, fig_h / _DPI), dpi=_DPI, facecolor="white")
    # One font size for all titles, small enough for the longest (~0.6 em per character).
    longest = max(len(view.title) for view in views)
    fontsize = min(12.0, 0.92 * width / (0.6 * longest) * 72 / _DPI)
    FigureCanvasAgg(fig)
    for i, view in enumerate(views):
        rect = (i * width / fig_w, bottom / fig_h, width / fig_w, height / fig_h)
        if images is not None:
            ax = fig.add_axes(rect)
            ax.imshow(images[i], interpolation="nearest", aspect="auto")
            ax.set_axis_off()
        else:
            _scatter_matplotlib(fig, rect, view, camera, point_size)
        fig.text(
            (i + 0.5) * width / fig_w,
            1.0 - TITLE_HEIGHT / 2 / fig_h,
            view.title,
            ha="center",
            va="center",
            fontsize=fontsize,
        )
    if legend:
        handles = [
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markersize=7,
                markeredgewidth=0,
                markerfacecolor=np.asarray(color) / 255.0,
                label=label,
            )
            for label, color in legend
        ]
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=len(handles),
            frameon=False,
            fontsize=min(
                fontsize, 0.92 * fig_w / (0.6 * sum(len(t) + 4 for t, _ in legend)) * 72 / _DPI
            ),
            bbox_to_anchor=(0.5, 0.0),
            handletextpad=0.2,
            columnspacing=1.0,
        )
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=_DPI, facecolor="white")
    return path


def _scatter_matplotlib(fig, rect, view: View, camera: Camera, point_size: float):
    """One view as a 2D scatter of the camera's projection, far points drawn first."""
    ax = fig.add_axes(rect)
    screen, nearness = camera.project(view.points)
    colors = camera.shade(view.points, view.colors) / 255.0
    highlight = _highlight_mask(view)
    diameter = point_size * 72.0 / _DPI  # in typographic points
    for keep, scale in ((~highlight, 1.0), (highlight, _HIGHLIGHT_SCALE)):
        order = np.flatnonzero(keep)[np.argsort(nearness[keep], kind="stable")]
        ax.scatter(*screen[order].T, c=colors[order], s=(diameter * scale) ** 2, linewidths=0)
    ax.set_xlim(-camera.half_width, camera.half_width)
    ax.set_ylim(-camera.half_height, camera.half_height)
    ax.set_axis_off()


def _highlight_mask(view: View) -> np.ndarray:
    if view.highlight is None:
        return np.zeros(len(view.points), dtype=bool)
    highlight = np.asarray(view.highlight, dtype=bool)
    if highlight.shape != (len(view.points),):
        raise ValueError(
            f"view {view.title!r}: highlight must have shape ({len(view.points)},), "
            f"got {highlight.shape}"
        )
    return highlight
