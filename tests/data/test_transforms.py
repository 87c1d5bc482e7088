"""Crops, augmentation, crop cameras, token rays and training targets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import h36m_image_name

from mvpose.data import collate, sample_cameras
from mvpose.data import targets as tg
from mvpose.data import transforms as tf
from mvpose.data.h36m import H36MDataset

STRONG = tf.AugmentConfig(scale_factor=0.3, rotation_factor=40.0, rotation_prob=1.0, flip_prob=0.5, half_body_prob=0.3, color_jitter=0.3)


def _cams(sample, crop=True):
    return sample_cameras({k: v.double() for k, v in sample.items() if torch.is_tensor(v) and v.is_floating_point()}, crop=crop)


# --------------------------------------------------------------------------- geometry of crops
def test_token_centers_formula():
    c = tf.token_centers((256, 256), (16, 16))
    assert c.shape == (256, 2)
    assert c[0].tolist() == [7.5, 7.5] and c[1].tolist() == [23.5, 7.5] and c[16].tolist() == [7.5, 23.5]
    assert c[-1].tolist() == [247.5, 247.5]
    c = tf.token_centers((64, 128), (2, 4))  # H, W = 64, 128; cells 32 x 32
    assert c.tolist() == [[15.5, 15.5], [47.5, 15.5], [79.5, 15.5], [111.5, 15.5], [15.5, 47.5], [47.5, 47.5], [79.5, 47.5], [111.5, 47.5]]


def test_crop_affine_udp_box_rotation_and_flip():
    center, scale = np.array([400.0, 300.0]), np.array([2.0, 1.5])  # box 400 x 300 px
    A = tf.crop_affine(center, scale, 0.0, (192, 256))  # H, W
    corners = np.array([[200.0, 150.0], [600.0, 450.0], [400.0, 300.0]])
    np.testing.assert_allclose(tf.affine_points(corners, A), [[0, 0], [255, 191], [127.5, 95.5]], atol=1e-9)
    # +90 degrees turns content counter-clockwise: a point right of the centre goes above it.
    R = tf.crop_affine(center, np.array([2.0, 2.0]), 90.0, (256, 256))
    p = tf.affine_points(np.array([[500.0, 300.0]]), R)[0]
    np.testing.assert_allclose(p, [127.5, 127.5 - 100 * 255 / 400], atol=1e-9)
    F = tf.hflip_affine(A, 256)
    np.testing.assert_allclose(tf.affine_points(corners, F)[:, 0], 255 - tf.affine_points(corners, A)[:, 0], atol=1e-9)
    np.testing.assert_allclose(tf.affine_points(tf.affine_points(corners, F), tf.invert_affine(F)), corners, atol=1e-9)


def test_box_to_center_scale_keeps_aspect():
    c, s = tf.box_to_center_scale(np.array([[10, 20, 100, 50], [0, 0, 30, 120]]), aspect_ratio=0.75, padding=1.25)
    np.testing.assert_allclose(c, [[60, 45], [15, 60]])
    np.testing.assert_allclose(s[:, 0] / s[:, 1], 0.75)
    np.testing.assert_allclose(s * 200, [[125, 125 / 0.75], [120 * 0.75 * 1.25, 150]])


def test_half_body_box_covers_chosen_half():
    joints = np.array([[0.0, 0.0], [10.0, 100.0], [20.0, 200.0], [-50.0, -40.0], [60.0, -30.0]])
    lower = np.array([False, True, True, False, False])
    c, s = tf.half_body_center_scale(joints, np.ones(5, bool), lower, use_upper=True, aspect_ratio=1.0)
    np.testing.assert_allclose(c, [5.0, -20.0])
    assert s[0] * 200 == pytest.approx(110 * 1.5)
    c, _ = tf.half_body_center_scale(joints, np.array([1, 1, 1, 0, 0], bool), lower, True, 1.0)
    np.testing.assert_allclose(c, [15.0, 150.0])  # upper half has one visible joint: falls back to the lower


def test_color_jitter_identity_and_normalisation():
    img = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    assert np.array_equal(tf.color_jitter(img, (1.0, 1.0, 1.0)), img)
    darker = tf.color_jitter(img, (0.5, 1.0, 1.0)).astype(float)
    np.testing.assert_allclose(darker, np.rint(img * 0.5), atol=1.0)
    gray = tf.color_jitter(img, (1.0, 1.0, 0.0))
    assert np.abs(gray.astype(int) - gray[..., :1]).max() <= 1  # no saturation: grey levels
    t = tf.image_to_tensor(img)
    assert t.shape == (3, 8, 9)
    expected_r = (img[..., 2] / 255.0 - tf.IMAGENET_MEAN[0]) / tf.IMAGENET_STD[0]
    np.testing.assert_allclose(t[0].numpy(), expected_r, atol=1e-5)


# --------------------------------------------------------------------------- crop cameras under augmentation
def test_crop_camera_consistent_under_augmentation(h36m_root):
    ds = H36MDataset(h36m_root, "train", frame_stride=1, augment=True, augment_config=STRONG, seed=7)
    flip = np.asarray(ds.skeleton.flip_index)
    seen = set()
    for idx in range(8):
        sample = ds[idx]
        group = ds.groups[idx]
        flipped = bool(sample["flipped"])
        seen.add(flipped)
        perm = flip if flipped else np.arange(17)
        cams = _cams(sample)
        raw_3d = torch.from_numpy(group.joints_3d).expand(4, -1, -1)
        # Projecting the (unpermuted) ground truth with the crop camera lands on the transformed 2D
        # joints, on the flipped-pair channels after a flip.
        proj = cams.project(raw_3d)[:, perm]
        assert (proj - sample["joints_2d_crop"].double()).abs().max() < 0.02
        assert (cams.project(sample["joints_3d"].double().expand(4, -1, -1)) - sample["joints_2d_crop"].double()).abs().max() < 0.02
        # The affine maps the original labels onto the crop labels.
        orig = np.stack([v.joints_2d for v in group.views])[:, perm]
        np.testing.assert_allclose(tf.affine_points(orig, sample["affine"].double().numpy()), sample["joints_2d_crop"].numpy(), atol=0.02)
        # The crop camera is [A; 0 0 1] K of the original camera.
        A3 = torch.cat([sample["affine"].double(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(4, 1, 3)], 1)
        torch.testing.assert_close(A3 @ sample["K_orig"].double(), sample["K"].double(), rtol=1e-5, atol=1e-3)
        # Token rays: unit, from the camera centre through the token centres of the crop.
        rays = sample["rays"].double()
        torch.testing.assert_close(rays.norm(dim=-1), torch.ones(4, 256, dtype=torch.float64), atol=1e-5, rtol=0)
        points = cams.centers[:, None, :] + 3000.0 * rays
        tokens = tf.token_centers((256, 256), (16, 16)).expand(4, -1, -1)
        assert (cams.project(points) - tokens).abs().max() < 0.05
    assert seen == {True, False}


def test_image_content_follows_affine_and_flip(h36m_small):
    """A white disc drawn at the left wrist in every original image appears at the crop label."""
    root = h36m_small()
    ds = H36MDataset(root, "train", frame_stride=1, augment=True, augment_config=STRONG, seed=3)
    lwri, rwri = ds.skeleton.index("lwri"), ds.skeleton.index("rwri")
    for view in ds.groups[0].views:
        img = cv2.imread(str(view.image))
        img[:] = 0
        cv2.circle(img, tuple(int(round(v)) for v in view.joints_2d[lwri]), 9, (255, 255, 255), -1, lineType=cv2.LINE_AA)
        cv2.imwrite(str(view.image), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
        view.joints_2d[lwri] = np.round(view.joints_2d[lwri])  # the disc centre
    flips = set()
    for epoch in range(10):
        ds.set_epoch(epoch)
        sample = ds[0]
        channel = rwri if sample["flipped"] else lwri
        flips.add(bool(sample["flipped"]))
        for v in range(4):
            if not sample["target_weight"][v, channel]:
                continue
            gray = sample["image"][v].mean(0).numpy()
            mask = gray > gray.min() + 0.5 * (gray.max() - gray.min())
            ys, xs = np.nonzero(mask)
            w = gray[ys, xs] - gray.min()
            centroid = np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()
            np.testing.assert_allclose(centroid, sample["joints_2d_crop"][v, channel].numpy(), atol=0.75)
    assert flips == {True, False}


def test_augmentation_is_deterministic(h36m_root):
    a = H36MDataset(h36m_root, "train", frame_stride=1, augment=True, seed=5)
    b = H36MDataset(h36m_root, "train", frame_stride=1, augment=True, seed=5)
    s1, s2 = a[3], b[3]
    assert torch.equal(s1["image"], s2["image"]) and torch.equal(s1["affine"], s2["affine"])
    b.set_epoch(1)
    assert not torch.equal(b[3]["affine"], s1["affine"])
    c = H36MDataset(h36m_root, "train", frame_stride=1, augment=True, seed=6)
    assert not torch.equal(c[3]["affine"], s1["affine"])
    # Worker processes draw the same augmentation as the main process.
    loader = torch.utils.data.DataLoader(a, batch_size=2, num_workers=2, collate_fn=collate)
    batch = next(iter(loader))
    torch.testing.assert_close(batch["affine"][1], a[1]["affine"])


def test_no_augmentation_for_evaluation(h36m_root):
    ds = H36MDataset(h36m_root, "validation", frame_stride=1)
    sample = ds[2]
    rec = ds.groups[2].views[0]
    assert not sample["flipped"] and sample["rotation"].abs().max() == 0
    np.testing.assert_allclose(sample["affine"][0].numpy(), tf.crop_affine(rec.center, rec.scale, 0.0, (256, 256)), rtol=1e-6, atol=1e-4)


def test_collate_and_batch_cameras(h36m_root):
    ds = H36MDataset(h36m_root, "train", views=3, target_type="both", token_grid=(8, 8))
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 3, 256, 256)
    assert batch["target"].shape == (2, 3, 17, 64, 64)
    assert batch["target_x"].shape == (2, 3, 17, 512) and batch["target_y"].shape == (2, 3, 17, 512)
    assert batch["rays"].shape == (2, 3, 64, 3) and batch["joints_3d"].shape == (2, 17, 3)
    assert batch["subject"].shape == (2,) and len(batch["action_name"]) == 2
    cams = sample_cameras(batch)
    assert cams.batch_shape == (2, 3)
    with pytest.raises(ValueError, match="different shapes"):
        collate([ds[0], H36MDataset(h36m_root, "train", views=2)[0]])


# --------------------------------------------------------------------------- targets
def test_heatmap_argmax_at_joint():
    rng = np.random.default_rng(0)
    joints = torch.from_numpy(rng.uniform(0, 255, size=(3, 17, 2)))
    heat, weight = tg.heatmap_targets(joints, torch.ones(3, 17), (256, 256), (64, 64), sigma=2.0)
    assert heat.shape == (3, 17, 64, 64) and weight.min() == 1
    flat = heat.flatten(-2).argmax(-1)
    peak = torch.stack([flat % 64, flat // 64], -1).double()
    mu = joints * 63.0 / 255.0  # UDP: (heatmap - 1) / (input - 1)
    assert torch.equal(peak, torch.floor(mu + 0.5))
    assert (tg.heatmap_to_crop(peak, (256, 256), (64, 64)) - joints).abs().max() <= 0.5 * 255 / 63 + 1e-9
    # Sub-pixel: the peak value tells how far the exact centre is from the peak pixel.
    d2 = ((peak - mu) ** 2).sum(-1)
    torch.testing.assert_close(heat.flatten(-2).max(-1).values.double(), torch.exp(-d2 / 8.0), atol=1e-6, rtol=0)


def test_heatmap_weights_outside_and_invisible():
    joints = torch.tensor([[100.0, 100.0], [-40.0, 50.0], [300.0, 10.0], [50.0, 50.0], [-5.0, 20.0]])
    vis = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])
    heat, weight = tg.heatmap_targets(joints, vis, (256, 256), (64, 64), sigma=2.0)
    assert weight.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]  # the last one's window still reaches the map
    assert heat[1:4].abs().max() == 0 and heat[4].max() > 0


def test_simcc_argmax_at_joint():
    rng = np.random.default_rng(1)
    joints = torch.from_numpy(rng.uniform(0, 191, size=(2, 17, 2)))
    joints[..., 1] *= 255 / 191
    tx, ty, w = tg.simcc_targets(joints, torch.ones(2, 17), (256, 192), split_ratio=2.0, sigma=6.0)
    assert tx.shape == (2, 17, 384) and ty.shape == (2, 17, 512) and w.min() == 1
    x = tx.argmax(-1).double() / 2.0
    y = ty.argmax(-1).double() / 2.0
    assert (x - joints[..., 0]).abs().max() <= 0.25 + 1e-9 and (y - joints[..., 1]).abs().max() <= 0.25 + 1e-9
    away = (joints[..., 0] > 10) & (joints[..., 0] < 181)  # Gaussian not cut by the label ends
    torch.testing.assert_close(tx.sum(-1)[away], torch.ones(int(away.sum())), atol=1e-3, rtol=0)
    _, _, w = tg.simcc_targets(torch.tensor([[-1.0, 5.0], [10.0, 256.5], [191.0, 255.0]]), torch.ones(3), (256, 192))
    assert w.tolist() == [0.0, 0.0, 1.0]


def test_dataset_targets_peak_at_crop_joints(h36m_root):
    ds = H36MDataset(h36m_root, "train", frame_stride=1, augment=True, target_type="both", seed=2)
    sample = ds[4]
    w = sample["target_weight"] > 0
    assert w.sum() > 20
    crop = sample["joints_2d_crop"].double()
    flat = sample["target"].flatten(-2).argmax(-1)
    peak = torch.stack([flat % 64, flat // 64], -1).double()
    assert (peak - torch.floor(crop * 63 / 255 + 0.5))[w].abs().max() == 0
    x = sample["target_x"].argmax(-1).double() / 2.0
    assert (x - crop[..., 0])[w].abs().max() <= 0.25 + 1e-6
    inside = (crop >= 0).all(-1) & (crop < 256).all(-1)
    assert torch.equal(w, inside & (sample["joints_vis"] > 0))


def test_image_paths_in_toolbox_layout(h36m_root):
    ds = H36MDataset(h36m_root, "train", frame_stride=1)
    g = ds.groups[0]
    assert [str(v.image) for v in g.views] == [str(h36m_root / "images" / h36m_image_name(g.subject, g.action, g.subaction, c, g.frame)) for c in range(4)]
