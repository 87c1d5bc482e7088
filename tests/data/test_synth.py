"""The synthetic generator: published layouts, geometric consistency, motion sanity, determinism."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mvpose.cli import main
from mvpose.data.synth import SKIPOSE_JOINTS, SKIPOSE_ROOT_NAME, generate
from mvpose.data.synth.body import (
    JOINT_OWNERS,
    J,
    body_primitives,
    head_ellipsoid,
    inside_ellipsoid,
    sample_appearance,
    sample_body_shape,
    torso_ellipsoids,
)
from mvpose.data.synth.cameras import View, capture_center, h36m_rig, look_at
from mvpose.data.synth.motion import ACTIONS, LIMITS, Placement, PoseTrack, action_track, solve_pose
from mvpose.data.synth.render import Frame, Lighting, draw, joint_visibility
from mvpose.data.synth.scene import Box
from mvpose.data.synth.writers import UNIVERSAL_BONES_MM, universal_stand_in
from mvpose.geometry import Cameras
from mvpose.data.h36m import h36m_camera_params
from mvpose.skeletons import H36M

TOOLBOX_KEYS = [
    "image", "joints_2d", "joints_3d", "joints_3d_camera", "joints_vis", "video_id", "image_id", "subject",
    "action", "subaction", "camera_id", "source", "camera", "center", "scale", "box",
]
SIZE = 96


@pytest.fixture(scope="module")
def h36m_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_h36m")
    # Standing (2), seated with a chair (10) and walking (15) actions, train and validation subjects.
    generate(out, fmt="h36m", subjects=(1, 9), actions=(2, 10, 15), frames=2, image_size=SIZE, seed=0, workers=1)
    return out


@pytest.fixture(scope="module")
def h36m_records(h36m_set) -> dict[str, list[dict]]:
    out = {}
    for split in ("train", "validation"):
        with open(h36m_set / "annot" / f"h36m_{split}.pkl", "rb") as f:
            out[split] = pickle.load(f)
    return out


@pytest.fixture(scope="module")
def ski_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_ski")
    generate(out, fmt="skipose", subjects=(1, 5), frames=2, seed=0, workers=1, preview=True)
    return out


# --------------------------------------------------------------------------- Human3.6M layout
def test_h36m_records_have_the_toolbox_schema(h36m_set, h36m_records):
    train, val = h36m_records["train"], h36m_records["validation"]
    assert {r["subject"] for r in train} == {1} and {r["subject"] for r in val} == {9}
    assert len(train) == len(val) == 3 * 2 * 4 * 2  # actions x subactions x cameras x frames
    pattern = re.compile(r"^(s_(\d{2})_act_(\d{2})_subact_(\d{2})_ca_(\d{2}))/\1_(\d{6})\.jpg$")
    for rec in train + val:
        assert list(rec) == TOOLBOX_KEYS
        for key, shape in (("joints_2d", (17, 2)), ("joints_3d", (17, 3)), ("joints_3d_camera", (17, 3)),
                           ("joints_vis", (17, 3)), ("box", (4,))):
            assert isinstance(rec[key], np.ndarray) and rec[key].shape == shape and rec[key].dtype == np.float64, key
        for key in ("video_id", "image_id", "subject", "action", "subaction", "camera_id"):
            assert type(rec[key]) is int, key
        assert rec["source"] == "h36m"
        assert 2 <= rec["action"] <= 16 and rec["subaction"] in (1, 2) and rec["camera_id"] in range(4)
        m = pattern.match(rec["image"])
        assert m, rec["image"]
        s, a, sa, c, f = (int(v) for v in m.groups()[1:])
        assert (s, a, sa, c - 1, f) == (rec["subject"], rec["action"], rec["subaction"], rec["camera_id"], rec["image_id"])
        cam = rec["camera"]
        assert sorted(cam) == ["R", "T", "cx", "cy", "fx", "fy", "k", "p"]
        for key, shape in (("R", (3, 3)), ("T", (3, 1)), ("fx", (1,)), ("fy", (1,)), ("cx", (1,)), ("cy", (1,)),
                           ("k", (3, 1)), ("p", (2, 1))):
            assert cam[key].shape == shape and cam[key].dtype == np.float64, key
        assert len(rec["center"]) == 2 and len(rec["scale"]) == 2
        assert set(np.unique(rec["joints_vis"])) <= {0.0, 1.0}
        assert np.all(rec["joints_vis"] == rec["joints_vis"][:, :1])
    # One video id per (subject, action, subaction, camera), H36M-Toolbox running numbering.
    vids = {(r["subject"], r["action"], r["subaction"], r["camera_id"]): r["video_id"] for r in train + val}
    assert len(set(vids.values())) == len(vids)
    assert vids[(1, 2, 1, 0)] == 0 and vids[(1, 2, 2, 3)] == 7 and vids[(9, 2, 1, 0)] == 5 * 120
    # Frames are spaced in time and their images exist, S x S, and differ.
    ids = sorted({r["image_id"] for r in train})
    assert ids[0] == 1 and ids[1] - ids[0] > 1
    a, b = (cv2.imread(str(h36m_set / "images" / r["image"])) for r in train[:2])
    assert a.shape == b.shape == (SIZE, SIZE, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.2


def _world(rec):
    """The world pose as the official evaluation builds it: R^T joints_3d_camera + T (estimate_tri.py)."""
    return rec["joints_3d_camera"] @ rec["camera"]["R"] + rec["camera"]["T"].reshape(1, 3)


def test_h36m_geometry_through_mvpose_cameras(h36m_records):
    worlds = {}
    for rec in h36m_records["train"] + h36m_records["validation"]:
        cam = rec["camera"]
        p = h36m_camera_params(cam)
        cams = Cameras.from_params(p["K"], p["R"], p["t"], p["dist"])
        world = _world(rec)
        uv = cams.project(torch.as_tensor(world)).numpy()
        np.testing.assert_allclose(rec["joints_2d"], uv, atol=1e-6)
        # H36M-Toolbox semantics: joints_3d is the universal-skeleton pose in the camera frame, not the world.
        np.testing.assert_allclose(rec["joints_3d"], universal_stand_in(rec["joints_3d_camera"]), atol=1e-9)
        np.testing.assert_allclose(rec["joints_3d"][0], rec["joints_3d_camera"][0], atol=1e-9)
        assert np.linalg.norm(rec["joints_3d"] - world, axis=-1).min() > 1000.0
        bones = [np.linalg.norm(rec["joints_3d"][b] - rec["joints_3d"][a]) for a, b in UNIVERSAL_BONES_MM]
        np.testing.assert_allclose(bones, list(UNIVERSAL_BONES_MM.values()), rtol=1e-9)
        worlds.setdefault((rec["subject"], rec["action"], rec["subaction"], rec["image_id"]), []).append(world)
        # The camera is the real rig scaled to the image: principal point near the centre.
        assert abs(cam["cx"][0] - SIZE / 2) < 0.05 * SIZE and 1.0 < cam["fx"][0] / SIZE < 1.25
        # Whole person inside the image.
        assert np.all(rec["joints_2d"] > 0) and np.all(rec["joints_2d"] < SIZE - 1)
    for key, views in worlds.items():  # the four views of a frame give one world pose
        assert len(views) == 4 and np.abs(np.stack(views) - views[0]).max() < 1e-6, key


def test_h36m_reader_world_truth_and_triangulation_on_generated_data(h36m_set, h36m_records):
    """The reader's world truth on generated pickles is R^T joints_3d_camera + T, never joints_3d,
    and the ground-truth 2D triangulated through the reader's cameras lands on it."""
    from mvpose.data.dataset import sample_cameras
    from mvpose.data.h36m import H36MDataset
    from mvpose.geometry.triangulation import triangulate

    ds = H36MDataset(h36m_set, "validation", frame_stride=1, check_files=False)
    recs = {(r["subject"], r["action"], r["subaction"], r["image_id"], r["camera_id"]): r for r in h36m_records["validation"]}
    for idx in range(len(ds)):
        g = ds.groups[idx]
        first = recs[(g.subject, g.action, g.subaction, g.frame, 0)]
        assert np.abs(g.joints_3d - _world(first)).max() < 1e-6
        assert np.linalg.norm(g.joints_3d - first["joints_3d"], axis=-1).min() > 1000.0
        sample = {k: v.double() if v.is_floating_point() else v for k, v in ds[idx].items() if torch.is_tensor(v)}
        tri = triangulate(torch.from_numpy(np.stack([v.joints_2d for v in g.views])), sample_cameras(sample, crop=False))
        assert (tri.points3d - torch.from_numpy(g.joints_3d)).norm(dim=-1).mean().item() < 1e-3


def test_h36m_center_scale_box_follow_the_toolbox(h36m_records):
    for rec in h36m_records["train"][:8]:
        cam, root = rec["camera"], rec["joints_3d_camera"][0]
        f = np.array([cam["fx"][0], cam["fy"][0]])
        c = np.array([cam["cx"][0], cam["cy"][0]])
        tl = (root[:2] + [-1000.0, -900.0]) / root[2] * f + c
        br = (root[:2] + [1000.0, 1100.0]) / root[2] * f + c
        np.testing.assert_allclose(rec["box"], np.concatenate([tl, br]), rtol=1e-9)
        np.testing.assert_allclose(rec["center"], (tl + br) / 2, rtol=1e-9)
        np.testing.assert_allclose(rec["scale"], (br - tl) / 200.0, rtol=1e-9)


def _sequences(records):
    seqs: dict = {}
    for r in records:
        if r["camera_id"] == 0:
            seqs.setdefault((r["subject"], r["action"], r["subaction"]), []).append(_world(r))
    return {k: np.stack(v) for k, v in seqs.items()}


def test_h36m_feet_on_floor_and_constant_bones(h36m_records):
    for key, joints in _sequences(h36m_records["train"] + h36m_records["validation"]).items():
        lowest = joints[:, [J["rank"], J["lank"]], 2].min(axis=1)
        assert np.all((lowest > 40) & (lowest < 110)), (key, lowest)  # ankle joint above the sole
        assert np.ptp(lowest) < 1.0, key
        lengths = np.stack([np.linalg.norm(joints[:, a] - joints[:, b], axis=-1) for a, b in H36M.limbs], axis=1)
        np.testing.assert_allclose(lengths, lengths[:1].repeat(len(lengths), 0), rtol=1e-9)
        assert np.all(joints[:, :, 2] > 0)


# --------------------------------------------------------------------------- motion
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_is_a_plausible_body(action):
    rng = np.random.default_rng(action)
    shape = sample_body_shape(rng)
    views = h36m_rig(1, 256)
    center = capture_center(views)
    place = Placement(center, center + [300.0, -200.0, 0.0], 0.7, (1000.0, 1500.0, 0.1), 1.0, 0.3)
    t = np.linspace(0.0, 9.0, 46)
    track = action_track(action, t, rng, shape, place)
    pose = solve_pose(shape, track)
    joints = pose.joints
    # Constant bone lengths.
    lengths = np.stack([np.linalg.norm(joints[:, a] - joints[:, b], axis=-1) for a, b in H36M.limbs], axis=1)
    np.testing.assert_allclose(lengths, lengths[:1].repeat(len(t), 0), rtol=1e-9)
    # Feet on the floor: the lower ankle is exactly the ankle height above z = 0 in every frame.
    lowest = joints[:, [J["rank"], J["lank"]], 2].min(axis=1)
    np.testing.assert_allclose(lowest, shape.ankle_height, atol=1.0)
    # Knee and elbow flexion within the limits.
    for a, b, c, limit in (("rhip", "rkne", "rank", "max_knee_flexion"), ("lhip", "lkne", "lank", "max_knee_flexion"),
                           ("rsho", "relb", "rwri", "max_elbow_flexion"), ("lsho", "lelb", "lwri", "max_elbow_flexion")):
        u = joints[:, J[b]] - joints[:, J[a]]
        v = joints[:, J[c]] - joints[:, J[b]]
        cos = np.sum(u * v, -1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
        assert np.all(np.arccos(np.clip(cos, -1, 1)) <= LIMITS[limit] + 1e-6)
    # No arm through the torso or head: elbows, wrists and forearm midpoints stay outside.
    vols = torso_ellipsoids(shape, joints, pose.R_pelvis, pose.R_chest) + [head_ellipsoid(shape, joints, pose.R_head)]
    for s in "rl":
        elb, wri = joints[:, J[s + "elb"]], joints[:, J[s + "wri"]]
        for p in (elb, wri, 0.5 * (elb + wri)):
            for c, A, r in vols:
                assert np.all(inside_ellipsoid(p, c, A, r) > 0.999)
    # It moves.
    assert np.ptp(joints[:, [J["lwri"], J["rwri"], J["head"]]], axis=0).max() > 50.0


def test_walking_covers_ground_and_sitting_has_a_chair():
    rng = np.random.default_rng(0)
    shape = sample_body_shape(rng)
    center = np.zeros(3)
    place = Placement(center, center, 0.0, (1000.0, 1500.0, 0.0), 1.0, 0.0)
    t = np.linspace(0.0, 4.0, 21)
    walk = solve_pose(shape, action_track(15, t, rng, shape, place)).joints
    assert np.linalg.norm(walk[-1, 0, :2] - walk[0, 0, :2]) > 1500.0
    sit = action_track(10, t, rng, shape, place)
    assert sit.chair is not None and abs(sit.chair[3] - (sit.root[0, 2] - 0.042 * shape.height * shape.girth)) < 1e-6


# --------------------------------------------------------------------------- visibility
def _front_and_back_views(target: np.ndarray) -> tuple[View, View]:
    views = []
    for x in (3000.0, -3000.0):  # the person faces +x
        eye = target + np.array([x, 0.0, 300.0])
        R = look_at(eye, target)
        K = np.array([[130.0, 0, 64.0], [0, 130.0, 64.0], [0, 0, 1]])
        views.append(View(K, R, -R @ eye, np.zeros(5), 128, 128))
    return views[0], views[1]


def _standing_track(shape, wrists) -> PoseTrack:
    T = 1
    z = np.zeros(T)
    ank = np.array([[[0.0, -120.0, shape.ankle_height], [0.0, 120.0, shape.ankle_height]]])
    return PoseTrack(
        root=np.array([[0.0, 0.0, shape.ankle_height + 0.97 * shape.leg]]), heading=z, pelvis_pitch=z, pelvis_roll=z,
        lean=z, side=z, twist=z, head_yaw=z, head_pitch=z, ankles=ank, wrists=wrists[None],
        elbow_poles=np.array([[[-0.6, -1.0, -0.3], [-1.0, 0.5, -0.2]]]), thigh_hands=np.zeros((T, 2)),
    )


def _render(shape, pose, view, extra=()) -> tuple[Frame, np.ndarray]:
    app = sample_appearance(np.random.default_rng(1))
    prims = body_primitives(shape, app, pose.joints[0], pose.R_pelvis[0], pose.R_chest[0], pose.R_head[0], pose.foot_dirs[0])
    frame = Frame.empty(view.width, view.height)
    light = Lighting(np.array([0.0, 0.0, 1.0]), 0.4, 0.6, 0.2, np.ones(3))
    draw(frame, view, list(prims) + list(extra), light)
    cam = view.to_camera(pose.joints[0])
    return frame, joint_visibility(frame, view.project_camera(cam), cam[:, 2], JOINT_OWNERS)


def test_joint_behind_the_torso_is_hidden():
    shape = sample_body_shape(np.random.default_rng(2))
    s = shape.scale
    # Right wrist behind the back, left arm hanging at the side.
    wrists = np.array([[-190.0 * s, -40.0 * s, -300.0 * s], [20.0 * s, 90.0 * s, -510.0 * s]])
    pose = solve_pose(shape, _standing_track(shape, wrists))
    assert pose.joints[0, J["rwri"], 0] < pose.joints[0, J["root"], 0] - 50  # really behind
    front, back = _front_and_back_views(pose.joints[0, J["belly"]])
    frame, vis = _render(shape, pose, front)
    # Joints are on the body: every visible joint's pixel shows a body part.
    uv = np.floor(front.project(pose.joints[0]) + 0.5).astype(int)
    assert np.all(frame.ids[uv[vis, 1], uv[vis, 0]] > 0)
    assert not vis[J["rwri"]]
    assert vis[J["lwri"]] and vis[J["head"]] and vis[J["lkne"]] and vis[J["rkne"]]
    assert vis[J["belly"]] and vis[J["root"]]  # inside their own parts: not hidden by them
    _, vis_back = _render(shape, pose, back)
    assert vis_back[J["rwri"]]
    # An occluder in front of the knees hides them.
    knees = 0.5 * (pose.joints[0, J["rkne"]] + pose.joints[0, J["lkne"]])
    board = Box(knees + [350.0, 0, 0], np.eye(3), np.array([20.0, 400.0, 250.0]), np.ones(3) * 0.5, 101)
    _, vis_occ = _render(shape, pose, front, [board])
    assert not vis_occ[J["rkne"]] and not vis_occ[J["lkne"]] and vis_occ[J["head"]]


def test_joints_vis_marks_some_hidden_joints(h36m_records):
    vis = np.stack([r["joints_vis"][:, 0] for r in h36m_records["train"] + h36m_records["validation"]])
    assert 0.5 < vis.mean() < 1.0  # mostly visible, some self-occlusion


def test_occlusion_split_hides_limbs_in_one_or_two_views_of_the_same_sequences(h36m_records, tmp_path):
    out = tmp_path / "occl"
    result = CliRunner().invoke(main, ["synth", "--out", str(out), "--subjects", "9", "--actions", "2,10,15", "--frames", "2",
                                       "--image-size", str(SIZE), "--occlusion", "--workers", "1"])
    assert result.exit_code == 0, result.output
    with open(out / "annot" / "h36m_validation.pkl", "rb") as f:
        occl = pickle.load(f)
    plain = {r["image"]: r for r in h36m_records["validation"]}
    assert len(occl) == len(plain) == 3 * 2 * 4 * 2
    gained: dict[tuple, int] = {}
    for r in occl:
        ref = plain[r["image"]]
        # The same poses and cameras: only objects were added.
        np.testing.assert_array_equal(r["joints_2d"], ref["joints_2d"])
        np.testing.assert_array_equal(r["joints_3d"], ref["joints_3d"])
        hidden, hidden_ref = r["joints_vis"][:, 0] == 0, ref["joints_vis"][:, 0] == 0
        assert np.all(hidden >= hidden_ref)  # an object can hide a joint, never reveal one
        key = (r["action"], r["subaction"], r["image_id"])
        gained[key] = gained.get(key, 0) + int(hidden.sum() > hidden_ref.sum())
    per_frame = np.array(list(gained.values()))
    assert np.mean((per_frame >= 1) & (per_frame <= 3)) >= 0.75  # 1-2 views are targeted; an object may catch a third
    frac = lambda recs: np.mean([r["joints_vis"][:, 0] == 0 for r in recs])  # noqa: E731
    assert frac(occl) > frac(plain.values()) + 0.05
    with pytest.raises(ValueError, match="occlusion"):
        generate(tmp_path / "ski", fmt="skipose", occlusion=True)


# --------------------------------------------------------------------------- Ski-Pose layout
def test_skipose_layout_and_geometry(ski_set):
    root = ski_set / SKIPOSE_ROOT_NAME
    assert len(SKIPOSE_JOINTS) == 17
    centers = {}
    for line in (ski_set / "ski_centers.csv").read_text().splitlines():
        fields = line.split(" ")
        assert len(fields) == 5
        centers[(int(fields[0]), int(fields[1]))] = np.array([float(v) for v in fields[2:]])
    seen_subjects = {}
    for split in ("train", "test"):
        with h5py.File(root / split / "labels.h5", "r") as f:
            assert set(f) == {"seq", "cam", "frame", "subj", "3D", "2D", "cam_intrinsic", "cam_position", "R_cam_2_world"}
            d = {k: f[k][:] for k in f}
        n = len(d["seq"])
        assert n == 6 * 2  # cameras x frames of one sequence
        for key, width in (("3D", 51), ("2D", 34), ("cam_intrinsic", 9), ("cam_position", 3), ("R_cam_2_world", 9)):
            assert d[key].shape == (n, width), key
        for key in ("seq", "cam", "frame", "subj"):
            assert d[key].shape == (n,) and np.issubdtype(d[key].dtype, np.integer), key
        seen_subjects[split] = set(d["subj"].tolist())
        assert set(d["cam"].tolist()) == set(range(6))
        assert np.all((d["2D"] > 0) & (d["2D"] < 1))
        for i in range(n):
            K = np.diag([256.0, 256.0, 1.0]) @ d["cam_intrinsic"][i].reshape(3, 3)
            R = d["R_cam_2_world"][i].reshape(3, 3).T  # world to camera
            C = d["cam_position"][i]
            assert abs(np.linalg.det(R) - 1) < 1e-5
            world = centers[(int(d["seq"][i]), int(d["frame"][i]))] + d["3D"][i].reshape(17, 3) @ R  # metres
            cams = Cameras.from_params(K, R, -R @ C)
            uv = cams.project(torch.as_tensor(world, dtype=torch.float64)).numpy()
            np.testing.assert_allclose(uv, d["2D"][i].reshape(17, 2) * 256.0, atol=0.02)
            np.testing.assert_allclose(d["3D"][i].reshape(17, 3)[0], 0.0, atol=1e-6)  # root-relative
            path = root / split / f"seq_{d['seq'][i]:03d}" / f"cam_{d['cam'][i]:02d}" / f"image_{d['frame'][i]:06d}.png"
            if i < 2:
                assert cv2.imread(str(path)).shape == (256, 256, 3)
            else:
                assert path.is_file()
        # PTZ cameras: a camera's parameters change from frame to frame.
        for cam in range(6):
            rows = np.flatnonzero(d["cam"] == cam)
            assert not np.allclose(d["R_cam_2_world"][rows[0]], d["R_cam_2_world"][rows[1]])
            assert not np.allclose(d["cam_intrinsic"][rows[0]], d["cam_intrinsic"][rows[1]])
            np.testing.assert_allclose(d["cam_position"][rows[0]], d["cam_position"][rows[1]])
        # Metres, a human: 1.3-2.1 m from ankle to head top across the skeleton's extent.
        pose = d["3D"].reshape(n, 17, 3)
        assert 0.8 < np.linalg.norm(pose[:, 10] - pose[:, 3], axis=-1).mean() < 2.1
    assert seen_subjects == {"train": {1}, "test": {5}}
    sheet = cv2.imread(str(ski_set / "preview.png"))
    assert sheet.shape[1] == 6 * 256 and sheet.shape[0] >= 256


# --------------------------------------------------------------------------- determinism, CLI, errors
def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    kwargs = dict(fmt="h36m", subjects=(1, 11), actions=(4,), subactions=(1,), frames=1, image_size=64, seed=3)
    generate(tmp_path / "a", workers=1, **kwargs)
    generate(tmp_path / "b", workers=2, **kwargs)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 4 + 2
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    generate(tmp_path / "c", workers=1, **{**kwargs, "seed": 4})
    assert (tmp_path / "a" / files[0]).read_bytes() != (tmp_path / "c" / files[0]).read_bytes()


def test_skipose_same_bytes(tmp_path):
    for name in ("a", "b"):
        generate(tmp_path / name, fmt="skipose", subjects=(2,), frames=1, seed=1, workers=1)
    for rel in ("ski_centers.csv", f"{SKIPOSE_ROOT_NAME}/train/labels.h5", f"{SKIPOSE_ROOT_NAME}/test/labels.h5"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_cli_writes_a_preview(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main, ["synth", "--out", str(out), "--subjects", "5", "--actions", "3", "--frames", "1",
               "--image-size", "64", "--preview", "--workers", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "8 images" in result.output
    sheet = cv2.imread(str(out / "preview.png"))
    assert sheet is not None and sheet.shape[1] == 4 * 256 and sheet.shape[0] >= 256


def test_bad_arguments_are_explained(tmp_path):
    with pytest.raises(ValueError, match="subjects"):
        generate(tmp_path, subjects=(2,))
    with pytest.raises(ValueError, match="actions"):
        generate(tmp_path, actions=(1,))
    with pytest.raises(ValueError, match="256"):
        generate(tmp_path, fmt="skipose", image_size=128)
    with pytest.raises(ValueError, match="actions"):
        generate(tmp_path, fmt="skipose", actions=(2,))
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--subjects", "one"])
    assert result.exit_code != 0 and "--subjects" in result.output
    # The CLI names its options, not generate()'s parameters.
    for args, line in ((["--image-size", "17"], "Error: --image-size: must be within 32..2048 pixels, got 17"),
                       (["--frames", "0"], "Error: --frames: need at least 1 frame per sequence, got 0"),
                       (["--format", "skipose", "--image-size", "128"],
                        "Error: --image-size: Ski-Pose images are 256 x 256 as published, got 128")):
        result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == line, result.output
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "x"), "--workers", "-1"])
    assert result.exit_code == 2 and "--workers" in result.output


def test_skipose_subjects_outside_the_published_skiers_are_refused(tmp_path):
    from mvpose.data.synth import generate

    with pytest.raises(ValueError, match=r"skiers \(1, 2, 3, 4, 5, 6\).*got \[99\]"):
        generate(tmp_path / "s", fmt="skipose", subjects=(1, 99), frames=1)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.png"))  # nothing rendered
