"""3D PE rays: the official multi-view PPT formula (lib/dataset/joints_dataset.py create_3d_ray_coords,
lib/models/multiview_ppt.py) against hand-computed values, and the dataset option ``rays``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mvpose.data import build_dataset
from mvpose.data.rays import official_crop_affine, official_ray_points, official_rays, ray_angles_deg

# A known camera: f 1000 px, principal point (500, 400), world-to-camera R = rotation of 90 deg about z
# (camera x = -world y, camera y = world x), centre C = (100, 200, 300) mm.
K = np.array([[1000.0, 0.0, 500.0], [0.0, 1000.0, 400.0], [0.0, 0.0, 1.0]])
R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
C = np.array([100.0, 200.0, 300.0])
CENTER, SCALE = np.array([500.0, 400.0]), np.array([2.56, 3.0])  # box 512 px wide: s = 256 / 512 = 0.5


def test_official_rays_by_hand():
    points = official_ray_points(K, R, C, CENTER, SCALE, 0.0, (256, 256), (16, 16))
    assert points.shape == (256, 3)
    # Token (0, 0): crop centre 7.5 px -> original 500 + (7.5 - 128) / 0.5 = 259 (x), 400 - 241 = 159 (y)
    # (scale[1] is not used) -> normalised (-0.241, -0.241, 1) -> world R^T: (-0.241, 0.241, 1) + C.
    np.testing.assert_allclose(points[0], [100.0 - 0.241, 200.0 + 0.241, 301.0], atol=1e-12)
    # Last token (15, 15): 247.5 px -> 500 + 239 = 739, 400 + 239 = 639 -> (0.239, 0.239, 1) -> (0.239, -0.239, 1).
    np.testing.assert_allclose(points[-1], [100.0 + 0.239, 200.0 - 0.239, 301.0], atol=1e-12)
    # Token (row 0, column 1): x 23.5 px -> 500 + (23.5 - 128) * 2 = 291 -> (-0.209, -0.241, 1) -> (-0.241, 0.209, 1).
    np.testing.assert_allclose(points[1], [100.0 - 0.241, 200.0 + 0.209, 301.0], atol=1e-12)
    rays = official_rays(K, R, C, CENTER, SCALE, 0.0, (256, 256), (16, 16))
    assert rays.dtype == torch.float32
    expected = np.array([-0.241, 0.241, 1.0]) / np.sqrt(1.0 + 2 * 0.241**2)
    np.testing.assert_allclose(rays[0].numpy(), expected, atol=2e-4)  # float32 cancellation, as officially
    # Rotated crop, 90 deg: crop (7.5, 7.5) is 120.5 px up-left of the centre -> original 241 px right, 241 up.
    rot = official_ray_points(K, R, C, CENTER, SCALE, 90.0, (256, 256), (16, 16))
    np.testing.assert_allclose(rot[0], C + R.T @ np.array([0.241, -0.241, 1.0]), atol=1e-12)


def _hrnet_three_points(center, scale, rot_deg, size):
    """HRNet's construction: centre, a point half a box width above it (turned by rot), and a third
    point a quarter turn from the second, mapped onto the crop's centre, top-centre and so on."""
    src_w, dst_w, dst_h = scale[0] * 200.0, size[1], size[0]
    r = np.deg2rad(rot_deg)
    src_dir = np.array([0.5 * src_w * np.sin(r), -0.5 * src_w * np.cos(r)])
    dst_dir = np.array([0.0, -0.5 * dst_w])
    third = lambda a, b: b + np.array([-(a - b)[1], (a - b)[0]])  # noqa: E731
    src = np.stack([center, center + src_dir, third(center, center + src_dir)]).astype(np.float32)
    d0 = np.array([dst_w * 0.5, dst_h * 0.5])
    dst = np.stack([d0, d0 + dst_dir, third(d0, d0 + dst_dir)]).astype(np.float32)
    return cv2.getAffineTransform(src, dst)


@pytest.mark.parametrize("rot", [0.0, 30.0, -75.0])
def test_official_crop_affine_is_hrnets_three_point_map(rot):
    ours = official_crop_affine(CENTER, SCALE, rot, (256, 256))
    np.testing.assert_allclose(ours, _hrnet_three_points(CENTER, SCALE, rot, (256, 256)), atol=1e-4)


def test_dataset_rays_option(h36m_root):
    common = dict(views=[0, 2], augment=False, frame_stride=1, input_hw=(64, 64), heatmap_hw=(16, 16), token_grid=(4, 4))
    exact = build_dataset("h36m", h36m_root, "train", **common)
    official = build_dataset("h36m", h36m_root, "train", rays="official", **common)
    a, b = exact[0], official[0]
    g = official.groups[0]
    R = np.stack([v.R for v in g.views])
    C = -np.einsum("vji,vj->vi", R, np.stack([v.t for v in g.views]))
    expected = official_rays(np.stack([v.K for v in g.views]), R, C, b["center"].double().numpy(), b["scale"].double().numpy(),
                             0.0, (64, 64), (4, 4))
    assert torch.equal(b["rays"], expected)
    angles = ray_angles_deg(a["rays"], b["rays"])
    assert 1e-3 < angles.max() < 1.0  # lens distortion and crop convention: a small, real difference
    assert torch.equal(a["image"], b["image"])  # the option changes the rays only
    with pytest.raises(ValueError, match="never flips"):
        build_dataset("h36m", h36m_root, "train", rays="official", augment=True, augment_config={"flip_prob": 0.5}, **{
            k: v for k, v in common.items() if k != "augment"})
    with pytest.raises(ValueError, match="rays must be one of"):
        build_dataset("h36m", h36m_root, "train", rays="sloppy", **common)
