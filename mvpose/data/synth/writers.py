"""Render sequences and write them in the published Human3.6M and Ski-Pose layouts.

Human3.6M (H36M-Toolbox ``generate_labels.py`` schema)::

    ROOT/annot/h36m_train.pkl, ROOT/annot/h36m_validation.pkl   list of dicts (see h36m_record)
    ROOT/images/s_01_act_02_subact_01_ca_01/s_01_act_02_subact_01_ca_01_000001.jpg

Ski-Pose (Ski-PosePTZ-CameraDataset)::

    OUT/Ski-PosePTZ-CameraDataset-png/{train,test}/labels.h5
    OUT/Ski-PosePTZ-CameraDataset-png/{train,test}/seq_001/cam_00/image_000000.png
    OUT/ski_centers.csv                                          "seq frame X Y Z" (metres)

One task renders one sequence (all cameras, all frames) and returns its annotations, so tasks run
in any order on any number of processes and the files are the same bytes.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from mvpose.data.synth.body import (
    JOINT_OWNERS,
    J,
    body_primitives,
    prop_primitives,
    sample_appearance,
    sample_body_shape,
)
from mvpose.data.synth.cameras import View, capture_center, h36m_rig, ptz_positions, ptz_views
from mvpose.data.synth.motion import (
    WALKING,
    Placement,
    Pose,
    PoseTrack,
    action_track,
    sample_ski_run,
    ski_track,
    solve_pose,
    walk_path,
)
from mvpose.data.synth.render import Frame, Lighting, draw, joint_visibility
from mvpose.data.synth.scene import (
    OCCLUDER_ID,
    chair_primitives,
    occluder_between,
    room_background,
    sample_occluders,
    sample_room,
    sample_slope,
    slope_background,
    slope_objects,
)

log = logging.getLogger(__name__)

__all__ = [
    "H36M_SUBJECTS",
    "H36M_TRAIN_SUBJECTS",
    "H36M_VALIDATION_SUBJECTS",
    "H36M_FPS",
    "SKIPOSE_JOINTS",
    "SKIPOSE_FROM_H36M",
    "SKIPOSE_ROOT_NAME",
    "SKIPOSE_TEST_SUBJECTS",
    "H36MTask",
    "SkiTask",
    "render_h36m_sequence",
    "render_ski_sequence",
    "write_h36m_annotations",
    "write_skipose_annotations",
    "h36m_video_id",
    "h36m_box",
    "body_shape_for_subject",
]

H36M_SUBJECTS = (1, 5, 6, 7, 8, 9, 11)
H36M_TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
H36M_VALIDATION_SUBJECTS = (9, 11)
H36M_FPS = 50.0

# Ski-Pose 17-joint order (the H36M-17 order, with Ski-Pose's names: TransFusion-Pose /
# PPT skipose readers index it exactly like H36M and drop spine and head top for 15 joints).
SKIPOSE_JOINTS = (
    "hip", "rhip", "rknee", "rankle", "lhip", "lknee", "lankle", "spine", "neck",
    "head", "headtop", "lshoulder", "lelbow", "lwrist", "rshoulder", "relbow", "rwrist",
)
_SKI_TO_H36M_NAME = {
    "hip": "root", "rhip": "rhip", "rknee": "rkne", "rankle": "rank", "lhip": "lhip", "lknee": "lkne",
    "lankle": "lank", "spine": "belly", "neck": "neck", "head": "nose", "headtop": "head",
    "lshoulder": "lsho", "lelbow": "lelb", "lwrist": "lwri", "rshoulder": "rsho", "relbow": "relb", "rwrist": "rwri",
}
# For each Ski-Pose joint, its H36M-17 index in our skeleton.
SKIPOSE_FROM_H36M = np.array([J[_SKI_TO_H36M_NAME[n]] for n in SKIPOSE_JOINTS], dtype=np.int64)
SKIPOSE_ROOT_NAME = "Ski-PosePTZ-CameraDataset-png"
SKIPOSE_TEST_SUBJECTS = (5, 6)
SKIPOSE_IMAGE_SIZE = 256

_CAMERA_DICT_CACHE: dict = {}


def body_shape_for_subject(seed: int, subject: int):
    """The body of ``subject`` (same in every sequence of a dataset generated with ``seed``)."""
    return sample_body_shape(np.random.default_rng([seed, 0, subject]))


def h36m_video_id(subject: int, action: int, subaction: int, camera_id: int) -> int:
    """H36M-Toolbox ``video_id``: the running index over subjects 1,5,6,7,8,9,11 x actions 2..16 x
    subactions 1..2 x cameras 0..3 (so the same video has the same id in any subset)."""
    s = H36M_SUBJECTS.index(subject)
    return ((s * 15 + (action - 2)) * 2 + (subaction - 1)) * 4 + camera_id


def h36m_box(joints_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """H36M-Toolbox box ``[x0, y0, x1, y1]``: a 2000 x 2000 mm square around the root, in the root's
    depth plane (1000 mm either side, 900 mm above and 1100 mm below), pinhole-projected."""
    root = joints_cam[J["root"]]
    tl = root + np.array([-1000.0, -900.0, 0.0])
    br = root + np.array([1000.0, 1100.0, 0.0])
    f, c = np.array([K[0, 0], K[1, 1]]), K[:2, 2]
    return np.concatenate([tl[:2] / tl[2] * f + c, br[:2] / br[2] * f + c])


# ---------------------------------------------------------------------------------------------
# Shared per-frame rendering.


def _post(img: np.ndarray, blur: float, noise: np.ndarray) -> np.ndarray:
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _shadow(frame: Frame, view: View, root: np.ndarray, floor_z: np.ndarray, size: float, strength: float) -> None:
    """Darken a soft ellipse of floor under the body (only where the room itself is visible)."""
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    pts = np.stack([root[0] + size * np.cos(ang), root[1] + 0.8 * size * np.sin(ang), np.full_like(ang, 0.0)], axis=-1)
    pts[:, 2] = floor_z(pts[:, 0])
    cam = view.to_camera(pts)
    if np.any(cam[:, 2] < 100):
        return
    uv = view.project_camera(cam)
    lo, hi = uv.min(0), uv.max(0)
    sigma = max(float(hi[0] - lo[0]) / 10, 1.0)
    pad = int(3 * sigma) + 2  # the blurred edge fades out inside the patch
    x0, y0 = np.floor(lo).astype(int) - pad
    x1, y1 = np.ceil(hi).astype(int) + pad + 1
    # Draw on the unclipped patch so that clipping at the image border leaves no hard edge.
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.fillPoly(mask, [np.round((uv - [x0, y0]) * 4).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=2)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x1, view.width), min(y1, view.height)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    mask = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    x0, y0, x1, y1 = cx0, cy0, cx1, cy1
    mask *= frame.ids[y0:y1, x0:x1] == 0
    sub = frame.color[y0:y1, x0:x1]
    sub[:] = (sub * (1.0 - strength * mask[..., None]) + 0.5).astype(np.uint8)


def _frame_primitives(shape, app, track: PoseTrack, pose: Pose, k: int) -> list:
    prims = body_primitives(
        shape, app, pose.joints[k], pose.R_pelvis[k], pose.R_chest[k], pose.R_head[k], pose.foot_dirs[k]
    )
    prims += prop_primitives(shape, app, track.props, pose.joints[k], pose.R_chest[k], pose.foot_dirs[k], track.ground_normal)
    return prims


def _fits(joints: np.ndarray, views: list[View], margin: float) -> bool:
    """All joints of all frames in front of and inside every view (``margin`` pixels from the edge)."""
    for v in views:
        cam = v.to_camera(joints)
        if np.any(cam[..., 2] < 500):
            return False
        uv = v.project_camera(cam)
        if np.any(uv < margin) or np.any(uv[..., 0] > v.width - 1 - margin) or np.any(uv[..., 1] > v.height - 1 - margin):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Human3.6M.


@dataclass(frozen=True)
class H36MTask:
    root: str
    subject: int
    action: int
    subaction: int
    frames: int
    frame_step: int
    image_size: int
    seed: int
    calibration: str | None
    jpeg_quality: int
    occlusion: bool = False


def _h36m_motion(task: H36MTask, rng: np.random.Generator, shape, views: list[View], t: np.ndarray):
    """Place the action in the capture area so the person stays inside all four views."""
    center = capture_center(views)
    margin = 0.04 * task.image_size
    for attempt in range(16):
        shrink = 1.0 - attempt / 20.0
        r = 900.0 * shrink * np.sqrt(rng.random())
        a = rng.uniform(0, 2 * np.pi)
        place = Placement(
            center=center,
            position=center + np.array([r * np.cos(a), r * np.sin(a), 0.0]),
            heading=float(rng.uniform(0, 2 * np.pi)),
            ellipse=(float(rng.uniform(700, 1300) * shrink), float(rng.uniform(1200, 1900) * shrink), float(rng.uniform(-0.3, 0.3))),
            direction=float(rng.choice([-1.0, 1.0])),
            start=float(rng.random()),
        )
        track = action_track(task.action, t, rng, shape, place)
        pose = solve_pose(shape, track)
        if _fits(pose.joints, views, margin):
            return place, track, pose
    log.warning("S%d action %d subaction %d: person leaves a view in some frame", task.subject, task.action, task.subaction)
    return place, track, pose


# Bone lengths (mm) of the stand-in universal skeleton, per (parent, child) limb of skeleton "h36m":
# one fixed body for every subject, as Human3.6M's D3_Positions_mono_universal has (values near the
# Human3.6M subjects' means; the real universal skeleton is not published as a table).
UNIVERSAL_BONES_MM = {
    (0, 1): 133.0, (1, 2): 454.0, (2, 3): 450.0, (0, 4): 133.0, (4, 5): 454.0, (5, 6): 450.0,
    (0, 7): 233.0, (7, 8): 257.0, (8, 9): 121.0, (9, 10): 115.0,
    (8, 11): 151.0, (11, 12): 279.0, (12, 13): 250.0, (8, 14): 151.0, (14, 15): 279.0, (15, 16): 250.0,
}


def universal_stand_in(joints_cam: np.ndarray) -> np.ndarray:
    """A stand-in for ``D3_Positions_mono_universal``: the pose retargeted to one fixed skeleton.

    Args:
        joints_cam: ``(..., 17, 3)`` camera-frame joints (mm) in the order of skeleton "h36m".

    Returns:
        ``(..., 17, 3)`` camera-frame joints (mm): the root kept, every bone's direction kept, its
        length set to :data:`UNIVERSAL_BONES_MM`. This is what the H36M-Toolbox stores in ``joints_3d``
        (``generate_labels.py`` reads ``Poses_D3_Positions_mono_universal``): not the world pose, and
        not the subject's own bone lengths.
    """
    src = np.asarray(joints_cam, dtype=np.float64)
    out = src.copy()
    for (parent, child), length in UNIVERSAL_BONES_MM.items():  # parents come before their children
        bone = src[..., child, :] - src[..., parent, :]
        norm = np.linalg.norm(bone, axis=-1, keepdims=True)
        out[..., child, :] = out[..., parent, :] + bone / np.maximum(norm, 1e-9) * length
    return out


def render_h36m_sequence(task: H36MTask) -> list[dict]:
    """Render one Human3.6M sequence (4 cameras x ``frames``) and return its pickle records."""
    from mvpose.data.h36m import h36m_camera_dict

    rng = np.random.default_rng([task.seed, 1, task.subject, task.action, task.subaction])
    shape = body_shape_for_subject(task.seed, task.subject)
    views = h36m_rig(task.subject, task.image_size, task.calibration)
    image_ids = 1 + task.frame_step * np.arange(task.frames)
    t = rng.uniform(0.0, 30.0) + (image_ids - 1) / H36M_FPS
    place, track, pose = _h36m_motion(task, rng, shape, views, t)

    app = sample_appearance(rng)
    light = Lighting.sample(rng)
    room = sample_room(rng, place.center)
    static: list = []
    if track.chair is not None:
        static += chair_primitives(*track.chair, rng)
    if task.action in WALKING:
        keep_out = walk_path(place, n=180)[0]
    else:
        keep_out = np.concatenate([track.root, track.ankles.reshape(-1, 3)])
    static += sample_occluders(rng, place.center, keep_out, 550.0 + (350.0 if track.chair else 0.0), [v.center for v in views])
    blur = float(rng.choice([0.0, rng.uniform(0.4, 1.0)]))
    noise_sigma = float(rng.uniform(1.0, 4.0))
    shadow = (0.35 * shape.height, float(rng.uniform(0.2, 0.45)))

    prims = [_frame_primitives(shape, app, track, pose, k) for k in range(task.frames)]
    if task.occlusion:
        # Its own generator: the sequence is the same as without occlusion, plus the objects.
        orng = np.random.default_rng([task.seed, 2, task.subject, task.action, task.subaction])
        for k in range(task.frames):
            cams = orng.choice(len(views), size=int(orng.integers(1, 3)), replace=False)
            for c in sorted(int(c) for c in cams):
                prims[k] = prims[k] + occluder_between(orng, pose.joints[k], views[c].center, OCCLUDER_ID + c)[0]
    shape_hw = (task.image_size, task.image_size, 3)
    noise = np.rint(rng.standard_normal(shape_hw, dtype=np.float32) * noise_sigma).astype(np.int16)
    records = []
    for c, view in enumerate(views):
        params = {"K": view.K, "R": view.R, "t": view.t, "dist": view.dist}
        camera = h36m_camera_dict(params)
        background = room_background(room, view, light.tint)
        draw(background, view, static, light)
        subdir = f"s_{task.subject:02d}_act_{task.action:02d}_subact_{task.subaction:02d}_ca_{c + 1:02d}"
        folder = Path(task.root) / "images" / subdir
        folder.mkdir(parents=True, exist_ok=True)
        for k, image_id in enumerate(image_ids):
            frame = background.copy()
            _shadow(frame, view, pose.joints[k, J["root"]], lambda x: np.zeros_like(x), *shadow)
            draw(frame, view, prims[k], light)
            joints_cam = view.to_camera(pose.joints[k])
            joints_2d = view.project_camera(joints_cam)
            vis = joint_visibility(frame, joints_2d, joints_cam[:, 2], JOINT_OWNERS)
            img = _post(frame.color, blur, noise)
            name = f"{subdir}_{int(image_id):06d}.jpg"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, task.jpeg_quality])
            if not ok:
                raise RuntimeError(f"could not encode {folder / name}")
            (folder / name).write_bytes(buf.tobytes())
            box = h36m_box(joints_cam, view.K)
            records.append(
                {
                    "image": f"{subdir}/{name}",
                    "joints_2d": joints_2d.astype(np.float64),
                    "joints_3d": universal_stand_in(joints_cam),  # toolbox semantics: not the world pose
                    "joints_3d_camera": joints_cam.astype(np.float64),
                    "joints_vis": np.repeat(vis.astype(np.float64)[:, None], 3, axis=1),
                    "video_id": h36m_video_id(task.subject, task.action, task.subaction, c),
                    "image_id": int(image_id),
                    "subject": task.subject,
                    "action": task.action,
                    "subaction": task.subaction,
                    "camera_id": c,
                    "source": "h36m",
                    "camera": camera,
                    "center": (0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])),
                    "scale": ((box[2] - box[0]) / 200.0, (box[3] - box[1]) / 200.0),
                    "box": box,
                }
            )
    return records


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _canonical(rec: dict, cameras: dict) -> dict:
    """A fresh record whose object sharing does not depend on where it was built.

    Pickle output depends on object identity (shared objects are written once). Records that
    come back from worker processes share strings differently from records built in-process, so
    every record is rebuilt here: interned keys and source, fresh arrays, one camera dict per
    (subject, camera), as in the H36M-Toolbox pickles.
    """
    out = {}
    for key, value in rec.items():
        key = sys.intern(key)
        if key == "camera":
            value = cameras.setdefault(
                (rec["subject"], rec["camera_id"]), {sys.intern(k): np.asarray(v).astype(np.float64) for k, v in value.items()}
            )
        elif key == "source":
            value = sys.intern(str(value))
        elif isinstance(value, np.ndarray):  # arrays and scalars get numpy's canonical dtype object
            value = value.astype(np.float64)
        elif isinstance(value, tuple):
            value = tuple(np.float64(float(v)) for v in value)
        out[key] = value
    return out


def write_h36m_annotations(root: Path, records: list[dict]) -> tuple[Path, Path]:
    """Write ``annot/h36m_train.pkl`` (subjects 1,5,6,7,8) and ``annot/h36m_validation.pkl`` (9, 11).

    Records of one camera share one camera dict, as in the H36M-Toolbox pickles.
    """
    records = [_canonical(rec, cameras) for cameras in [{}] for rec in records]
    annot = Path(root) / "annot"
    annot.mkdir(parents=True, exist_ok=True)
    train = [r for r in records if r["subject"] in H36M_TRAIN_SUBJECTS]
    val = [r for r in records if r["subject"] not in H36M_TRAIN_SUBJECTS]
    paths = annot / "h36m_train.pkl", annot / "h36m_validation.pkl"
    for path, db in zip(paths, (train, val)):
        _atomic_write(path, pickle.dumps(db, protocol=4))
    return paths


# ---------------------------------------------------------------------------------------------
# Ski-Pose.


@dataclass(frozen=True)
class SkiTask:
    out: str
    split: str
    seq: int
    subject: int
    frames: int
    frame_step: int
    seed: int


def _ski_appearance(rng: np.random.Generator):
    app = sample_appearance(rng)
    bright = lambda: np.clip(rng.uniform(0.0, 1.0, 3) ** 0.5 * rng.uniform(0.6, 1.0), 0, 1)  # noqa: E731
    suit = bright()
    return replace(app, hair=bright(), shirt=suit, sleeve=suit, pants=bright() if rng.random() < 0.5 else suit, long_hair=False)


def render_ski_sequence(task: SkiTask) -> dict[str, np.ndarray]:
    """Render one Ski-Pose sequence (6 PTZ cameras x ``frames``) and return its label rows."""
    rng = np.random.default_rng([task.seed, 2, task.subject, task.seq])
    shape = body_shape_for_subject(task.seed, 100 + task.subject)
    run = sample_ski_run(rng)
    frames = task.frame_step * np.arange(task.frames)
    t = frames / H36M_FPS
    track = ski_track(t, rng, shape, run)
    pose = solve_pose(shape, track)
    app = _ski_appearance(rng)
    light = Lighting.sample(rng, tint=0.05)  # snow stays white
    x = pose.joints[:, J["root"], 0]
    slope = sample_slope(rng, run.angle, run.course_y, (float(x.min()), float(x.max())))
    positions = ptz_positions(rng, (float(x.min()), float(x.max())), run.slope_z, run.course_y)
    views = ptz_views(rng, positions, pose.joints[:, J["root"]], shape.height, SKIPOSE_IMAGE_SIZE)
    blur = float(rng.choice([0.0, rng.uniform(0.4, 0.9)]))
    noise = np.round(rng.normal(0.0, rng.uniform(0.5, 2.5), (SKIPOSE_IMAGE_SIZE, SKIPOSE_IMAGE_SIZE, 3))).astype(np.int16)
    prims = [_frame_primitives(shape, app, track, pose, k) for k in range(task.frames)]
    joints_m = pose.joints[:, SKIPOSE_FROM_H36M] / 1000.0
    root_m = pose.joints[:, J["root"]] / 1000.0
    rows: dict[str, list] = {k: [] for k in ("seq", "cam", "frame", "subj", "3D", "2D", "cam_intrinsic", "cam_position", "R_cam_2_world")}
    base = Path(task.out) / SKIPOSE_ROOT_NAME / task.split / f"seq_{task.seq:03d}"
    for c, cam_views in enumerate(views):
        folder = base / f"cam_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, view in enumerate(cam_views):
            frame = slope_background(slope, view, light.tint)
            _shadow(frame, view, pose.joints[k, J["root"]], run.slope_z, 0.3 * shape.height, 0.25)
            draw(frame, view, slope_objects(slope, view) + prims[k], light)
            img = _post(frame.color, blur, noise)
            ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
            if not ok:
                raise RuntimeError(f"could not encode {folder}")
            (folder / f"image_{int(frames[k]):06d}.png").write_bytes(buf.tobytes())
            R = view.R
            rel = (joints_m[k] - root_m[k]) @ R.T
            uv = view.project(pose.joints[k, SKIPOSE_FROM_H36M])
            K_norm = view.K.copy()
            K_norm[:2] /= SKIPOSE_IMAGE_SIZE
            rows["seq"].append(task.seq)
            rows["cam"].append(c)
            rows["frame"].append(int(frames[k]))
            rows["subj"].append(task.subject)
            rows["3D"].append(rel.reshape(-1))
            rows["2D"].append((uv / SKIPOSE_IMAGE_SIZE).reshape(-1))
            rows["cam_intrinsic"].append(K_norm.reshape(-1))
            rows["cam_position"].append(view.center / 1000.0)
            rows["R_cam_2_world"].append(R.T.reshape(-1))
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["centers"] = np.concatenate([np.full((task.frames, 1), task.seq), frames[:, None], root_m], axis=1)
    return out


SKIPOSE_DTYPES = {
    "seq": np.int32, "cam": np.int32, "frame": np.int32, "subj": np.int32,
    "3D": np.float32, "2D": np.float32, "cam_intrinsic": np.float32, "cam_position": np.float32, "R_cam_2_world": np.float32,
}
SKIPOSE_WIDTHS = {"3D": 51, "2D": 34, "cam_intrinsic": 9, "cam_position": 3, "R_cam_2_world": 9}


def write_skipose_annotations(out: Path, splits: dict[str, list[dict]]) -> list[Path]:
    """Write ``{train,test}/labels.h5`` and ``ski_centers.csv`` (beside the dataset folder)."""
    import h5py

    root = Path(out) / SKIPOSE_ROOT_NAME
    written = []
    centers = []
    for split in ("train", "test"):
        parts = splits.get(split, [])
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "labels.h5"
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w", track_order=False) as f:
            for key, dtype in SKIPOSE_DTYPES.items():
                width = SKIPOSE_WIDTHS.get(key)
                empty = np.zeros((0,) if width is None else (0, width))
                data = np.concatenate([p[key] for p in parts]) if parts else empty
                # track_times=False: no timestamps, so the file is the same bytes on every run.
                f.create_dataset(key, data=data.astype(dtype), track_times=False)
        os.replace(tmp, path)
        written.append(path)
        centers += [p["centers"] for p in parts]
    lines = []
    if centers:
        rows = np.concatenate(centers)
        rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
        lines = [f"{int(r[0])} {int(r[1])} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}" for r in rows]
    csv = Path(out) / "ski_centers.csv"
    _atomic_write(csv, ("\n".join(lines) + "\n").encode() if lines else b"")
    written.append(csv)
    return written
