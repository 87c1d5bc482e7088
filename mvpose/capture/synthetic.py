"""Synthetic recorded captures for tests, benchmarks and docs: a moving skeleton seen by a calibrated rig,
written as OpenPose JSON files exactly like a detector would leave them.

The motion comes from the synthetic generator (:mod:`mvpose.data.synth.motion`: a Human3.6M action solved
with inverse kinematics, so bone lengths are constant). Joints the Human3.6M set lacks (eyes, ears, feet
points) are placed rigidly on the head and feet frames, so every joint set of :mod:`mvpose.skeletons` gets a
plausible rigid skeleton.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mvpose.geometry.camera import Cameras
from mvpose.skeletons import H36M, get_skeleton

__all__ = ["MultiPersonCapture", "SyntheticCapture", "corrupt_keypoints", "make_multi_person_capture",
           "make_synthetic_capture", "project_keypoints",
           "rig_floor_center", "synthetic_motion", "write_openpose_frames"]


def rig_floor_center(cameras: Cameras) -> np.ndarray:
    """The floor point (z = 0) nearest to every camera's optical axis, least squares. (3,) mm."""
    C = cameras.centers.cpu().numpy()
    d = cameras.R[..., 2, :].cpu().numpy()  # optical axes in world coordinates
    A = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    p = np.linalg.solve(A.sum(0), (A @ C[..., None]).sum(0))[:, 0]
    return np.array([p[0], p[1], 0.0])


def synthetic_motion(
    frames: int, fps: float, joint_set: str = "h36m", *, action: int = 15, center=(0.0, 0.0, 0.0), seed: int = 0,
    radius: float = 1000.0, direction: float = 1.0, start: float | None = None, rotation: float = 0.2,
    aspect: float = 1.3,
) -> np.ndarray:
    """A person performing Human3.6M ``action`` (default Walking) around ``center``.

    Args:
        frames: T.
        fps: frame rate (sets the speed of the motion).
        joint_set: skeleton of the output.
        action: Human3.6M action id 2..16.
        center: (3,) floor point of the capture area (mm).
        radius: size of the walking ellipse (mm): semi-axes ``radius`` and ``aspect * radius``.
        direction: +1 counter-clockwise, -1 clockwise around the ellipse.
        start: 0..1 start point on the ellipse (None: random).
        rotation: angle of the ellipse's first axis from world x (rad).

    Returns:
        (T, J, 3) world millimetres, z up.
    """
    from mvpose.data.synth.body import sample_body_shape
    from mvpose.data.synth.motion import Placement, action_track, solve_pose

    rng = np.random.default_rng(seed)
    shape = sample_body_shape(rng)
    center = np.asarray(center, dtype=np.float64)
    heading, random_start = float(rng.uniform(0, 2 * np.pi)), float(rng.random())
    place = Placement(center=center, position=center, heading=heading, ellipse=(radius, aspect * radius, rotation),
                      direction=direction, start=random_start if start is None else start)
    pose = solve_pose(shape, action_track(action, np.arange(frames) / fps, rng, shape, place))
    named = {key: pose.joints[:, j] for j, key in enumerate(H36M.canonical)}
    fwd, left, up = (pose.R_head[..., k] for k in range(3))
    head = named["head_top"] - 110.0 * up
    for side, s in (("left", 1.0), ("right", -1.0)):
        named[f"{side}_eye"] = head + 85.0 * fwd + 20.0 * up + s * 32.0 * left
        named[f"{side}_ear"] = head - 5.0 * fwd + 10.0 * up + s * 75.0 * left
        k = 1 if side == "left" else 0
        foot = pose.foot_dirs[:, k]
        lateral = np.cross(np.array([0.0, 0.0, 1.0]), foot)  # to the person's left of the foot
        ankle = named[f"{side}_ankle"]
        named[f"{side}_heel"] = ankle - 50.0 * foot - 60.0 * np.array([0.0, 0.0, 1.0])
        named[f"{side}_big_toe"] = ankle + 150.0 * foot - 60.0 * np.array([0.0, 0.0, 1.0]) + s * 15.0 * lateral * -1
        named[f"{side}_small_toe"] = ankle + 130.0 * foot - 60.0 * np.array([0.0, 0.0, 1.0]) + s * 35.0 * lateral
    skeleton = get_skeleton(joint_set)
    return np.stack([named[key] for key in skeleton.canonical], axis=1)


def project_keypoints(points: np.ndarray, cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Project (T, J, 3) world points into every camera: (T, V, J, 2) pixels (distorted) and (T, V, J) in-image."""
    X = torch.as_tensor(points, dtype=torch.float64)
    uv = cameras.project(X.unsqueeze(-3)).numpy()
    depth = cameras.depth(X.unsqueeze(-3)).numpy()
    size = cameras.image_size.numpy()[None, :, None, :]
    inside = (depth > 0) & (uv >= 0).all(-1) & (uv < size).all(-1)
    return uv, inside


def corrupt_keypoints(
    uv: np.ndarray, rng: np.random.Generator, *, noise_px: float = 0.0, outlier_rate: float = 0.0,
    outlier_px: tuple[float, float] = (40.0, 200.0), confidence: float = 0.9,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian pixel noise, plus outliers: a share of keypoints moved 40-200 px in a random direction.

    Outliers keep a confident score, like a detector that swaps or mislocates a joint.

    Returns:
        keypoints (T, V, J, 2), outlier mask (T, V, J).
    """
    out = uv + rng.normal(0.0, noise_px, uv.shape) if noise_px > 0 else uv.copy()
    outlier = rng.random(uv.shape[:-1]) < outlier_rate
    angle = rng.uniform(0, 2 * np.pi, uv.shape[:-1])
    dist = rng.uniform(*outlier_px, uv.shape[:-1])
    shift = np.stack([np.cos(angle), np.sin(angle)], axis=-1) * dist[..., None]
    out = np.where(outlier[..., None], out + shift, out)
    return out, outlier


def write_openpose_frames(folder: str | Path, people: np.ndarray, prefix: str = "frame") -> list[Path]:
    """Write OpenPose JSON files ``<prefix>_<frame:012d>_keypoints.json``.

    Args:
        people: (T, P, J, 3) ``(x, y, confidence)``; NaN or confidence 0 joints are written as ``0, 0, 0`` and
            a person with no joint at all is left out.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f, frame in enumerate(people):
        persons = []
        for person in frame:
            ok = (person[:, 2] > 0) & np.isfinite(person).all(axis=-1)
            if not ok.any():
                continue
            flat = np.where(ok[:, None], person, 0.0).round(3).reshape(-1).tolist()
            persons.append({"person_id": [-1], "pose_keypoints_2d": flat, "face_keypoints_2d": [],
                            "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": []})
        path = folder / f"{prefix}_{f:012d}_keypoints.json"
        path.write_text(json.dumps({"version": 1.3, "people": persons}))
        paths.append(path)
    return paths


@dataclass
class SyntheticCapture:
    """Ground truth of a synthetic capture written by :func:`make_synthetic_capture`."""

    points3d: np.ndarray  # (T, J, 3) world mm
    keypoints: np.ndarray  # (T, V, J, 3) written (x, y, confidence) of the subject
    outliers: np.ndarray  # (T, V, J) bool
    names: list[str]
    joint_set: str


def make_synthetic_capture(
    keypoints_dir: str | Path,
    cameras: Cameras,
    frames: int = 120,
    fps: float = 30.0,
    *,
    joint_set: str = "h36m",
    noise_px: float = 1.0,
    outlier_rate: float = 0.0,
    bystander: bool = False,
    seed: int = 0,
    action: int = 15,
) -> SyntheticCapture:
    """Write ``keypoints_dir/<camera>/*.json`` (OpenPose) for a synthetic person seen by ``cameras``.

    Args:
        keypoints_dir: output folder (one sub-folder per camera, named as the cameras).
        cameras: named rig ``(V,)``.
        frames, fps: length and rate of the motion.
        joint_set: skeleton written.
        noise_px: Gaussian noise on every keypoint.
        outlier_rate: share of keypoints moved 40-200 px (see :func:`corrupt_keypoints`).
        bystander: add a second, standing person (listed first, as confident and as noisy as the subject), seen
            by the first two cameras only, like a spectator behind them.
        seed: everything random.
        action: Human3.6M action of the subject.
    """
    rng = np.random.default_rng(seed)
    center = rig_floor_center(cameras)
    X = synthetic_motion(frames, fps, joint_set, action=action, center=center, seed=seed, radius=700.0)
    uv, inside = project_keypoints(X, cameras)
    noisy, outlier = corrupt_keypoints(uv, rng, noise_px=noise_px, outlier_rate=outlier_rate)
    conf = np.where(inside, rng.uniform(0.6, 1.0, inside.shape), 0.0)
    kp = np.concatenate([np.where(inside[..., None], noisy, np.nan), conf[..., None]], axis=-1)
    people = kp[:, :, None]  # (T, V, 1, J, 3)
    if bystander:
        other = synthetic_motion(frames, fps, joint_set, action=2, center=center + np.array([1800.0, 0.0, 0.0]),
                                 seed=seed + 1)
        uv2, inside2 = project_keypoints(other, cameras)
        inside2[:, 2:] = False
        uv2, _ = corrupt_keypoints(uv2, rng, noise_px=noise_px)
        kp2 = np.concatenate([np.where(inside2[..., None], uv2, np.nan), np.where(inside2, 0.95, 0.0)[..., None]], -1)
        people = np.concatenate([kp2[:, :, None], people], axis=2)
    for v, name in enumerate(cameras.names):
        write_openpose_frames(Path(keypoints_dir) / name, people[:, v], prefix=name)
    return SyntheticCapture(X, kp, outlier & inside, list(cameras.names), joint_set)


@dataclass
class MultiPersonCapture:
    """Ground truth of a several-people capture written by :func:`make_multi_person_capture`.

    Attributes:
        points3d: (T, N, J, 3) world mm of the N people.
        keypoints: (T, V, N, J, 3) each person's ``(x, y, confidence)`` as written (NaN / 0 where missed).
        truth: (T, V, P) person (0..N-1) of each detection in the order written to the frame's file; -1 for
            the bystander, -2 for slots past the frame's last detection.
        outliers: (T, V, N, J) bool.
        names: camera names.
        joint_set: skeleton written.
    """

    points3d: np.ndarray
    keypoints: np.ndarray
    truth: np.ndarray
    outliers: np.ndarray
    names: list[str]
    joint_set: str


def make_multi_person_capture(
    keypoints_dir: str | Path,
    cameras: Cameras,
    people: int = 3,
    frames: int = 120,
    fps: float = 30.0,
    *,
    joint_set: str = "h36m",
    noise_px: float = 1.0,
    outlier_rate: float = 0.0,
    miss_rate: float = 0.0,
    bystander: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    present: dict[int, tuple[int, int]] | None = None,
) -> MultiPersonCapture:
    """Write ``keypoints_dir/<camera>/*.json`` (OpenPose) for ``people`` people walking across each other.

    Person ``n`` walks (Human3.6M Walking) around an ellipse centred on the rig's floor centre with semi-axes
    ``600 + 400 n`` and ``1.15 (600 + 400 n)`` mm, in alternate directions: neighbours pass each other side by
    side (about 0.4-0.5 m apart, as people walking past each other do) twice a lap, and cross each other in
    every camera's image.
    Detector output is imitated per frame and view: Gaussian noise, outliers (:func:`corrupt_keypoints`), a
    person's whole detection missing with probability ``miss_rate``, the detections in random order
    (``shuffle``), and a standing ``bystander`` 2.5 m off the area seen by the first camera only.

    Args:
        keypoints_dir: output folder (one sub-folder per camera, named as the cameras).
        cameras: named rig ``(V,)``.
        people: N >= 1.
        frames, fps: length and rate.
        joint_set: skeleton written.
        noise_px, outlier_rate: see :func:`corrupt_keypoints`.
        miss_rate: probability that a person is not detected in a view and frame.
        bystander: add the one-view bystander.
        shuffle: write each frame's detections in random order.
        seed: everything random.
        present: ``{n: (first, stop)}``: person n is in the scene (detected) only in frames ``first..stop-1``
            (entering and leaving); the others throughout.

    Returns:
        :class:`MultiPersonCapture`.
    """
    if people < 1:
        raise ValueError(f"make_multi_person_capture: people must be >= 1, got {people}")
    rng = np.random.default_rng(seed)
    center = rig_floor_center(cameras)
    X = np.stack([
        synthetic_motion(frames, fps, joint_set, action=15, center=center, seed=seed + 7 * n, radius=600.0 + 400.0 * n,
                         direction=1.0 if n % 2 == 0 else -1.0, start=(0.3 * n) % 1.0, rotation=0.3, aspect=1.15)
        for n in range(people)], axis=1)  # (T, N, J, 3)
    T, N, J, _ = X.shape
    V = len(cameras)
    uv, inside = project_keypoints(X.reshape(T, N * J, 3), cameras)  # (T, V, N*J, 2)
    uv = uv.reshape(T, V, N, J, 2)
    inside = inside.reshape(T, V, N, J)
    noisy, outlier = corrupt_keypoints(uv, rng, noise_px=noise_px, outlier_rate=outlier_rate)
    inside &= ~(rng.random((T, V, N, 1)) < miss_rate)
    for n, (first, stop) in (present or {}).items():
        inside[:first, :, n] = False
        inside[stop:, :, n] = False
    conf = np.where(inside, rng.uniform(0.6, 1.0, inside.shape), 0.0)
    kp = np.concatenate([np.where(inside[..., None], noisy, np.nan), conf[..., None]], axis=-1)  # (T, V, N, J, 3)
    slots, ids = kp, np.broadcast_to(np.arange(N), (T, V, N))
    if bystander:
        other = synthetic_motion(frames, fps, joint_set, action=2, center=center + np.array([0.0, 2500.0, 0.0]),
                                 seed=seed + 1000, radius=100.0)
        uv2, inside2 = project_keypoints(other, cameras)
        inside2[:, 1:] = False
        uv2, _ = corrupt_keypoints(uv2, rng, noise_px=noise_px)
        kp2 = np.concatenate([np.where(inside2[..., None], uv2, np.nan), np.where(inside2, 0.95, 0.0)[..., None]], -1)
        slots = np.concatenate([kp2[:, :, None], slots], axis=2)
        ids = np.concatenate([np.full((T, V, 1), -1), ids], axis=2)
    P = slots.shape[2]
    # Per frame and view: detections present, in random order, then empty slots (not written).
    present = (slots[..., 2] > 0).any(axis=-1)  # (T, V, P)
    key = np.where(present, rng.random((T, V, P)) if shuffle else np.arange(P) / P, 2.0)
    order = np.argsort(key, axis=-1, kind="stable")
    written = np.take_along_axis(slots, order[..., None, None], axis=2)
    truth = np.where(np.take_along_axis(present, order, axis=-1), np.take_along_axis(ids, order, axis=-1), -2)
    for v, name in enumerate(cameras.names):
        write_openpose_frames(Path(keypoints_dir) / name, written[:, v], prefix=name)
    return MultiPersonCapture(X, kp, truth, outlier & inside, list(cameras.names), joint_set)
