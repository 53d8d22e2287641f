"""PNG figures: written, right size, not blank, same camera in every view, both renderers."""

import subprocess
import sys

import numpy as np
import pytest

from map3d.viz import render, render_part_segmentation, render_reconstruction, split_reconstruction
from map3d.viz.render import LEGEND_HEIGHT, TITLE_HEIGHT, resolve_renderer

PANEL = (160, 120)


def _open3d_or_skip():
    try:
        render._import_open3d()
    except ImportError as err:
        pytest.skip(f"open3d unavailable: {err}")


@pytest.fixture(params=["open3d", "matplotlib"])
def renderer(request):
    if request.param == "open3d":
        _open3d_or_skip()
    return request.param


def _read_image(path):
    from matplotlib.image import imread

    return (imread(path)[..., :3] * 255).round().astype(np.int16)


def _read_panels(path, count, *, legend=False):
    image = _read_image(path)
    bottom = LEGEND_HEIGHT if legend else 0
    assert image.shape == (PANEL[1] + TITLE_HEIGHT + bottom, count * PANEL[0], 3)
    body = image[TITLE_HEIGHT : TITLE_HEIGHT + PANEL[1]]
    return [body[:, i * PANEL[0] : (i + 1) * PANEL[0]] for i in range(count)]


def _ink(panel):
    """(H,W) bool: pixels that are not (near) white background."""
    return (panel < 235).any(axis=-1)


def _count(panel, condition):
    r, g, b = panel[..., 0], panel[..., 1], panel[..., 2]
    return int(condition(r, g, b).sum())


def test_reconstruction_figure(tmp_path, renderer, make_reconstruction):
    shape = split_reconstruction(make_reconstruction())[0]
    path = render_reconstruction(shape, tmp_path / "rec.png", renderer=renderer, panel_size=PANEL)
    inputs, reconstruction, truth = _read_panels(path, 3, legend=True)
    for panel in (inputs, reconstruction, truth):
        coverage = _ink(panel).mean()
        assert 0.02 < coverage < 0.6, coverage
        assert _count(panel, lambda r, g, b: b > r + 40)  # visible points: blue
    grey = lambda r, g, b: (abs(r - g) < 6) & (abs(g - b) < 6) & (r < 200)
    orange = lambda r, g, b: r > b + 60
    green = lambda r, g, b: (g > r + 40) & (g > b)
    assert _count(inputs, grey) and not _count(inputs, orange)
    assert _count(reconstruction, orange) and not _count(reconstruction, grey)
    assert _count(truth, green) and not _count(truth, orange)
    # Input and ground truth draw the same points with one camera: same silhouette.
    assert (_ink(inputs) != _ink(truth)).mean() < 0.01


def test_reconstruction_figure_has_a_colour_legend(tmp_path, make_reconstruction):
    shape = split_reconstruction(make_reconstruction())[0]
    path = render_reconstruction(
        shape, tmp_path / "rec.png", renderer="matplotlib", panel_size=PANEL
    )
    band = _read_image(path)[-LEGEND_HEIGHT:]
    assert _count(band, lambda r, g, b: b > r + 40)  # blue: visible
    assert _count(band, lambda r, g, b: (abs(r - g) < 6) & (abs(g - b) < 6) & (r < 215))  # grey
    assert _count(band, lambda r, g, b: r > b + 60)  # orange: reconstructed
    assert _count(band, lambda r, g, b: (g > r + 40) & (g > b))  # green: truth
    plain = render.render_views(
        shape.views(), tmp_path / "plain.png", renderer="matplotlib", panel_size=PANEL
    )
    assert _read_image(plain).shape[0] == PANEL[1] + TITLE_HEIGHT  # no legend unless asked


def test_renderers_frame_alike(tmp_path, make_reconstruction):
    _open3d_or_skip()
    shape = split_reconstruction(make_reconstruction())[0]
    boxes = []
    for name in ("open3d", "matplotlib"):
        path = render_reconstruction(
            shape, tmp_path / f"{name}.png", renderer=name, panel_size=PANEL
        )
        rows, cols = np.nonzero(_ink(_read_panels(path, 3, legend=True)[2]))
        boxes.append(np.array([rows.min(), rows.max(), cols.min(), cols.max()]))
    assert np.abs(boxes[0] - boxes[1]).max() <= 6, boxes


def test_part_segmentation_figure(tmp_path, renderer, torus_points):
    gt = (torus_points[:, 0] > 0).astype(int) + 2 * (torus_points[:, 2] > 0.3)
    pred = gt.copy()
    pred[::10] = (pred[::10] + 1) % 4
    path = render_part_segmentation(
        torus_points, pred, gt, tmp_path / "seg.png", renderer=renderer, panel_size=PANEL
    )
    prediction, truth, errors = _read_panels(path, 3)
    assert 0.02 < _ink(truth).mean() < 0.6
    assert (_ink(prediction) != _ink(truth)).mean() < 0.01
    red = lambda r, g, b: (r > 150) & (g < 90) & (b < 90)
    assert _count(errors, red) > 20


def test_part_segmentation_bad_labels(tmp_path, torus_points):
    with pytest.raises(ValueError, match=r"pred must be integer labels of shape \(1024,\)"):
        render_part_segmentation(
            torus_points, np.zeros(5, int), np.zeros(1024, int), tmp_path / "x.png"
        )


def test_auto_falls_back_to_matplotlib(tmp_path, monkeypatch, make_reconstruction, caplog):
    def missing():
        raise ImportError("no open3d here")

    monkeypatch.setattr(render, "_import_open3d", missing)
    assert resolve_renderer("auto") == "matplotlib"
    with pytest.raises(ValueError, match="renderer must be one of"):
        resolve_renderer("vtk")

    monkeypatch.setattr(render, "_import_open3d", lambda: None)

    def broken(*args):
        raise RuntimeError("no Vulkan device")

    monkeypatch.setattr(render, "_render_open3d", broken)
    shape = split_reconstruction(make_reconstruction())[0]
    path = render_reconstruction(shape, tmp_path / "rec.png", renderer="auto", panel_size=PANEL)
    assert _ink(_read_panels(path, 3, legend=True)[0]).any()
    assert "falling back to matplotlib" in caplog.text
    with pytest.raises(RuntimeError, match="libvulkan1 and mesa-vulkan-drivers"):
        render_reconstruction(shape, tmp_path / "rec.png", renderer="open3d", panel_size=PANEL)


def test_import_does_not_load_open3d():
    code = "import sys, map3d.viz, map3d.viz.command; assert 'open3d' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
