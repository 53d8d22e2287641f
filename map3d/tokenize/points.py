"""Point grouping: FPS centers + kNN patches, centered, then serialized along a curve."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from map3d import ops
from map3d.errors import OptionError
from map3d.tokenize.serialization import SERIALIZATIONS, serialize
from map3d.tokenize.tokens import PatchTokens

FPS_RULES = ("map3d", "release")
RELEASE_FPS_MIN_NORM2 = 1e-3  # pointnet2_ops: `if (mag <= 1e-3) continue;`


def check_point_batch(points: Tensor, min_points: int, *, check_finite: bool | None = None) -> None:
    """Raise ValueError unless `points` is (B,N,3) floating with N >= min_points and finite.

    `check_finite`: True always checks, False never, None (default) checks CPU tensors only,
    because on an accelerator the check is a host sync.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B,N,3), got shape {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"points must be floating point, got dtype {points.dtype}")
    if points.shape[0] == 0:
        raise ValueError(f"points has an empty batch: shape {tuple(points.shape)}")
    if points.shape[1] < min_points:  # the data's point count does not fit the model's config
        raise OptionError(
            f"points has N={points.shape[1]} points per cloud (shape {tuple(points.shape)}), "
            f"fewer than the {min_points} needed (max of group_size and num_groups; see "
            "data.npoints and model.overrides)"
        )
    if check_finite is None:
        check_finite = points.device.type == "cpu"
    if check_finite and not bool(torch.isfinite(points).all()):
        raise ValueError(f"points of shape {tuple(points.shape)} contain NaN or Inf coordinates")


class PointGrouper(nn.Module):
    """(B,N,3) points -> `PatchTokens` of G patches of K points, in serialized order.

    Centers: farthest point sampling (`map3d.ops.fps`); patches: the K nearest points of each
    center (`map3d.ops.knn`), expressed relative to it; then the G centers are ordered along
    `serialization` (see `map3d.tokenize.serialization`). No parameters.

    fps_rule: "map3d" (any point may become a center) or "release" (as pointnet2_ops: after the
    first center, points with |p|^2 <= 1e-3 are never picked; runs the reference FPS).
    """

    def __init__(
        self,
        num_groups: int,
        group_size: int,
        serialization: str = "hilbert",
        *,
        grid_depth: int = 10,
        random_start: bool = False,
        check_finite: bool | None = None,
        fps_rule: str = "map3d",
    ):
        super().__init__()
        if num_groups < 1 or group_size < 1:
            raise ValueError(
                f"num_groups and group_size must be >= 1, got {num_groups} and {group_size}"
            )
        if serialization not in SERIALIZATIONS:
            raise ValueError(
                f"unknown serialization {serialization!r}; choose one of {SERIALIZATIONS}"
            )
        self.num_groups = num_groups
        self.group_size = group_size
        self.serialization = serialization
        self.grid_depth = grid_depth
        self.random_start = random_start
        self.check_finite = check_finite
        if fps_rule not in FPS_RULES:
            raise ValueError(f"fps_rule={fps_rule!r} must be one of {FPS_RULES}")
        self.fps_rule = fps_rule

    def forward(self, points: Tensor, generator: torch.Generator | None = None) -> PatchTokens:
        check_point_batch(
            points, max(self.group_size, self.num_groups), check_finite=self.check_finite
        )
        if self.fps_rule == "release":
            from map3d.ops.reference.geometry import fps

            near_origin = points.detach().square().sum(-1) <= RELEASE_FPS_MIN_NORM2
            center_idx = fps(
                points,
                self.num_groups,
                random_start=self.random_start,
                generator=generator,
                exclude=near_origin,
            )
        else:
            center_idx = ops.fps(
                points, self.num_groups, random_start=self.random_start, generator=generator
            )
        centers = ops.gather(points, center_idx)  # (B,G,3)
        order, inverse = serialize(centers, self.serialization, self.grid_depth)
        centers = ops.gather(centers, order)
        _, neighbor_idx = ops.knn(centers, points, self.group_size)  # (B,G,K)
        patches = ops.gather(points, neighbor_idx) - centers.unsqueeze(2)  # (B,G,K,3)
        return PatchTokens(patches=patches, centers=centers, order=order, inverse=inverse)

    def extra_repr(self) -> str:
        return (
            f"num_groups={self.num_groups}, group_size={self.group_size}, "
            f"serialization={self.serialization!r}"
        )
