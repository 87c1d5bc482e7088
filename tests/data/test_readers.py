"""Dataset readers on small datasets written in the published formats (fixtures in conftest.py)."""

from __future__ import annotations

import logging
import math
import pickle

import cv2
import h5py
import numpy as np
import pytest
import torch
from conftest import H36M_DAMAGED, H36M_TRAIN, H36M_VALID, h36m_image_name, write_coco, write_skipose

from mvpose.data import DatasetError, build_dataset, sample_cameras
from mvpose.data.coco import COCODataset
from mvpose.data.h36m import H36MDataset
from mvpose.data.skipose import SKIPOSE_JOINTS, SkiPoseDataset
from mvpose.skeletons import H36M_ACTIONS, get_skeleton


def _keys(spec, drop_damaged=True, incomplete=()):
    """Group keys (subject, action, subaction, frame) in the toolbox's order of first appearance."""
    keys = [
        (s, a, sa, f)
        for s in spec["subjects"] for a in spec["actions"] for sa in spec["subactions"] for f in spec["frames"]
    ]
    if drop_damaged:
        keys = [k for k in keys if k[:3] not in H36M_DAMAGED]
    return [k for k in keys if k not in incomplete]


def _ds_keys(ds):
    return [(g.subject, g.action, g.subaction, g.frame) for g in ds.groups]


def _records(root, split):
    with open(root / "annot" / f"h36m_{split}.pkl", "rb") as f:
        return {(r["subject"], r["action"], r["subaction"], r["image_id"], r["camera_id"]): r for r in pickle.load(f)}


# --------------------------------------------------------------------------- Human3.6M
def _toolbox_world(rec) -> np.ndarray:
    """World pose as the official evaluation builds it (multi-view-PPT run/pose3d/estimate_tri.py,
    lib/multiviews/cameras.py camera_to_world_frame): ``R^T joints_3d_camera + T``, T the camera centre."""
    R, T = np.asarray(rec["camera"]["R"], np.float64), np.asarray(rec["camera"]["T"], np.float64)
    return (R.T.dot(np.asarray(rec["joints_3d_camera"], np.float64).T) + T).T


def test_h36m_world_truth_from_joints_3d_camera_not_joints_3d(h36m_root):
    """Toolbox semantics: joints_3d (universal skeleton, camera frame) is never taken as the world pose."""
    ds = H36MDataset(h36m_root, "train", frame_stride=1)
    records = _records(h36m_root, "train")
    for group, key in zip(ds.groups, _ds_keys(ds)):
        recs = [records[key + (c,)] for c in range(4)]
        truth = _toolbox_world(recs[0])
        assert np.abs(group.joints_3d - truth).max() < 1e-6  # mm
        for r in recs:  # the fixture's joints_3d is deliberately far from the world pose
            assert np.linalg.norm(r["joints_3d"] - truth, axis=-1).min() > 500.0


def test_h36m_ground_truth_2d_triangulates_to_the_world_truth(h36m_root):
    from mvpose.geometry.triangulation import triangulate

    ds = H36MDataset(h36m_root, "validation", frame_stride=1, check_files=False)
    for idx in (0, len(ds) // 2, len(ds) - 1):
        sample = ds[idx]
        cams = sample_cameras({k: v.double() if v.is_floating_point() else v for k, v in sample.items() if torch.is_tensor(v)}, crop=False)
        tri = triangulate(torch.from_numpy(np.stack([v.joints_2d for v in ds.groups[idx].views])), cams)
        mpjpe = (tri.points3d - torch.from_numpy(ds.groups[idx].joints_3d)).norm(dim=-1).mean().item()
        assert mpjpe < 1e-3, (idx, mpjpe)


def test_h36m_views_that_disagree_are_refused(h36m_small):
    def shift(recs):
        recs[2]["joints_3d_camera"] = recs[2]["joints_3d_camera"] + np.array([0.0, 30.0, 0.0])

    root = h36m_small(mutate=shift)
    with pytest.raises(DatasetError, match=r"h36m_train\.pkl record \(s_01_act_02_subact_01_ca_02/.*differs from that of "
                       r"record \(s_01_act_02_subact_01_ca_01/.*by 30\.0 mm at joint \d+ .*views of one frame disagree"):
        H36MDataset(root, "train", frame_stride=1)
    assert len(H36MDataset(root, "train", frame_stride=1, view_tolerance_mm=31.0)) > 0

def test_h36m_groups_cameras_and_labels(h36m_root):
    ds = H36MDataset(h36m_root, "train", frame_stride=1)
    assert _ds_keys(ds) == _keys(H36M_TRAIN)
    assert ds.incomplete_groups == []
    records = _records(h36m_root, "train")
    for idx in (0, 17):
        sample = ds[idx]
        s, a, sa, f = _ds_keys(ds)[idx]
        assert sample["camera_ids"].tolist() == [0, 1, 2, 3]
        assert (sample["subject"], sample["action"], sample["subaction"], sample["frame"]) == (s, a, sa, f)
        assert sample["action_name"] == H36M_ACTIONS[a]
        assert sample["image"].shape == (4, 3, 256, 256)
        assert [p.split("images/")[1] for p in sample["image_paths"]] == [h36m_image_name(s, a, sa, c, f) for c in range(4)]
        recs = [records[(s, a, sa, f, c)] for c in range(4)]
        world = _toolbox_world(recs[0])
        np.testing.assert_allclose(sample["joints_3d"].numpy(), world, atol=1e-3)
        np.testing.assert_allclose(sample["joints_2d"].numpy(), np.stack([r["joints_2d"] for r in recs]), atol=1e-3)
        for c, r in enumerate(recs):
            cam = r["camera"]
            K = sample["K_orig"][c].double().numpy()
            np.testing.assert_allclose([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], [cam["fx"][0], cam["fy"][0], cam["cx"][0], cam["cy"][0]], rtol=1e-6)
            # The reader turns the toolbox's camera centre T into t = -R T.
            centre = -sample["R"][c].double().T @ sample["t"][c].double()
            np.testing.assert_allclose(centre.numpy(), cam["T"].reshape(3), atol=1e-2)
        # The original cameras (with the distortion in OpenCV order) reproduce the toolbox's 2D labels.
        cams = sample_cameras({k: v.double() if v.is_floating_point() else v for k, v in sample.items() if torch.is_tensor(v)}, crop=False)
        proj = cams.project(torch.from_numpy(world).expand(4, -1, -1))
        assert (proj - torch.from_numpy(np.stack([r["joints_2d"] for r in recs]))).abs().max() < 0.01


def test_h36m_annotations_without_images(h36m_root):
    ds = H36MDataset(h36m_root, "train", views=[2, 0])
    ann, sample = ds.annotations(1), ds[1]
    assert ann["camera_ids"] == [2, 0] and ann["frame"] == sample["frame"]
    np.testing.assert_allclose(ann["joints_3d"].numpy(), sample["joints_3d"].numpy(), atol=1e-3)
    np.testing.assert_allclose(ann["K_orig"].numpy(), sample["K_orig"].numpy(), rtol=1e-6)


def test_h36m_train_subsampling_every_fifth_group(h36m_root):
    ds = H36MDataset(h36m_root, "train")
    expected = _keys(H36M_TRAIN)
    assert len(ds) == math.ceil(len(expected) / 5)
    assert _ds_keys(ds) == expected[::5]
    assert _ds_keys(H36MDataset(h36m_root, "train", frame_stride=3)) == expected[::3]


def test_h36m_damaged_s9_dropped_and_eval_subsampling(h36m_root):
    incomplete = [(11, 2, 1, 3)]
    ds = H36MDataset(h36m_root, "validation")
    complete = _keys(H36M_VALID, incomplete=incomplete)
    assert _ds_keys(ds) == complete[::64]
    assert len(ds) == 3
    everything = H36MDataset(h36m_root, "test", frame_stride=1)
    assert _ds_keys(everything) == complete
    assert not any(k[:3] in H36M_DAMAGED for k in _ds_keys(everything))
    kept = H36MDataset(h36m_root, "validation", frame_stride=1, drop_damaged=False)
    assert _ds_keys(kept) == _keys(H36M_VALID, drop_damaged=False, incomplete=incomplete)
    assert sum(k[:3] in H36M_DAMAGED for k in _ds_keys(kept)) == 3 * len(H36M_VALID["frames"])


def test_h36m_incomplete_groups_reported(h36m_root, caplog):
    with caplog.at_level(logging.WARNING, logger="mvpose.data.h36m"):
        ds = H36MDataset(h36m_root, "validation", frame_stride=1)
    assert ds.incomplete_groups == [((11, 2, 1, 3), [2])]
    assert any("1 of 130 groups" in r.getMessage() for r in caplog.records)
    # Camera 2 is not asked for: the group is complete for views [0, 1].
    two = H36MDataset(h36m_root, "validation", views=[0, 1], frame_stride=1)
    assert two.incomplete_groups == []
    assert (11, 2, 1, 3) in _ds_keys(two)


def test_h36m_views_selection(h36m_root):
    records = _records(h36m_root, "train")
    first_n = build_dataset("h36m", h36m_root, "train", views=2, augment=False)
    sample = first_n[0]
    assert first_n.camera_ids == [0, 1]
    assert sample["camera_ids"].tolist() == [0, 1] and sample["image"].shape[0] == 2
    chosen = build_dataset("h36m", h36m_root, "train", views=[3, 1], augment=False)
    sample = chosen[1]
    s, a, sa, f = _ds_keys(chosen)[1]
    assert sample["camera_ids"].tolist() == [3, 1]
    assert sample["K_orig"][0, 0, 0].item() == pytest.approx(records[(s, a, sa, f, 3)]["camera"]["fx"][0], rel=1e-6)
    assert sample["image_paths"][0].endswith(h36m_image_name(s, a, sa, 3, f))
    for bad in (5, 0, [0, 4], [1, 1], [-1]):
        with pytest.raises(DatasetError, match="views"):
            H36MDataset(h36m_root, "train", views=bad)


def test_h36m_single_view_wrapper(h36m_root):
    ds = build_dataset("h36m", h36m_root, "train", views=[0, 2], single_view=True, augment=False)
    assert len(ds) == 2 * len(ds.base)
    sample = ds[3]
    assert sample["image"].shape[0] == 1 and sample["camera_ids"].tolist() == [2]
    assert sample["frame"] == ds.base.groups[1].frame


def test_h36m_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match=r"h36m_train\.pkl.*not found"):
        H36MDataset(tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split"):
        H36MDataset(tmp_path, "dev")


def test_h36m_unreadable_or_empty_pickle(h36m_small):
    root = h36m_small()
    path = root / "annot" / "h36m_train.pkl"
    path.write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="not a readable pickle"):
        H36MDataset(root, "train")
    path.write_bytes(pickle.dumps([]))
    with pytest.raises(DatasetError, match=r"h36m_train\.pkl: the split is empty"):
        H36MDataset(root, "train")


def test_h36m_record_missing_key(h36m_small):
    root = h36m_small(mutate=lambda recs: recs[3].pop("camera"))
    with pytest.raises(DatasetError, match=r"h36m_train\.pkl: record 3 .* lacks key\(s\) \['camera'\]"):
        H36MDataset(root, "train")


def test_h36m_bad_field_shape(h36m_small):
    def cut(recs):
        recs[1]["joints_2d"] = recs[1]["joints_2d"][:16]

    root = h36m_small(mutate=cut)
    with pytest.raises(DatasetError, match=r"field 'joints_2d' must have shape \(17, 2\), found \(16, 2\)"):
        H36MDataset(root, "train", frame_stride=1)


def test_h36m_camera_id_out_of_range(h36m_small):
    def bad(recs):
        recs[5]["camera_id"] = 4

    root = h36m_small(mutate=bad)
    with pytest.raises(DatasetError, match=r"record 5 .*'camera_id' = 4 is out of range 0\.\.3"):
        H36MDataset(root, "train")


def test_h36m_missing_image(h36m_small):
    root = h36m_small()
    gone = root / "images" / h36m_image_name(1, 2, 1, 2, 2)
    gone.unlink()
    with pytest.raises(DatasetError, match=r"1 image file\(s\) missing") as err:
        H36MDataset(root, "train", frame_stride=1)
    assert str(gone) in str(err.value)


def test_h36m_wrong_image_size(h36m_small):
    root = h36m_small()
    wrong = root / "images" / h36m_image_name(1, 2, 1, 1, 2)
    cv2.imwrite(str(wrong), np.zeros((400, 500, 3), np.uint8))
    ds = H36MDataset(root, "train", frame_stride=1)
    ds[0]
    with pytest.raises(DatasetError, match=r"is 500x400 \(WxH\), expected 1000x1000") as err:
        ds[1]
    assert str(wrong) in str(err.value)
    # Images that cannot belong to the camera (principal point outside) fail at construction.
    for f in (1, 2):
        cv2.imwrite(str(root / "images" / h36m_image_name(1, 2, 1, 0, f)), np.zeros((256, 256, 3), np.uint8))
    with pytest.raises(DatasetError, match="principal point"):
        H36MDataset(root, "train", frame_stride=1)
    # An explicit size per camera is enforced as given.
    ds = H36MDataset(root, "train", frame_stride=1, image_sizes={0: (256, 256), 1: (1000, 1000), 2: (1000, 1000), 3: (1000, 1002)})
    with pytest.raises(DatasetError, match="500x400"):
        ds[1]


# --------------------------------------------------------------------------- Ski-Pose
def test_skipose_world_joints_and_per_frame_cameras(skipose_root):
    root, truth = skipose_root
    ds = SkiPoseDataset(root, "train")
    assert ds.num_joints == len(SKIPOSE_JOINTS) == 17
    assert [(g.subaction, g.frame) for g in ds.groups] == [k for k in truth if k != (2, 1)]
    assert ds.incomplete_groups == [((2, 1), [4])]
    with h5py.File(root / "train" / "labels.h5") as f:
        rows = {(int(s), int(fr), int(c)): i for i, (s, fr, c) in enumerate(zip(f["seq"][:], f["frame"][:], f["cam"][:]))}
        labels_2d, positions, subj = f["2D"][:].reshape(-1, 17, 2) * 256, f["cam_position"][:], f["subj"][:]
    for idx in range(len(ds)):
        sample = ds[idx]
        seq, frame = int(sample["subaction"]), int(sample["frame"])
        # World joints from ski_centers.csv + per-frame cameras, converted from metres to millimetres.
        np.testing.assert_allclose(sample["joints_3d"].numpy(), truth[(seq, frame)] * 1000.0, atol=0.05)
        r = [rows[(seq, frame, c)] for c in range(6)]
        assert sample["subject"] == subj[r[0]]
        cams = sample_cameras({k: v.double() for k, v in sample.items() if torch.is_tensor(v) and v.is_floating_point()}, crop=False)
        np.testing.assert_allclose(cams.centers.numpy(), positions[r] * 1000.0, atol=0.05)
        proj = cams.project(sample["joints_3d"].double().expand(6, -1, -1))
        np.testing.assert_allclose(proj.numpy(), labels_2d[r], atol=0.01)
        np.testing.assert_allclose(sample["joints_2d"].numpy(), labels_2d[r], atol=1e-3)


def test_skipose_views_and_centres_in_root(tmp_path):
    root = tmp_path / "ski"
    truth = write_skipose(root, "test", seqs=(4,), frames=(7,), centers_in_parent=False)
    ds = build_dataset("skipose", root, "test", views=[5, 0], augment=False)
    sample = ds[0]
    assert sample["camera_ids"].tolist() == [5, 0]
    np.testing.assert_allclose(sample["joints_3d"].numpy(), truth[(4, 7)] * 1000.0, atol=0.05)


def test_skipose_bad_inputs(tmp_path):
    def make(name, **kw):
        root = tmp_path / name / "Ski-PosePTZ-CameraDataset-png"
        write_skipose(root, "train", seqs=(1,), frames=(0, 1), **kw)
        return root

    root = make("ok")
    with pytest.raises(DatasetError, match=r"test/labels\.h5: Ski-Pose labels file not found"):
        SkiPoseDataset(root, "test")
    (root.parent / "ski_centers.csv").unlink()
    with pytest.raises(DatasetError, match=r"ski_centers\.csv not found; looked at .*ski_centers\.csv, .*ski_centers\.csv"):
        SkiPoseDataset(root, "train")

    root = make("no2d", fields=lambda a: a.pop("2D"))
    with pytest.raises(DatasetError, match=r"labels\.h5: missing dataset\(s\) \['2D'\]"):
        SkiPoseDataset(root, "train")

    def cam_out_of_range(a):
        a["cam"][3] = 6

    root = make("cam", fields=cam_out_of_range)
    with pytest.raises(DatasetError, match=r"dataset 'cam' row 3 = 6 is out of range 0\.\.5"):
        SkiPoseDataset(root, "train")

    root = make("shape", fields=lambda a: a.__setitem__("3D", a["3D"][:, :48]))
    with pytest.raises(DatasetError, match=r"dataset '3D' must have shape \(12, 51\), found \(12, 48\)"):
        SkiPoseDataset(root, "train")

    root = make("mm", units=1000.0)
    with pytest.raises(DatasetError, match="metres"):
        SkiPoseDataset(root, "train")

    def bad_focal(a):
        a["cam_intrinsic"][2, 0] = -a["cam_intrinsic"][2, 0]

    root = make("focal", fields=bad_focal)
    with pytest.raises(DatasetError, match=r"labels\.h5: Ski-Pose cameras: 'cam_intrinsic' row 2 has focal lengths -"):
        SkiPoseDataset(root, "train")

    def not_rotation(a):
        a["R_cam_2_world"][5, :3] *= 2.0

    root = make("rot", fields=not_rotation)
    with pytest.raises(DatasetError, match=r"labels\.h5: Ski-Pose cameras: 'R_cam_2_world' row 5 is not a rotation"):
        SkiPoseDataset(root, "train")

    root = make("empty", fields=lambda a: a.update({k: v[:0] for k, v in a.items()}))
    with pytest.raises(DatasetError, match="split is empty"):
        SkiPoseDataset(root, "train")

    root = make("nocentre")
    lines = (root.parent / "ski_centers.csv").read_text().splitlines()
    (root.parent / "ski_centers.csv").write_text("\n".join(lines[:1]) + "\n")
    with pytest.raises(DatasetError, match=r"no world centre for 6 labelled \(seq, frame\)"):
        SkiPoseDataset(root, "train")

    root = make("size")
    wrong = root / "train" / "seq_001" / "cam_03" / "image_000001.png"
    cv2.imwrite(str(wrong), np.zeros((128, 128, 3), np.uint8))
    ds = SkiPoseDataset(root, "train")
    with pytest.raises(DatasetError, match=r"is 128x128 \(WxH\), expected 256x256") as err:
        ds[1]
    assert str(wrong) in str(err.value)
    wrong.unlink()
    with pytest.raises(DatasetError, match="image file\\(s\\) missing"):
        SkiPoseDataset(root, "train")


# --------------------------------------------------------------------------- COCO
def test_coco_instances(coco_root):
    root, doc = coco_root
    ds = COCODataset(root, "val")
    wanted = [a for a in doc["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    assert [int(g.extra["annotation_id"]) for g in ds.groups] == [a["id"] for a in wanted]
    assert ds.skeleton is get_skeleton("coco")
    for idx in (0, 3):
        ann = wanted[idx]
        sample = ds[idx]
        assert sample["image"].shape == (1, 3, 256, 256) and not sample["has_3d"]
        kps = np.asarray(ann["keypoints"]).reshape(17, 3)
        np.testing.assert_allclose(sample["joints_2d"][0].numpy(), kps[:, :2], atol=1e-3)
        assert sample["joints_vis"][0].tolist() == (kps[:, 2] > 0).astype(float).tolist()
        assert sample["image_id"] == ann["image_id"] and sample["frame"] == ann["image_id"]
        # COCO boxes span whole pixels: in pixel-centre coordinates the box runs from x to x + w - 1.
        x, y, w, h = ann["bbox"]
        np.testing.assert_allclose(sample["center"][0].numpy(), [x + (w - 1) / 2, y + (h - 1) / 2], atol=1e-3)
        side = sample["scale"][0].numpy() * 200.0
        assert side[0] == pytest.approx(side[1]) and side[0] == pytest.approx(1.25 * max(w - 1, h - 1), rel=1e-4)
        # Unlabelled keypoints get no target.
        assert sample["target_weight"][0, 3] == 0


def test_coco_bad_inputs(tmp_path):
    with pytest.raises(DatasetError, match=r"person_keypoints_val2017\.json: COCO keypoint annotation file not found"):
        COCODataset(tmp_path, "val")
    root = tmp_path / "coco"
    write_coco(root, "val2017", num_images=2)
    with pytest.raises(DatasetError, match="single-view"):
        COCODataset(root, "val", views=2)
    gone = root / "images" / "val2017" / "000000000002.jpg"
    gone.unlink()
    with pytest.raises(DatasetError, match="missing") as err:
        COCODataset(root, "val")
    assert str(gone) in str(err.value)


# --------------------------------------------------------------------------- synthetic generator output
def test_readers_on_synthetic_generator_output(tmp_path):
    from mvpose.data.synth import generate

    h36m = generate(tmp_path / "h36m", fmt="h36m", subjects=(1, 9), frames=1, actions=(2, 5), image_size=64, seed=0, workers=1)
    train = build_dataset("h36m", h36m.root, "train", frame_stride=1, augment=True, seed=1)
    valid = build_dataset("h36m", h36m.root, "validation", frame_stride=1)
    assert _ds_keys(train) == [(1, a, sa, 1) for a in (2, 5) for sa in (1, 2)]
    assert _ds_keys(valid) == [(9, 2, 1, 1), (9, 2, 2, 1), (9, 5, 1, 1)]  # S9 Greeting-2 is damaged
    ski = generate(tmp_path / "ski", fmt="skipose", subjects=(1,), frames=1, seed=0, workers=1)
    skis = build_dataset("skipose", ski.root, "train", augment=True, seed=1)
    assert len(skis) == 1
    for ds in (train, valid, skis):
        sample = ds[0]
        V = ds.num_views
        for crop, key in ((True, "joints_2d_crop"), (False, "joints_2d")):
            cams = sample_cameras({k: v.double() for k, v in sample.items() if torch.is_tensor(v) and v.is_floating_point()}, crop=crop)
            err = (cams.project(sample["joints_3d"].double().expand(V, -1, -1)) - sample[key].double()).abs().max()
            assert err < 0.02, (ds.name, key, float(err))
