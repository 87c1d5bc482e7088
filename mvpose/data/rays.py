"""World rays through the token centres of a crop, for the 3D positional encodings of multi-view PPT.

Two ways to compute them (``dataset.rays`` in a pipeline):

- ``"exact"`` (mvpose's default): the token centres go back to the original image through the very
  affine map that cut the crop (UDP convention, :func:`mvpose.data.transforms.crop_affine`, flips
  included), the lens distortion is removed, and the ray is rotated into the world frame in float64
  (:meth:`mvpose.geometry.camera.Cameras.pixel_rays`).
- ``"official"``: the formula of the official multi-view PPT code (multi-view-PPT
  ``lib/dataset/joints_dataset.py`` ``create_3d_ray_coords`` and ``lib/models/multiview_ppt.py``):
  token centres ``grid * 16 + 8 - 0.5`` go back through the inverse of HRNet's crop map
  (``get_affine_transform``: the box of ``scale[0] * 200`` pixels maps onto ``[0, W]`` around the
  crop centre ``(W / 2, H / 2)``), are normalised by ``K`` WITHOUT undistortion, become world points
  ``R^T [x, y, 1] + T`` one millimetre in front of the camera centre ``T``, stored in float32; the
  model encodes ``normalize(point - T)``, computed in float32.

The two differ by a few hundredths to tenths of a degree on the real Human3.6M cameras (the lens
distortion, the half-pixel crop convention, and float32 cancellation); ``scripts/compare_rays.py``
measures it, ``scripts/compare_rays_heatmaps.py`` measures what it changes on a model's heatmaps, and
``docs/paper_recipe.md`` records the figures. A converted official multi-view checkpoint asks for
``"official"`` (:func:`mvpose.models.convert.convert_file`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mvpose.data import transforms as tf

__all__ = ["RAY_MODES", "official_crop_affine", "official_ray_points", "official_rays", "ray_angles_deg"]

RAY_MODES = ("exact", "official")


def official_crop_affine(center: np.ndarray, scale: np.ndarray, rotation: np.ndarray | float, input_hw: Sequence[int]) -> np.ndarray:
    """HRNet's crop map (``get_affine_transform``), original -> crop pixels, as the official PPT code crops.

    A similarity: ``x_crop = s Rot(-rotation) (x - center) + (W / 2, H / 2)`` with ``s = W / (scale[0] * 200)``
    for both axes (``scale[1]`` is not used), positive rotation counter-clockwise on screen as in
    :func:`mvpose.data.transforms.crop_affine`.

    Args:
        center: (..., 2) box centre, original pixels. scale: (..., 2) box size / 200.
        rotation: (...,) degrees. input_hw: crop ``(H, W)``.

    Returns:
        (..., 2, 3) float64.
    """
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    theta = np.deg2rad(np.asarray(rotation, dtype=np.float64))
    lead = np.broadcast_shapes(center.shape[:-1], scale.shape[:-1], theta.shape)
    H, W = (int(v) for v in input_hw)
    s = W / (scale[..., 0] * tf.PIXEL_STD)
    c, sn = np.cos(theta), np.sin(theta)
    linear = np.empty(lead + (2, 2))
    linear[..., 0, 0] = s * c
    linear[..., 0, 1] = s * sn
    linear[..., 1, 0] = -s * sn
    linear[..., 1, 1] = s * c
    offset = np.array([W / 2.0, H / 2.0]) - np.einsum("...ij,...j->...i", linear, center)
    return np.concatenate([linear, offset[..., None]], axis=-1)


def official_ray_points(
    K: np.ndarray, R: np.ndarray, C: np.ndarray, center: np.ndarray, scale: np.ndarray,
    rotation: np.ndarray | float, input_hw: Sequence[int], grid_hw: Sequence[int],
) -> np.ndarray:
    """The official ``coords_ray``: a world point (mm) on each token's ray, 1 mm in front of the centre.

    Args:
        K: (..., 3, 3) intrinsics (only fx, fy, cx, cy are used, as officially). R: (..., 3, 3)
            world-to-camera rotation. C: (..., 3) camera centre (the Human3.6M ``T``), mm.
        center, scale, rotation: the crop box (see :func:`official_crop_affine`).
        input_hw: crop ``(H, W)``. grid_hw: token grid ``(h, w)``; the official 16-pixel tokens give
            centres ``grid * 16 + 8 - 0.5`` (:func:`mvpose.data.transforms.token_centers`).

    Returns:
        (..., h * w, 3) float64 world points ``R^T [(x - cx) / fx, (y - cy) / fy, 1] + C``, no undistortion.
    """
    K = np.asarray(K, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    tokens = tf.token_centers(input_hw, grid_hw).numpy()  # (N, 2) crop pixels
    inverse = tf.invert_affine(official_crop_affine(center, scale, rotation, input_hw))
    pix = tf.affine_points(np.broadcast_to(tokens, inverse.shape[:-2] + tokens.shape), inverse)  # (..., N, 2)
    x = (pix[..., 0] - K[..., None, 0, 2]) / K[..., None, 0, 0]
    y = (pix[..., 1] - K[..., None, 1, 2]) / K[..., None, 1, 1]
    cam = np.stack([x, y, np.ones_like(x)], axis=-1)  # (..., N, 3)
    return cam @ R + C[..., None, :]  # R^T applied to row vectors


def official_rays(
    K: np.ndarray, R: np.ndarray, C: np.ndarray, center: np.ndarray, scale: np.ndarray,
    rotation: np.ndarray | float, input_hw: Sequence[int], grid_hw: Sequence[int],
) -> torch.Tensor:
    """The official 3D PE input: ``normalize(point - C)`` in float32, as multi-view PPT computes it.

    Same arguments as :func:`official_ray_points`. The points and centres are float32 tensors in the
    official code (``torch.from_numpy(coords_world).float()``, ``torch.Tensor(camera['T'].T)``), so the
    1 mm difference of two ~5 m vectors loses about 2e-4 of its length to rounding: this is kept.

    Returns:
        (..., h * w, 3) float32 unit vectors.
    """
    points = torch.from_numpy(official_ray_points(K, R, C, center, scale, rotation, input_hw, grid_hw)).float()
    centres = torch.from_numpy(np.asarray(C, dtype=np.float64)).float()[..., None, :]
    return torch.nn.functional.normalize(points - centres, dim=-1)


def ray_angles_deg(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    """Angles (degrees) between ray directions ``a`` and ``b`` (..., 3), computed in float64 (atan2, exact near 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1)))
