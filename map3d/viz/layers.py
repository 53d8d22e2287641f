"""One shape of a `Reconstruction`, split into the point layers that every figure and export uses.

Layers (also the integer `layer` vertex property of exported PLY files):
  0 `visible`: ground-truth points of the patches the encoder saw;
  1 `predicted`: the decoder's prediction of the masked patches;
  2 `target`: the ground-truth points of the masked patches.
The three figure views are built from them: input (visible + target greyed out),
reconstruction (visible + predicted) and ground truth (visible + target).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYER_VISIBLE, LAYER_PREDICTED, LAYER_TARGET = 0, 1, 2
LAYER_NAMES = {LAYER_VISIBLE: "visible", LAYER_PREDICTED: "predicted", LAYER_TARGET: "target"}

# uint8 RGB colours, shared by the PNG figures, the PLY export and the interactive window.
VISIBLE_COLOR = (60, 110, 190)  # blue
PREDICTED_COLOR = (235, 120, 30)  # orange
TARGET_COLOR = (40, 160, 90)  # green
MASKED_COLOR = (205, 205, 205)  # light grey: "hidden from the encoder" in the input view
LAYER_COLORS = {
    LAYER_VISIBLE: VISIBLE_COLOR,
    LAYER_PREDICTED: PREDICTED_COLOR,
    LAYER_TARGET: TARGET_COLOR,
}


# The legend of a reconstruction figure: (label, colour), in the order the views introduce them.
RECONSTRUCTION_LEGEND = (
    ("visible (encoder input)", VISIBLE_COLOR),
    ("masked (hidden from the encoder)", MASKED_COLOR),
    ("reconstructed masked patches", PREDICTED_COLOR),
    ("true masked patches", TARGET_COLOR),
)


@dataclass
class View:
    """A titled point set to draw: points (N,3) float32, colors (N,3) uint8.

    highlight: optional (N,) bool; those points are drawn larger and on top (e.g. errors).
    """

    title: str
    points: np.ndarray
    colors: np.ndarray
    highlight: np.ndarray | None = None


@dataclass
class ShapeLayers:
    """The layers of one reconstructed shape, as numpy arrays in world coordinates.

    visible: (Gv*K,3); predicted and target: (Gm*K,3) with Gv + Gm = G; chamfer: the model's
    per-shape loss on the masked patches.
    """

    visible: np.ndarray
    predicted: np.ndarray
    target: np.ndarray
    chamfer: float
    num_groups: int
    num_masked: int

    def views(self) -> list[View]:
        """The three figure views: input (masked greyed), reconstruction, ground truth."""
        masked = self.num_masked
        return [
            View(
                f"input ({masked}/{self.num_groups} patches masked)",
                *_stack((self.visible, VISIBLE_COLOR), (self.target, MASKED_COLOR)),
            ),
            View(
                f"reconstruction (CD {self.chamfer:.4g})",
                *_stack((self.visible, VISIBLE_COLOR), (self.predicted, PREDICTED_COLOR)),
            ),
            View(
                "ground truth",
                *_stack((self.visible, VISIBLE_COLOR), (self.target, TARGET_COLOR)),
            ),
        ]

    def write_ply(self, path: str | Path) -> Path:
        """Write all three layers to one PLY with colours and the integer `layer` property."""
        from map3d.viz.ply import write_ply

        parts = [
            (self.visible, LAYER_VISIBLE),
            (self.predicted, LAYER_PREDICTED),
            (self.target, LAYER_TARGET),
        ]
        points, colors = _stack(*((p, LAYER_COLORS[i]) for p, i in parts))
        layer = np.concatenate([np.full(len(p), i, dtype=np.int32) for p, i in parts])
        return write_ply(path, points, colors, layer)


def split_reconstruction(reconstruction) -> list[ShapeLayers]:
    """Split a batched `map3d.models.points.Reconstruction` into one `ShapeLayers` per shape.

    Uses `mask (B,G)` (True = masked), `gt_patches (B,G,K,3)`, `pred_patches (B,G,K,3)` (world
    coordinates) and `chamfer (B,)`.
    """
    mask = to_numpy(reconstruction.mask).astype(bool)
    gt = to_numpy(reconstruction.gt_patches).astype(np.float32)
    pred = to_numpy(reconstruction.pred_patches).astype(np.float32)
    chamfer = to_numpy(reconstruction.chamfer).astype(np.float64).reshape(-1)
    if mask.ndim != 2:
        raise ValueError(f"reconstruction.mask must have shape (B,G), got {mask.shape}")
    if gt.ndim != 4 or gt.shape[:2] != mask.shape or gt.shape[-1] != 3:
        raise ValueError(
            f"reconstruction.gt_patches must have shape (B,G,K,3) with (B,G)={mask.shape}, "
            f"got {gt.shape}"
        )
    if pred.shape != gt.shape:
        raise ValueError(
            f"reconstruction.pred_patches must match gt_patches {gt.shape}, got {pred.shape}"
        )
    if chamfer.shape != (mask.shape[0],):
        raise ValueError(f"reconstruction.chamfer must have shape (B,), got {chamfer.shape}")
    return [
        ShapeLayers(
            visible=gt[b][~mask[b]].reshape(-1, 3),
            predicted=pred[b][mask[b]].reshape(-1, 3),
            target=gt[b][mask[b]].reshape(-1, 3),
            chamfer=float(chamfer[b]),
            num_groups=int(mask.shape[1]),
            num_masked=int(mask[b].sum()),
        )
        for b in range(mask.shape[0])
    ]


def _stack(*parts: tuple[np.ndarray, tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate point sets, giving each its constant colour: -> points (N,3), colors (N,3)."""
    points = np.concatenate([p.reshape(-1, 3) for p, _ in parts]).astype(np.float32)
    colors = np.concatenate(
        [np.tile(np.asarray(c, dtype=np.uint8), (len(p.reshape(-1, 3)), 1)) for p, c in parts]
    )
    return points, colors


def to_numpy(x) -> np.ndarray:
    """A numpy view of a numpy array or torch tensor (floats as float32), without importing torch."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if x.dtype.is_floating_point:
            x = x.float()
        x = x.numpy()
    return np.asarray(x)
