import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mvpose.metrics import (
    jdr,
    mpjpe,
    mpjpe_per_action,
    pa_mpjpe,
    pckh,
    per_joint_mpjpe,
    procrustes_align,
    summarize_errors,
)


def _known_offsets(n=4, joints=5):
    """gt random, pred offset by (3j, 4j, 0) at joint j: error exactly 5j mm."""
    gt = np.random.default_rng(0).normal(scale=500, size=(n, joints, 3))
    offset = np.zeros((joints, 3))
    offset[:, 0] = 3 * np.arange(joints)
    offset[:, 1] = 4 * np.arange(joints)
    return gt + offset, gt


def test_mpjpe_known_per_joint_error():
    pred, gt = _known_offsets()
    np.testing.assert_allclose(per_joint_mpjpe(pred, gt), [0, 5, 10, 15, 20], atol=1e-9)
    assert mpjpe(pred, gt) == pytest.approx(10.0)
    # torch input gives the same float
    assert mpjpe(torch.tensor(pred), torch.tensor(gt)) == pytest.approx(10.0)


def test_mpjpe_valid_mask_and_nan():
    pred, gt = _known_offsets()
    valid = np.ones((4, 5), dtype=bool)
    valid[:, 4] = False  # drop the 20 mm joint
    valid[0, 3] = False
    pred[:, 4] = np.nan
    # hand: joints 0..3 errors 0,5,10,15 for 4 samples, minus one 15 -> (4*30 - 15) / 15
    assert mpjpe(pred, gt, valid) == pytest.approx((4 * 30 - 15) / 15)
    pj = per_joint_mpjpe(pred, gt, valid)
    np.testing.assert_allclose(pj[:4], [0, 5, 10, 15], atol=1e-9)
    assert np.isnan(pj[4])
    with pytest.raises(ValueError, match="4 non-finite"):
        mpjpe(pred, gt)
    # a joint-wise valid (J,) broadcasts over samples
    assert mpjpe(pred, gt, valid[1]) == pytest.approx(7.5)
    with pytest.raises(ValueError, match="same shape"):
        mpjpe(pred[:, :3], gt)
    with pytest.raises(ValueError, match="no valid"):
        mpjpe(pred, gt, np.zeros(5, dtype=bool))


def test_mpjpe_per_action_groups_in_h36m_order():
    gt = np.zeros((5, 2, 3))
    pred = np.zeros((5, 2, 3))
    pred[:, :, 2] = np.array([10.0, 20.0, 30.0, 40.0, 50.0])[:, None]
    actions = [14, "Directions", 14, 2, "Eating"]
    result = mpjpe_per_action(pred, gt, actions)
    assert list(result) == ["Directions", "Eating", "Walking"]
    assert result["Directions"] == pytest.approx(30.0)  # samples 1 and 3: 20, 40
    assert result["Eating"] == pytest.approx(50.0)
    assert result["Walking"] == pytest.approx(20.0)  # samples 0 and 2: 10, 30
    ids = np.array([14, 2, 14, 2, 4])
    assert mpjpe_per_action(pred, gt, ids) == result
    assert mpjpe_per_action(pred, gt, torch.tensor(ids)) == result
    valid = np.ones((5, 2), dtype=bool)
    valid[4] = False  # Eating has no valid joint left
    with_mask = mpjpe_per_action(pred, gt, ids, valid)
    assert np.isnan(with_mask["Eating"]) and with_mask["Walking"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="unknown action"):
        mpjpe_per_action(pred, gt, [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="one entry per sample"):
        mpjpe_per_action(pred, gt, [2, 3])


def _similarity(points, scale, rot, trans):
    return scale * points @ rot.T + trans


def test_procrustes_recovers_similarity_transform():
    rng = np.random.default_rng(1)
    gt = rng.normal(scale=300, size=(6, 17, 3))
    rots = Rotation.random(6, random_state=2).as_matrix()
    pred = np.stack([
        _similarity(g, s, r, t)
        for g, s, r, t in zip(gt, rng.uniform(0.5, 2, 6), rots, rng.normal(scale=1000, size=(6, 3)))
    ])
    assert mpjpe(pred, gt) > 100
    assert pa_mpjpe(pred, gt) < 1e-6
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-6)


def test_procrustes_matches_independent_solution_with_noise():
    rng = np.random.default_rng(3)
    gt = rng.normal(scale=300, size=(17, 3))
    pred = _similarity(gt, 1.3, Rotation.from_euler("xyz", [0.3, -1, 2]).as_matrix(), [5, 6, 7])
    pred = pred + rng.normal(scale=40, size=pred.shape)
    xc, yc = pred - pred.mean(0), gt - gt.mean(0)
    # the optimal rotation does not depend on the scale: fit it without scale, then the scale
    rot, _ = Rotation.align_vectors(yc, xc)
    rx = rot.apply(xc)
    scale = (yc * rx).sum() / (xc**2).sum()
    expected = scale * rx + gt.mean(0)
    np.testing.assert_allclose(procrustes_align(pred, gt), expected, atol=1e-8)
    assert pa_mpjpe(pred, gt) == pytest.approx(np.linalg.norm(expected - gt, axis=-1).mean())


def test_procrustes_never_reflects():
    gt = np.random.default_rng(4).normal(scale=300, size=(17, 3))
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    aligned = procrustes_align(mirrored, gt)
    # a reflection would give 0; a proper rotation cannot undo a mirror of a 3D cloud
    assert pa_mpjpe(mirrored, gt) > 10
    # distances between joints scale uniformly, handedness is kept
    def signed_volume(p):
        return np.linalg.det(np.stack([p[1] - p[0], p[2] - p[0], p[3] - p[0]]))
    assert np.sign(signed_volume(aligned)) == np.sign(signed_volume(mirrored))


def test_procrustes_valid_excludes_outlier():
    rng = np.random.default_rng(5)
    gt = rng.normal(scale=300, size=(2, 17, 3))
    rot = Rotation.from_euler("z", 40, degrees=True).as_matrix()
    pred = _similarity(gt, 0.8, rot, [100, 0, 0])
    pred[:, 3] = [1e5, -1e5, 1e5]
    valid = np.ones((2, 17), dtype=bool)
    valid[:, 3] = False
    assert pa_mpjpe(pred, gt, valid) < 1e-6
    assert pa_mpjpe(pred, gt) > 100
    pred[:, 3] = np.nan
    assert pa_mpjpe(pred, gt, valid) < 1e-6
    with pytest.raises(ValueError, match="2 non-finite"):
        pa_mpjpe(pred, gt)


def test_jdr_threshold_boundaries():
    gt = np.zeros((1, 4, 2))
    pred = np.array([[[12.0, 0.0], [0.0, 12.8], [13.0, 0.0], [0.0, 0.0]]])
    overall, per_joint = jdr(pred, gt)  # 0.5 * 25.6 = 12.8 px, inclusive
    np.testing.assert_array_equal(per_joint, [1, 1, 0, 1])
    assert overall == pytest.approx(0.75)
    _, per_joint = jdr(pred, gt, head_size=25.0)  # 12.5 px
    np.testing.assert_array_equal(per_joint, [1, 0, 0, 1])
    _, per_joint = jdr(pred, gt, threshold=13.0)
    np.testing.assert_array_equal(per_joint, [1, 1, 1, 1])
    _, per_joint = jdr(pred, gt, head_size=100.0, factor=0.1)  # 10 px
    np.testing.assert_array_equal(per_joint, [0, 0, 0, 1])


def test_jdr_multiview_visibility_and_nan():
    rng = np.random.default_rng(6)
    gt = rng.uniform(0, 1000, size=(3, 4, 2, 2))  # (N, V, J, 2)
    direction = np.array([0.6, 0.8])
    dist = np.zeros((3, 4, 2))
    dist[..., 0] = 5.0  # joint 0 always within 12.8
    dist[..., 1] = 20.0  # joint 1 always missed ...
    dist[0, :, 1] = 1.0  # ... except in sample 0
    pred = gt + dist[..., None] * direction
    overall, per_joint = jdr(pred, gt)
    np.testing.assert_allclose(per_joint, [1.0, 4 / 12])
    assert overall == pytest.approx(16 / 24)
    vis = np.ones((3, 4, 2))
    vis[1:, :, 1] = 0  # only sample 0 counts for joint 1
    overall, per_joint = jdr(pred, gt, vis=vis)
    np.testing.assert_allclose(per_joint, [1.0, 1.0])
    assert overall == 1.0
    # H36M joints_vis layout (..., J, 3) is read from its first channel
    _, per_joint_3 = jdr(pred, gt, vis=np.repeat(vis[..., None], 3, axis=-1))
    np.testing.assert_allclose(per_joint_3, per_joint)
    pred[0, 0, 0] = np.nan  # missing prediction is a miss
    _, per_joint = jdr(pred, gt)
    assert per_joint[0] == pytest.approx(11 / 12)
    gt[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="gt has 1 non-finite"):
        jdr(pred, gt)


def test_pckh_per_sample_head_size():
    gt = np.zeros((2, 3, 2))
    pred = np.zeros((2, 3, 2))
    pred[:, :, 0] = [[5.0, 10.0, 11.0], [5.0, 10.0, 11.0]]
    heads = np.array([20.0, 40.0])  # thresholds 10 px and 20 px at alpha 0.5
    overall, per_joint = pckh(pred, gt, heads)
    np.testing.assert_allclose(per_joint, [1.0, 1.0, 0.5])
    assert overall == pytest.approx(5 / 6)
    overall, per_joint = pckh(pred, gt, heads, vis=np.array([[1, 1, 1], [1, 1, 0]]))
    np.testing.assert_allclose(per_joint, [1.0, 1.0, 0.0])
    _, per_joint = pckh(pred, gt, heads, alpha=0.25)  # 5 px and 10 px
    np.testing.assert_allclose(per_joint, [1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="head_sizes"):
        pckh(pred, gt, np.array([20.0, 0.0]))


def test_summarize_errors_ignores_nan():
    values = np.concatenate([np.arange(1.0, 11.0), [np.nan, np.nan]])
    summary = summarize_errors(values)
    assert summary["count"] == 10
    assert summary["mean"] == pytest.approx(5.5)
    assert summary["median"] == pytest.approx(5.5)
    assert summary["p90"] == pytest.approx(9.1)  # linear: 9 + 0.1 * (10 - 9)
    empty = summarize_errors([np.nan])
    assert empty["count"] == 0 and np.isnan(empty["mean"])
