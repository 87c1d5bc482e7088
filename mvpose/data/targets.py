"""Training targets: UDP Gaussian heatmaps and SimCC 1D labels.

Coordinates follow the UDP pixel convention of :mod:`mvpose.data.transforms`: a crop point ``x`` maps to
the heatmap point ``x * (Wh - 1) / (W - 1)`` (and likewise in ``y``), so both pixel-centre spans match
exactly. SimCC (for HRPVT) places bin ``i`` of a ``k``-times finer 1D label at crop coordinate ``i / k``.

Shapes: ``joints: (..., J, 2)`` crop pixels, ``weight: (..., J)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = [
    "crop_to_heatmap",
    "heatmap_to_crop",
    "heatmap_targets",
    "simcc_targets",
]


def _scale(input_hw: Sequence[int], heatmap_hw: Sequence[int]) -> torch.Tensor:
    """(2,) ``(x, y)`` factor heatmap / crop under UDP."""
    H, W = input_hw
    Hh, Wh = heatmap_hw
    return torch.tensor([(Wh - 1.0) / (W - 1.0), (Hh - 1.0) / (H - 1.0)], dtype=torch.float64)


def crop_to_heatmap(points: torch.Tensor, input_hw: Sequence[int], heatmap_hw: Sequence[int]) -> torch.Tensor:
    """Crop pixels (..., 2) -> heatmap pixels (..., 2), UDP scaling ``(heatmap - 1) / (input - 1)``."""
    return points * _scale(input_hw, heatmap_hw).to(points)


def heatmap_to_crop(points: torch.Tensor, input_hw: Sequence[int], heatmap_hw: Sequence[int]) -> torch.Tensor:
    """Heatmap pixels (..., 2) -> crop pixels (..., 2); inverse of :func:`crop_to_heatmap`."""
    return points / _scale(input_hw, heatmap_hw).to(points)


def heatmap_targets(
    joints: torch.Tensor,
    weight: torch.Tensor,
    input_hw: Sequence[int],
    heatmap_hw: Sequence[int],
    sigma: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased (UDP) Gaussian heatmaps.

    Each Gaussian is centred at the joint's exact sub-pixel heatmap position and cut to a
    ``(6 sigma + 1)`` window around its nearest pixel, as in the UDP reference encoding. A joint
    whose window misses the heatmap gets weight 0.

    Args:
        joints: (..., J, 2) crop pixels.
        weight: (..., J) visibility (0/1).
        input_hw: crop ``(H, W)``. heatmap_hw: heatmap ``(Hh, Wh)``.
        sigma: Gaussian standard deviation in heatmap pixels.

    Returns:
        heatmaps (..., J, Hh, Wh) float32, weight (..., J) float32.
    """
    Hh, Wh = (int(v) for v in heatmap_hw)
    mu = crop_to_heatmap(joints.to(torch.float64), input_hw, heatmap_hw)
    radius = 3.0 * sigma
    nearest = torch.floor(mu + 0.5)
    lo, hi = nearest - radius, nearest + radius + 1.0
    inside = (lo[..., 0] < Wh) & (lo[..., 1] < Hh) & (hi[..., 0] >= 0) & (hi[..., 1] >= 0)
    weight = weight.to(torch.float64) * inside
    xs = torch.arange(Wh, dtype=torch.float64)
    ys = torch.arange(Hh, dtype=torch.float64)
    dx = xs - mu[..., 0:1]  # (..., J, Wh)
    dy = ys - mu[..., 1:2]  # (..., J, Hh)
    gx = torch.exp(-(dx**2) / (2.0 * sigma**2)) * ((xs - nearest[..., 0:1]).abs() <= radius)
    gy = torch.exp(-(dy**2) / (2.0 * sigma**2)) * ((ys - nearest[..., 1:2]).abs() <= radius)
    heat = gy[..., :, None] * gx[..., None, :] * (weight > 0)[..., None, None]
    return heat.float(), weight.float()


def simcc_targets(
    joints: torch.Tensor,
    weight: torch.Tensor,
    input_hw: Sequence[int],
    split_ratio: float = 2.0,
    sigma: float = 6.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimCC 1D Gaussian labels on x and y (split ratio ``k``), normalised to unit area.

    Args:
        joints: (..., J, 2) crop pixels.
        weight: (..., J) visibility (0/1).
        input_hw: crop ``(H, W)``.
        split_ratio: bins per crop pixel ``k``.
        sigma: standard deviation in label bins.

    Returns:
        target_x (..., J, W k), target_y (..., J, H k), weight (..., J), all float32. Joints outside
        the label range get weight 0.
    """
    H, W = (int(v) for v in input_hw)
    nx, ny = int(round(W * split_ratio)), int(round(H * split_ratio))
    mu = joints.to(torch.float64) * split_ratio
    inside = (mu[..., 0] >= 0) & (mu[..., 0] < nx) & (mu[..., 1] >= 0) & (mu[..., 1] < ny)
    weight = weight.to(torch.float64) * inside
    norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    bx = torch.arange(nx, dtype=torch.float64)
    by = torch.arange(ny, dtype=torch.float64)
    on = (weight > 0)[..., None]
    tx = torch.exp(-((bx - mu[..., 0:1]) ** 2) / (2.0 * sigma**2)) * norm * on
    ty = torch.exp(-((by - mu[..., 1:2]) ** 2) / (2.0 * sigma**2)) * norm * on
    return tx.float(), ty.float(), weight.float()
