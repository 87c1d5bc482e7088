"""Crops, geometric and photometric augmentation, image normalisation.

Pixel convention (UDP, "unbiased data processing"): a pixel's integer coordinate is its centre, so an
image of width ``W`` spans ``[-0.5, W - 0.5]`` and its pixel centres ``[0, W - 1]``. A crop maps the box
of ``scale * PIXEL_STD`` original pixels around ``center`` onto the crop's pixel-centre span
``[0, W - 1] x [0, H - 1]``, and a horizontal flip of the crop is ``x -> (W - 1) - x``. With this
convention a flip, a resize to the heatmap (``(input - 1) / (heatmap - 1)``) and their inverses are
exact, with no half-pixel bias.

Every geometric step is one 2x3 affine map per view (original -> crop pixels), the map given to
``cv2.warpAffine``. The crop camera follows exactly from it (``Cameras.crop``), so joints, images,
cameras and token rays stay consistent under any augmentation.

Shapes: ``center, scale: (..., 2)``, ``rotation: (...,)`` degrees, ``affine: (..., 2, 3)``,
``points: (..., N, 2)``. Sizes are given as ``(height, width)`` and named ``*_hw``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

__all__ = [
    "PIXEL_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "ViewAugmentation",
    "token_centers",
    "box_to_center_scale",
    "crop_affine",
    "scaled_rotation_affine",
    "hflip_affine",
    "invert_affine",
    "affine_points",
    "half_body_center_scale",
    "lower_body_mask",
    "sample_augmentation",
    "warp_image",
    "color_jitter",
    "image_to_tensor",
]

# Box sizes are stored divided by 200 ("scale"), as in the H36M-Toolbox / HRNet annotations.
PIXEL_STD = 200.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Joints counted as lower body for half-body augmentation, by canonical name (mvpose.skeletons).
_LOWER_BODY_WORDS = ("pelvis", "hip", "knee", "ankle", "heel", "toe", "foot")


def token_centers(input_hw: Sequence[int], grid_hw: Sequence[int]) -> torch.Tensor:
    """Pixel centres of the cells of a uniform token grid over the input crop.

    Cell ``(i, j)`` of a ``h x w`` grid over an ``H x W`` crop has its centre at
    ``((j + 0.5) * W / w - 0.5, (i + 0.5) * H / h - 0.5)`` crop pixels.

    Returns:
        (h * w, 2) float64 ``(x, y)`` in row-major token order (row ``i`` outer, column ``j`` inner).
    """
    H, W = (int(v) for v in input_hw)
    h, w = (int(v) for v in grid_hw)
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * H / h - 0.5
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * W / w - 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(-1, 2)


def box_to_center_scale(
    box: np.ndarray, aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Box ``(x, y, w, h)`` -> crop ``center`` and ``scale`` (box size / PIXEL_STD).

    The box is widened or heightened to the crop's ``aspect_ratio`` (width / height), then enlarged by
    ``padding`` so that limbs near the box edge stay inside the crop (HRNet's convention).

    Args:
        box: (..., 4) ``x, y, w, h`` in pixels.

    Returns:
        center (..., 2), scale (..., 2).
    """
    box = np.asarray(box, dtype=np.float64)
    x, y, w, h = np.moveaxis(box, -1, 0)
    center = np.stack([x + 0.5 * w, y + 0.5 * h], axis=-1)
    w = np.where(w > aspect_ratio * h, w, h * aspect_ratio)
    h = w / aspect_ratio
    scale = np.stack([w, h], axis=-1) / PIXEL_STD * padding
    return center, scale


def crop_affine(
    center: np.ndarray, scale: np.ndarray, rotation: np.ndarray | float, output_hw: Sequence[int]
) -> np.ndarray:
    """Affine maps original -> crop pixels (UDP convention, see module doc).

    The box of ``scale * PIXEL_STD`` pixels around ``center`` fills the crop's pixel-centre span; a
    positive ``rotation`` (degrees) turns the image content counter-clockwise on screen.

    Args:
        center: (..., 2) box centre in original pixels.
        scale: (..., 2) box size / PIXEL_STD.
        rotation: (...,) degrees.
        output_hw: crop ``(H, W)``.

    Returns:
        (..., 2, 3) float64.
    """
    scale = np.asarray(scale, dtype=np.float64)
    H, W = (int(v) for v in output_hw)
    sx = (W - 1.0) / (scale[..., 0] * PIXEL_STD)
    sy = (H - 1.0) / (scale[..., 1] * PIXEL_STD)
    return scaled_rotation_affine(center, rotation, sx, sy, ((W - 1.0) / 2.0, (H - 1.0) / 2.0))


def scaled_rotation_affine(
    center: np.ndarray, rotation: np.ndarray | float, sx: np.ndarray | float, sy: np.ndarray | float,
    crop_center: Sequence[float],
) -> np.ndarray:
    """Affine maps ``x_crop = diag(sx, sy) @ Rot(rotation) @ (x - center) + crop_center`` (y pointing down, a
    positive rotation in degrees turns the content counter-clockwise on screen): the crop maps of
    :func:`crop_affine` (UDP) and :func:`mvpose.data.rays.official_crop_affine` (HRNet), which differ only in
    the scales and the crop centre.

    Args:
        center: (..., 2) box centre, original pixels. rotation: (...,) degrees.
        sx, sy: (...,) crop pixels per original pixel along x and y. crop_center: ``(x, y)`` crop pixels.

    Returns:
        (..., 2, 3) float64.
    """
    center = np.asarray(center, dtype=np.float64)
    theta = np.deg2rad(np.asarray(rotation, dtype=np.float64))
    lead = np.broadcast_shapes(center.shape[:-1], np.shape(sx), np.shape(sy), theta.shape)
    c, s = np.cos(theta), np.sin(theta)
    linear = np.empty(lead + (2, 2))
    linear[..., 0, 0] = sx * c
    linear[..., 0, 1] = sx * s
    linear[..., 1, 0] = -sy * s
    linear[..., 1, 1] = sy * c
    offset = np.array(crop_center, dtype=np.float64) - np.einsum("...ij,...j->...i", linear, center)
    return np.concatenate([linear, offset[..., None]], axis=-1)


def hflip_affine(affine: np.ndarray, width: int) -> np.ndarray:
    """Compose a horizontal flip of the crop (``x -> width - 1 - x``) after ``affine`` (..., 2, 3)."""
    out = np.array(affine, dtype=np.float64, copy=True)
    out[..., 0, :] *= -1.0
    out[..., 0, 2] += width - 1.0
    return out


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of affine maps (..., 2, 3) (crop -> original pixels)."""
    affine = np.asarray(affine, dtype=np.float64)
    inv = np.linalg.inv(affine[..., :2])
    return np.concatenate([inv, -np.einsum("...ij,...j->...i", inv, affine[..., 2])[..., None]], axis=-1)


def affine_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply affine maps ``(..., 2, 3)`` to points ``(..., N, 2)``."""
    points = np.asarray(points, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    return points @ np.swapaxes(affine[..., :2], -1, -2) + affine[..., None, :, 2]


def lower_body_mask(canonical_names: Sequence[str]) -> np.ndarray:
    """(J,) bool, True for pelvis, hips, legs and feet (by canonical joint name)."""
    return np.array([any(w in n for w in _LOWER_BODY_WORDS) for n in canonical_names], dtype=bool)


def half_body_center_scale(
    joints: np.ndarray,
    visible: np.ndarray,
    lower_mask: np.ndarray,
    use_upper: bool,
    aspect_ratio: float,
    padding: float = 1.5,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop box around the visible upper (or lower) body joints of one view.

    Falls back to the other half when the chosen one has fewer than two visible joints, and returns
    ``None`` when neither has two (keep the full-body box then).

    Args:
        joints: (J, 2) original pixels. visible: (J,) bool. lower_mask: (J,) bool.

    Returns:
        center (2,), scale (2,), or None.
    """
    halves = [~lower_mask & visible, lower_mask & visible]
    if not use_upper:
        halves.reverse()
    chosen = next((m for m in halves if m.sum() >= 2), None)
    if chosen is None:
        return None
    pts = joints[chosen]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
    box[2:] = np.maximum(box[2:], 1.0)
    return box_to_center_scale(box, aspect_ratio, padding)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (defaults follow the HRNet / Cross-View-Fusion configs).

    Attributes:
        scale_factor: box scale multiplied by ``clip(1 + N(0, sf), 1 - sf, 1 + sf)``.
        rotation_factor: rotation ``clip(N(0, rf), -2 rf, 2 rf)`` degrees, applied with ``rotation_prob``.
        flip_prob: probability of a horizontal flip (one decision for all views of a sample).
        half_body_prob: probability, per view, of cropping around the upper or lower body only.
        half_body_min_joints: a view needs more visible joints than this for half-body crops.
        color_jitter: brightness / contrast / saturation factors drawn from ``[1 - cj, 1 + cj]``.
    """

    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    color_jitter: float = 0.2


@dataclass
class ViewAugmentation:
    """Random draws for the V views of one sample (all arrays have leading dim V)."""

    scale: np.ndarray  # (V,) multiplier of the box scale
    rotation: np.ndarray  # (V,) degrees
    half_body: np.ndarray  # (V,) bool
    half_body_upper: np.ndarray  # (V,) bool
    jitter: np.ndarray  # (V, 3) brightness, contrast, saturation factors
    flip: bool

    @classmethod
    def identity(cls, num_views: int) -> "ViewAugmentation":
        return cls(
            np.ones(num_views), np.zeros(num_views), np.zeros(num_views, bool),
            np.ones(num_views, bool), np.ones((num_views, 3)), False,
        )


def sample_augmentation(rng: np.random.Generator, cfg: AugmentConfig, num_views: int) -> ViewAugmentation:
    """Draw the augmentation of one sample. Same ``rng`` state -> same draws (deterministic)."""
    V = num_views
    sf, rf = cfg.scale_factor, cfg.rotation_factor
    scale = np.clip(rng.standard_normal(V) * sf + 1.0, 1.0 - sf, 1.0 + sf)
    rotation = np.clip(rng.standard_normal(V) * rf, -2.0 * rf, 2.0 * rf)
    rotation = np.where(rng.random(V) < cfg.rotation_prob, rotation, 0.0)
    half_body = rng.random(V) < cfg.half_body_prob
    upper = rng.random(V) < 0.5
    cj = cfg.color_jitter
    jitter = rng.uniform(1.0 - cj, 1.0 + cj, size=(V, 3))
    flip = bool(rng.random() < cfg.flip_prob)
    return ViewAugmentation(scale, rotation, half_body, upper, jitter, flip)


def warp_image(image: np.ndarray, affine: np.ndarray, output_hw: Sequence[int]) -> np.ndarray:
    """Warp one image (H0, W0, C) with a 2x3 affine to ``output_hw``, bilinear, black border."""
    H, W = (int(v) for v in output_hw)
    return cv2.warpAffine(image, np.asarray(affine, dtype=np.float64), (W, H), flags=cv2.INTER_LINEAR)


def color_jitter(image: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Brightness, contrast and saturation jitter of a uint8 image (H, W, 3).

    Args:
        factors: (3,) multipliers; 1 leaves the image unchanged.
    """
    brightness, contrast, saturation = (float(f) for f in factors)
    img = image.astype(np.float32) * brightness
    # BGR luma weights (ITU-R 601), as the image comes from cv2.imread.
    gray = img @ np.array([0.114, 0.587, 0.299], dtype=np.float32)
    img = (img - gray.mean()) * contrast + gray.mean()
    gray = img @ np.array([0.114, 0.587, 0.299], dtype=np.float32)
    img = (img - gray[..., None]) * saturation + gray[..., None]
    return np.clip(np.rint(img), 0.0, 255.0).astype(np.uint8)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 BGR image(s) (..., H, W, 3) -> (..., 3, H, W) float32 RGB normalised with the ImageNet statistics.

    Several images at once (``np.stack`` of the views) give the same values as one at a time, with
    one set of tensor operations instead of one per image.
    """
    rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).movedim(-1, -3).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((rgb - mean) / std).contiguous()
