"""Kinematic skeleton and the motions of the 15 Human3.6M actions (and a skier).

A motion is a :class:`PoseTrack`: per-frame controls (root, heading, spine bend, head turn, world
ankle targets, chest-frame wrist targets). :func:`solve_pose` turns it into H36M-17 joints with
two-bone inverse kinematics for the limbs, so bone lengths are exact and constant, planted feet
stay on the floor, and elbows/knees respect flexion limits. Wrist targets and elbows are kept out
of the torso and head volumes, so no limb passes through the body.

Units: millimetres; world ``z`` up; body frames have columns (forward, left, up).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from mvpose.data.synth.body import (
    BodyShape,
    J,
    head_ellipsoid,
    inside_ellipsoid,
    push_out_of_ellipsoid,
    torso_ellipsoids,
)

__all__ = [
    "PoseTrack",
    "Pose",
    "Placement",
    "LIMITS",
    "ACTIONS",
    "WALKING",
    "solve_pose",
    "two_bone_ik",
    "action_track",
    "walk_path",
    "SkiRun",
    "sample_ski_run",
    "ski_track",
]

# Joint-angle limits (radians) applied by solve_pose; knee/elbow flexion is limited inside the IK.
LIMITS = {
    "lean": (-0.35, 1.25),
    "side": (-0.45, 0.45),
    "twist": (-0.8, 0.8),
    "head_yaw": (-1.2, 1.2),
    "head_pitch": (-0.6, 0.8),
    "pelvis_pitch": (-0.5, 0.8),
    "pelvis_roll": (-0.9, 0.9),
    "max_knee_flexion": np.deg2rad(150.0),
    "max_elbow_flexion": np.deg2rad(150.0),
}

UP = np.array([0.0, 0.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Rotations and small signal helpers (vectorised over frames).


def rot_x(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def rot_y(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def rot_z(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _apply(R: np.ndarray, v) -> np.ndarray:
    """(T, 3, 3) @ (T, 3) or (3,) -> (T, 3)."""
    v = np.asarray(v, dtype=np.float64)
    return np.einsum("tij,...j->t...i", R, v) if v.ndim == 1 else np.einsum("tij,tj->ti", R, v)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def wiggle(t: np.ndarray, rng: np.random.Generator, freq: float, n: int = 3) -> np.ndarray:
    """Smooth random signal in about [-1, 1]: a few sinusoids around ``freq`` Hz."""
    out = np.zeros_like(t)
    total = 0.0
    for _ in range(n):
        w = rng.uniform(0.5, 1.0)
        out += w * np.sin(2 * np.pi * freq * rng.uniform(0.6, 1.6) * t + rng.uniform(0, 2 * np.pi))
        total += w
    return out / total * 1.4


def pulses(t: np.ndarray, period: float, duty: float, phase: float, ramp: float) -> np.ndarray:
    """Smooth 0..1 pulse train: ``duty`` of each period on, ``ramp`` (fraction of period) edges."""
    f = np.mod(t / period + phase, 1.0)
    return np.minimum(smoothstep(f / ramp), smoothstep((duty - f) / ramp)) * (f < duty)


def keyed(t: np.ndarray, hold: float, keys: np.ndarray, ramp: float = 0.35) -> np.ndarray:
    """Hold each row of ``keys (K, ...)`` for ``hold`` seconds, blending into the next over ``ramp``."""
    x = t / hold
    i = np.clip(np.floor(x).astype(int), 0, len(keys) - 2)
    w = smoothstep((x - i - (1.0 - ramp)) / ramp)
    w = w.reshape(w.shape + (1,) * (keys.ndim - 1))
    return keys[i] * (1.0 - w) + keys[i + 1] * w


def n_keys(t: np.ndarray, hold: float) -> int:
    return int(np.ceil(t.max() / hold)) + 2


# ---------------------------------------------------------------------------------------------
# Controls and solved poses.


@dataclass
class PoseTrack:
    """Per-frame motion controls (``T`` frames; angles in radians).

    Attributes:
        root: (T, 3) pelvis (H36M root) position, world mm.
        heading: (T,) pelvis yaw about world z (0 faces +x).
        pelvis_pitch, pelvis_roll: (T,) pelvis tilt (forward, to the left).
        lean, side, twist: (T,) spine bend forward, to the left, and chest yaw relative to pelvis.
        head_yaw, head_pitch: (T,) head turn (left) and nod (down) relative to the chest.
        ankles: (T, 2, 3) world ankle targets of the right and left leg.
        wrists: (T, 2, 3) wrist targets in the chest frame, relative to the thorax.
        elbow_poles: (T, 2, 3) chest-frame directions the elbows bend towards.
        thigh_hands: (T, 2) 0..1 blend of each wrist towards a rest on its thigh (seated).
        foot_dirs: (T, 2, 3) forward directions of the feet, or None (pelvis heading, toes out).
        props: hand-held or worn items drawn with the body ("bag_r", "camera", "phone_l", "skis", ...).
        chair: ``(x, y, heading, seat_top)`` of a chair the body sits on, or None.
    """

    root: np.ndarray
    heading: np.ndarray
    pelvis_pitch: np.ndarray
    pelvis_roll: np.ndarray
    lean: np.ndarray
    side: np.ndarray
    twist: np.ndarray
    head_yaw: np.ndarray
    head_pitch: np.ndarray
    ankles: np.ndarray
    wrists: np.ndarray
    elbow_poles: np.ndarray
    thigh_hands: np.ndarray
    foot_dirs: np.ndarray | None = None
    props: tuple[str, ...] = ()
    chair: tuple[float, float, float, float] | None = None
    ground_normal: np.ndarray = field(default_factory=lambda: UP.copy())


@dataclass
class Pose:
    """Solved poses: ``joints (T, 17, 3)`` world mm and the body frames ``(T, 3, 3)``."""

    joints: np.ndarray
    R_pelvis: np.ndarray
    R_chest: np.ndarray
    R_head: np.ndarray
    foot_dirs: np.ndarray  # (T, 2, 3)


def two_bone_ik(
    base: np.ndarray, target: np.ndarray, a: float, b: float, pole: np.ndarray, max_flexion: float
) -> tuple[np.ndarray, np.ndarray]:
    """Place the middle and end joints of a two-bone chain.

    Args:
        base: (..., 3) chain root (hip, shoulder).
        target: (..., 3) wanted end position (ankle, wrist).
        a, b: bone lengths.
        pole: (..., 3) direction the middle joint (knee, elbow) bends towards.
        max_flexion: largest bend between the two bones (radians).

    Returns:
        mid (..., 3), end (..., 3); ``|mid - base| = a`` and ``|end - mid| = b`` exactly. The end
        reaches the target when it lies between the flexion limit and full extension.
    """
    d_min = np.sqrt(a * a + b * b - 2 * a * b * np.cos(np.pi - max_flexion))
    offset = target - base
    dist = np.linalg.norm(offset, axis=-1, keepdims=True)
    u = offset / np.maximum(dist, 1e-9)
    d = np.clip(dist, d_min, (a + b) * 0.9999)
    x = (a * a - b * b + d * d) / (2 * d)
    h = np.sqrt(np.maximum(a * a - x * x, 0.0))
    n = pole - np.sum(pole * u, axis=-1, keepdims=True) * u
    fallback = np.cross(u, np.array([0.0, 0.0, 1.0]) + 0.1)
    n = np.where(np.linalg.norm(n, axis=-1, keepdims=True) < 1e-6, fallback, n)
    n = _unit(n)
    return base + x * u + h * n, base + d * u


def _push_out_of_capsule(p: np.ndarray, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    ab = b - a
    s = np.clip(np.sum((p - a) * ab, -1, keepdims=True) / np.sum(ab * ab, -1, keepdims=True), 0.0, 1.0)
    q = a + s * ab
    off = p - q
    dist = np.linalg.norm(off, axis=-1, keepdims=True)
    return np.where(dist < r, q + off / np.maximum(dist, 1e-6) * r, p)


def _clearance(points: np.ndarray, volumes: list) -> np.ndarray:
    """Smallest ``normalised radius - 1`` of ``points (..., T, 3)`` over ellipsoids (< 0 is inside)."""
    return np.min([inside_ellipsoid(points, c, A, r) - 1.0 for c, A, r in volumes], axis=0)


def solve_pose(shape: BodyShape, track: PoseTrack) -> Pose:
    """H36M-17 joints (T, 17, 3) from a :class:`PoseTrack` (limits applied, limbs by IK)."""
    lim = LIMITS
    clip = lambda name, v: np.clip(v, *lim[name])  # noqa: E731
    T = track.root.shape[0]
    h = shape.height
    R_pelvis = rot_z(track.heading) @ rot_x(-clip("pelvis_roll", track.pelvis_roll)) @ rot_y(
        clip("pelvis_pitch", track.pelvis_pitch)
    )
    lean, side, twist = clip("lean", track.lean), clip("side", track.side), clip("twist", track.twist)
    R_mid = R_pelvis @ rot_z(twist / 2) @ rot_x(-side / 2) @ rot_y(lean / 2)
    R_chest = R_pelvis @ rot_z(twist) @ rot_x(-side) @ rot_y(lean)
    R_head = R_chest @ rot_z(clip("head_yaw", track.head_yaw)) @ rot_y(clip("head_pitch", track.head_pitch))

    joints = np.zeros((T, 17, 3))
    root = track.root
    joints[:, J["root"]] = root
    joints[:, J["rhip"]] = root + _apply(R_pelvis, [0.0, -shape.hip_half, 0.0])
    joints[:, J["lhip"]] = root + _apply(R_pelvis, [0.0, shape.hip_half, 0.0])
    belly = root + _apply(R_mid, [0.0, 0.0, shape.spine_low])
    thorax = belly + _apply(R_chest, [0.0, 0.0, shape.spine_up])
    joints[:, J["belly"]] = belly
    joints[:, J["neck"]] = thorax
    nose = thorax + _apply(R_head, [0.35 * shape.neck, 0.0, 0.94 * shape.neck])
    joints[:, J["nose"]] = nose
    joints[:, J["head"]] = nose + _apply(R_head, [-0.25 * shape.head, 0.0, 0.97 * shape.head])
    for side_sign, s in ((-1.0, "r"), (1.0, "l")):
        joints[:, J[s + "sho"]] = thorax + _apply(R_chest, [-0.01 * h, side_sign * shape.shoulder_half, -shape.shoulder_drop])

    # Legs: hips to ankle targets, knees bending forward and slightly out.
    for i, (side_sign, s) in enumerate(((-1.0, "r"), (1.0, "l"))):
        pole = _apply(R_pelvis, [1.0, side_sign * 0.12, 0.0])
        knee, ankle = two_bone_ik(joints[:, J[s + "hip"]], track.ankles[:, i], shape.thigh, shape.shin, pole, lim["max_knee_flexion"])
        joints[:, J[s + "kne"]] = knee
        joints[:, J[s + "ank"]] = ankle
    if track.foot_dirs is not None:
        foot_dirs = track.foot_dirs
    else:
        toe = np.deg2rad(10.0)
        foot_dirs = np.stack(
            [_apply(rot_z(track.heading - toe), [1.0, 0, 0]), _apply(rot_z(track.heading + toe), [1.0, 0, 0])], axis=1
        )

    # Arms: wrist targets out of the torso and head, elbows swivelled out of the torso.
    torso = torso_ellipsoids(shape, joints, R_pelvis, R_chest)
    head = head_ellipsoid(shape, joints, R_head)
    hand_r = shape.radius("hand")
    for i, (side_sign, s) in enumerate(((-1.0, "r"), (1.0, "l"))):
        sho = joints[:, J[s + "sho"]]
        target = thorax + _apply(R_chest, track.wrists[:, i])
        hip, knee = joints[:, J[s + "hip"]], joints[:, J[s + "kne"]]
        rest = hip + 0.62 * (knee - hip) + UP * (shape.radius("thigh") + 0.6 * hand_r)
        w = track.thigh_hands[:, i : i + 1]
        target = target * (1.0 - w) + rest * w
        for _ in range(2):
            for c, A, r in torso + [head]:
                target = push_out_of_ellipsoid(target, c, A, r, 1.3 * hand_r)
            for leg in ("r", "l"):
                target = _push_out_of_capsule(target, joints[:, J[leg + "hip"]], joints[:, J[leg + "kne"]], shape.radius("thigh") + hand_r)
        pole = _apply(R_chest, track.elbow_poles[:, i])
        elbow, wrist = _elbow_out_of_torso(sho, target, shape, pole, torso)
        joints[:, J[s + "elb"]] = elbow
        joints[:, J[s + "wri"]] = wrist
    return Pose(joints, R_pelvis, R_chest, R_head, foot_dirs)


_SWIVEL = np.deg2rad([0, 20, -20, 40, -40, 60, -60, 90, -90, 120, -120, 150, -150, 180])


def _elbow_out_of_torso(sho, target, shape: BodyShape, pole, torso) -> tuple[np.ndarray, np.ndarray]:
    """IK for one arm, swivelling the elbow about the shoulder-wrist axis until the arm clears the torso.

    Swivels are tried nearest-first from the wanted pole; per frame the first one whose elbow,
    forearm and wrist lie outside the torso wins, else the one with the most clearance.
    """
    a, b = shape.upper_arm, shape.forearm
    u = _unit(target - sho)
    n0 = _unit(pole - np.sum(pole * u, -1, keepdims=True) * u)
    m0 = np.cross(u, n0)
    best_elbow = best_wrist = best_score = None
    for ang in _SWIVEL:
        p = np.cos(ang) * n0 + np.sin(ang) * m0
        elbow, wrist = two_bone_ik(sho, target, a, b, p, LIMITS["max_elbow_flexion"])
        pts = np.stack([elbow, 0.5 * (elbow + wrist), wrist, 0.3 * sho + 0.7 * elbow])
        score = np.min(_clearance(pts, torso), axis=0)  # (T,)
        if best_score is None:
            best_elbow, best_wrist, best_score = elbow, wrist, score
            continue
        take = (best_score <= 0) & (score > best_score)
        best_elbow = np.where(take[:, None], elbow, best_elbow)
        best_wrist = np.where(take[:, None], wrist, best_wrist)
        best_score = np.where(take, score, best_score)
    return best_elbow, best_wrist


# ---------------------------------------------------------------------------------------------
# Placement and walking paths.


@dataclass(frozen=True)
class Placement:
    """Where a sequence happens: a floor point, a facing direction and the walking ellipse."""

    center: np.ndarray  # (3,) capture-area centre on the floor
    position: np.ndarray  # (3,) standing position on the floor
    heading: float
    ellipse: tuple[float, float, float]  # semi-axes along world x and y (mm), rotation (rad)
    direction: float  # +1 counter-clockwise, -1 clockwise
    start: float  # 0..1 start point on the ellipse


def walk_path(place: Placement, n: int = 1440):
    """Dense closed walking path: returns ``(points (n, 3), cumulative arc length (n,), perimeter)``."""
    ax, ay, rot = place.ellipse
    th = place.direction * 2 * np.pi * (np.arange(n + 1) / n + place.start)
    local = np.stack([ax * np.cos(th), ay * np.sin(th)], axis=-1)
    c, s = np.cos(rot), np.sin(rot)
    xy = local @ np.array([[c, s], [-s, c]]) + place.center[:2]
    pts = np.concatenate([xy, np.zeros((n + 1, 1))], axis=-1)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=-1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    return pts, arc, arc[-1]


def _path_at(path, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts, arc, per = path
    s = np.mod(s, per)
    p = np.stack([np.interp(s, arc, pts[:, k]) for k in range(3)], axis=-1)
    ds = 5.0
    q = np.stack([np.interp(np.mod(s + ds, per), arc, pts[:, k]) for k in range(3)], axis=-1)
    r = np.stack([np.interp(np.mod(s - ds, per), arc, pts[:, k]) for k in range(3)], axis=-1)
    return p, _unit(q - r)


# ---------------------------------------------------------------------------------------------
# Building blocks shared by the actions.


def _empty_track(T: int) -> dict:
    z = np.zeros(T)
    return {
        "pelvis_pitch": z.copy(),
        "pelvis_roll": z.copy(),
        "lean": z.copy(),
        "side": z.copy(),
        "twist": z.copy(),
        "head_yaw": z.copy(),
        "head_pitch": z.copy(),
        "thigh_hands": np.zeros((T, 2)),
    }


def _shoulder(shape: BodyShape, side: float) -> np.ndarray:
    return np.array([-0.01 * shape.height, side * shape.shoulder_half, -shape.shoulder_drop])


def _hang(shape: BodyShape, T: int, side: float, out: float = 0.05, fwd: float = 0.015) -> np.ndarray:
    h = shape.height
    off = np.array([fwd * h, side * out * h, 0.0])
    off[2] = -np.sqrt(max((0.965 * shape.arm) ** 2 - off[0] ** 2 - off[1] ** 2, 1.0))
    return np.tile(_shoulder(shape, side) + off, (T, 1))


def _at(shape: BodyShape, T: int, xyz) -> np.ndarray:
    """Chest-frame point given in reference-body millimetres (scaled to the subject)."""
    return np.tile(np.asarray(xyz, dtype=np.float64) * shape.scale, (T, 1))


def _pole(T: int, xyz) -> np.ndarray:
    return np.tile(np.asarray(xyz, dtype=np.float64), (T, 1))


def _point(shape: BodyShape, side: float, az: np.ndarray, el: np.ndarray, reach: float = 0.97) -> np.ndarray:
    """Wrist target of an arm stretched from the shoulder towards azimuth/elevation (chest frame)."""
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    reach = np.asarray(reach, dtype=np.float64)
    return _shoulder(shape, side) + (reach[..., None] if reach.ndim else reach) * shape.arm * d


def _ground_root(shape: BodyShape, ctl: dict, root_xy: np.ndarray, extension: float) -> np.ndarray:
    """Pelvis height that stretches the straighter leg to ``extension`` of its length."""
    R = rot_z(ctl["heading"]) @ rot_x(-ctl["pelvis_roll"]) @ rot_y(ctl["pelvis_pitch"])
    zs = []
    L = extension * shape.leg
    for i, side in enumerate((-1.0, 1.0)):
        hip_off = _apply(R, [0.0, side * shape.hip_half, 0.0])
        horiz = np.linalg.norm(root_xy[:, :2] + hip_off[:, :2] - ctl["ankles"][:, i, :2], axis=-1)
        horiz = np.minimum(horiz, 0.95 * L)
        zs.append(ctl["ankles"][:, i, 2] - hip_off[:, 2] + np.sqrt(L * L - horiz * horiz))
    return np.minimum(zs[0], zs[1])


def _finish(shape: BodyShape, ctl: dict, root_xy: np.ndarray, crouch: np.ndarray | float = 0.0, ext: float = 0.975) -> PoseTrack:
    z = _ground_root(shape, ctl, root_xy, ext) - crouch
    root = np.concatenate([root_xy[:, :2], z[:, None]], axis=-1)
    return PoseTrack(root=root, **ctl)


def _stand(t: np.ndarray, rng: np.random.Generator, shape: BodyShape, place: Placement, sway: float = 1.0) -> tuple[dict, np.ndarray]:
    """Controls of a person standing with planted feet and a small weight-shifting sway."""
    T = t.shape[0]
    h = shape.height
    ctl = _empty_track(T)
    heading = place.heading + 0.15 * wiggle(t, rng, 0.05)
    ctl["heading"] = heading
    fwd = np.array([np.cos(place.heading), np.sin(place.heading), 0.0])
    left = np.array([-fwd[1], fwd[0], 0.0])
    half = rng.uniform(0.06, 0.11) * h
    stagger = rng.uniform(-0.07, 0.07) * h
    ank = np.stack(
        [place.position - left * half + fwd * stagger, place.position + left * half - fwd * stagger], axis=0
    )
    ank[:, 2] = shape.ankle_height
    ctl["ankles"] = np.tile(ank, (T, 1, 1))
    amp = sway * rng.uniform(0.01, 0.03) * h
    root_xy = place.position + left * (amp * wiggle(t, rng, 0.12))[:, None] + fwd * (0.3 * amp * wiggle(t, rng, 0.1))[:, None]
    ctl["side"] = 0.04 * sway * wiggle(t, rng, 0.12)
    ctl["head_yaw"] = 0.25 * wiggle(t, rng, 0.15)
    ctl["head_pitch"] = 0.05 + 0.08 * wiggle(t, rng, 0.1)
    ctl["twist"] = 0.08 * wiggle(t, rng, 0.08)
    ctl["lean"] = 0.04 + 0.03 * wiggle(t, rng, 0.1)
    ctl["wrists"] = np.stack([_hang(shape, T, -1.0), _hang(shape, T, 1.0)], axis=1)
    ctl["elbow_poles"] = np.stack([_pole(T, [-1.0, -0.5, -0.2]), _pole(T, [-1.0, 0.5, -0.2])], axis=1)
    return ctl, root_xy


def _seat(shape: BodyShape, place: Placement, rng: np.random.Generator, knee_reach: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Seat position, seated pelvis height and the two planted ankle positions."""
    h = shape.height
    fwd = np.array([np.cos(place.heading), np.sin(place.heading), 0.0])
    left = np.array([-fwd[1], fwd[0], 0.0])
    half = rng.uniform(0.07, 0.12) * h
    ank = np.stack([place.position + fwd * knee_reach * shape.thigh - left * half, place.position + fwd * knee_reach * shape.thigh + left * half])
    ank += fwd * (rng.uniform(-0.04, 0.04, size=(2, 1)) * h)
    ank[:, 2] = shape.ankle_height
    z_seated = shape.ankle_height + 0.96 * shape.shin + rng.uniform(-0.02, 0.03) * h
    return place.position.copy(), z_seated, ank


def _seated(t: np.ndarray, rng: np.random.Generator, shape: BodyShape, place: Placement) -> tuple[dict, np.ndarray, np.ndarray]:
    """Controls of a person sitting on a chair (root fixed above the seat)."""
    T = t.shape[0]
    ctl, _ = _stand(t, rng, shape, place, sway=0.0)
    seat, z, ank = _seat(shape, place, rng, rng.uniform(0.75, 1.1))
    ctl["ankles"] = np.tile(ank, (T, 1, 1))
    ctl["heading"] = np.full(T, place.heading)
    ctl["pelvis_pitch"] = np.full(T, rng.uniform(-0.2, 0.05))
    ctl["lean"] = rng.uniform(0.0, 0.35) + 0.1 * wiggle(t, rng, 0.1)
    ctl["thigh_hands"] = np.ones((T, 2))
    root = np.tile(np.array([seat[0], seat[1], z]), (T, 1))
    return ctl, root, ank


def _chair_of(shape: BodyShape, place: Placement, z_seated: float) -> tuple[float, float, float, float]:
    seat_top = z_seated - 0.042 * shape.height * shape.girth
    back = -0.02 * shape.height
    return (
        float(place.position[0] + back * np.cos(place.heading)),
        float(place.position[1] + back * np.sin(place.heading)),
        float(place.heading),
        float(seat_top),
    )


def _walk(t: np.ndarray, rng: np.random.Generator, shape: BodyShape, place: Placement, speed: float, arm_swing: float) -> tuple[dict, np.ndarray]:
    """Controls of a person walking around the ellipse: planted feet, swinging arms."""
    T = t.shape[0]
    h = shape.height
    ctl = _empty_track(T)
    path = walk_path(place)
    step = rng.uniform(0.33, 0.38) * h * (speed / 1200.0) ** 0.35
    s0 = rng.uniform(0, path[2])
    s = s0 + speed * t
    pos, tangent = _path_at(path, s)
    ctl["heading"] = np.arctan2(tangent[:, 1], tangent[:, 0])
    phase = s / (2 * step)
    stance = 0.56
    width = rng.uniform(0.055, 0.075) * h
    lift = rng.uniform(0.05, 0.08) * h
    heel = 0.04 * h
    ankles = np.zeros((T, 2, 3))
    for i, side in enumerate((-1.0, 1.0)):
        ph = phase - 0.5 * i
        n = np.floor(ph)
        f = ph - n

        def plant(k):
            p, tan = _path_at(path, (2 * k + i) * step + 0.42 * step)
            left = np.stack([-tan[:, 1], tan[:, 0], np.zeros_like(k)], axis=-1)
            out = p + side * width * left
            out[:, 2] = shape.ankle_height
            return out

        p0, p1 = plant(n), plant(n + 1)
        u = np.clip((f - stance) / (1 - stance), 0, 1)
        swing = p0 + (p1 - p0) * smoothstep(u)[:, None]
        lift_z = (1 - u) * heel + lift * np.sin(np.pi * u)
        # The heel rises only once the other foot is down, so one foot is always flat on the floor.
        heel_z = heel * smoothstep((f - 0.5) / (stance - 0.5))
        a = np.where((f < stance)[:, None], p0 + UP * heel_z[:, None], swing + UP * lift_z[:, None])
        ankles[:, i] = a
    ctl["ankles"] = ankles
    cyc = 2 * np.pi * phase
    ctl["lean"] = 0.06 + 0.02 * np.cos(2 * cyc)
    ctl["twist"] = 0.08 * np.sin(cyc)
    ctl["pelvis_roll"] = 0.03 * np.sin(cyc)
    ctl["head_pitch"] = 0.1 + 0.05 * wiggle(t, rng, 0.2)
    ctl["head_yaw"] = 0.15 * wiggle(t, rng, 0.15)
    wrists = []
    for side, sign in ((-1.0, -1.0), (1.0, 1.0)):
        psi = sign * arm_swing * np.cos(cyc)
        reach = 0.95 - 0.12 * np.maximum(np.sin(psi), 0) / max(np.sin(arm_swing), 1e-3)
        wrists.append(_point(shape, side, np.full(T, side * 0.12), psi - np.pi / 2, reach))
    ctl["wrists"] = np.stack(wrists, axis=1)
    # Swinging arms bend at the elbow forwards: poles point backwards.
    ctl["elbow_poles"] = np.stack([_pole(T, [-1.0, -0.4, 0.0]), _pole(T, [-1.0, 0.4, 0.0])], axis=1)
    bob = 0.01 * h * np.cos(2 * cyc)
    return ctl, pos + UP * bob[:, None]


# ---------------------------------------------------------------------------------------------
# The 15 actions. Each returns a PoseTrack for times ``t`` (seconds). ``side`` -1 is the right
# arm, +1 the left; arm index 0 is right, 1 is left.


def _arm_index(side: float) -> int:
    return 0 if side < 0 else 1


def _directions(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _stand(t, rng, shape, place)
    hold = rng.uniform(1.8, 3.0)
    K = n_keys(t, hold)
    sides = rng.choice([-1.0, 1.0], size=K)
    az = sides * rng.uniform(0.0, 1.3, size=K)
    el = rng.uniform(-0.35, 0.45, size=K)
    on = (rng.random(K) < 0.8).astype(float)
    keys = np.stack([az, el, on, (sides > 0).astype(float)], axis=1)
    k = keyed(t, hold, keys)
    for side in (-1.0, 1.0):
        i = _arm_index(side)
        active = k[:, 2] * (k[:, 3] if side > 0 else 1.0 - k[:, 3])
        target = _point(shape, side, k[:, 0], k[:, 1])
        ctl["wrists"][:, i] = ctl["wrists"][:, i] * (1 - active[:, None]) + target * active[:, None]
        ctl["elbow_poles"][:, i] = _pole(T, [0.0, side * 0.3, -1.0])
    ctl["head_yaw"] = 0.6 * k[:, 0] * k[:, 2] + 0.1 * wiggle(t, rng, 0.2)
    ctl["twist"] = 0.3 * k[:, 0] * k[:, 2]
    return _finish(shape, ctl, root_xy)


def _gesture(t, rng, shape, T, side, amp=1.0):
    return _at(shape, T, [250, side * 140, -130]) + amp * shape.scale * np.stack(
        [90 * wiggle(t, rng, 0.5), side * 70 * wiggle(t, rng, 0.4), 130 * wiggle(t, rng, 0.6)], axis=-1
    )


def _discussion(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _stand(t, rng, shape, place, sway=1.5)
    for side in (-1.0, 1.0):
        i = _arm_index(side)
        busy = 0.5 + 0.5 * np.clip(1.5 * wiggle(t, rng, 0.15), -1, 1)
        g = _gesture(t, rng, shape, T, side)
        ctl["wrists"][:, i] = ctl["wrists"][:, i] * (1 - busy[:, None]) + g * busy[:, None]
        ctl["elbow_poles"][:, i] = _pole(T, [-0.3, side * 0.6, -1.0])
    ctl["twist"] = 0.25 * wiggle(t, rng, 0.1)
    ctl["head_yaw"] = 0.45 * wiggle(t, rng, 0.12)
    ctl["lean"] = 0.08 + 0.06 * wiggle(t, rng, 0.2)
    return _finish(shape, ctl, root_xy)


def _mouth(shape, T, side):
    return _at(shape, T, [175, side * 35, 95])


def _eating(t, rng, shape, place):
    T = len(t)
    seated = rng.random() < 0.5
    if seated:
        ctl, root, _ = _seated(t, rng, shape, place)
        root_xy = root
    else:
        ctl, root_xy = _stand(t, rng, shape, place, sway=0.5)
    side = rng.choice([-1.0, 1.0])
    i, o = _arm_index(side), _arm_index(-side)
    plate = _at(shape, T, [290, -side * 60, -170])
    b = pulses(t, rng.uniform(2.5, 4.5), rng.uniform(0.35, 0.5), rng.random(), 0.3)
    rest = _at(shape, T, [320, side * 120, -190])
    ctl["wrists"][:, i] = rest * (1 - b[:, None]) + _mouth(shape, T, side) * b[:, None]
    ctl["wrists"][:, o] = plate
    ctl["thigh_hands"][:] = 0.0
    ctl["elbow_poles"][:, i] = _pole(T, [-0.2, side * 0.5, -1.0])
    ctl["elbow_poles"][:, o] = _pole(T, [-0.3, -side * 0.4, -1.0])
    ctl["head_pitch"] = 0.35 - 0.25 * b + 0.05 * wiggle(t, rng, 0.2)
    ctl["lean"] = ctl["lean"] + 0.1 * b
    if seated:
        return replace(_track_from(ctl, root_xy), chair=_chair_of(shape, place, root_xy[0, 2]))
    return _finish(shape, ctl, root_xy)


def _track_from(ctl: dict, root: np.ndarray) -> PoseTrack:
    return PoseTrack(root=root.copy(), **ctl)


def _greeting(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _stand(t, rng, shape, place)
    side = rng.choice([-1.0, 1.0])
    i = _arm_index(side)
    wave = pulses(t, rng.uniform(3.0, 5.0), rng.uniform(0.4, 0.6), rng.random(), 0.15)
    shake = pulses(t, rng.uniform(4.0, 6.0), 0.3, rng.random(), 0.2) * (1 - wave)
    f = rng.uniform(1.5, 2.5)
    up = _shoulder(shape, side) + shape.scale * np.stack(
        [np.full(T, 90.0), side * (150 + 110 * np.sin(2 * np.pi * f * t)), np.full(T, 330.0)], axis=-1
    )
    hand = _at(shape, T, [430, side * 110, -170])
    w = ctl["wrists"][:, i]
    ctl["wrists"][:, i] = w * (1 - wave - shake)[:, None] + up * wave[:, None] + hand * shake[:, None]
    ctl["elbow_poles"][:, i] = _pole(T, [0.0, side * 1.0, -0.6])
    ctl["lean"] = ctl["lean"] + 0.2 * shake
    ctl["head_yaw"] = 0.2 * wiggle(t, rng, 0.1)
    return _finish(shape, ctl, root_xy)


def _phoning(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _stand(t, rng, shape, place, sway=1.2)
    side = rng.choice([-1.0, 1.0])
    i, o = _arm_index(side), _arm_index(-side)
    ctl["wrists"][:, i] = _at(shape, T, [20, side * 95, 115]) + shape.scale * 15 * wiggle(t, rng, 0.3)[:, None]
    ctl["elbow_poles"][:, i] = _pole(T, [0.2, side * 1.0, -0.8])
    mode = rng.integers(3)
    if mode == 0:
        ctl["wrists"][:, o] = _at(shape, T, [-10, -side * 200, -250])  # hand on hip
        ctl["elbow_poles"][:, o] = _pole(T, [-0.3, -side * 1.0, 0.0])
    elif mode == 1:
        ctl["wrists"][:, o] = _gesture(t, rng, shape, T, -side, 0.7)
        ctl["elbow_poles"][:, o] = _pole(T, [-0.3, -side * 0.6, -1.0])
    ctl["head_pitch"] = 0.1 + 0.1 * wiggle(t, rng, 0.1)
    ctl["head_yaw"] = -side * 0.15 + 0.2 * wiggle(t, rng, 0.1)
    ctl["twist"] = 0.2 * wiggle(t, rng, 0.07)
    return replace(_finish(shape, ctl, root_xy), props=(f"phone_{'r' if side < 0 else 'l'}",))


def _photo(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _stand(t, rng, shape, place, sway=0.6)
    up = pulses(t, rng.uniform(2.0, 4.0), rng.uniform(0.5, 0.8), rng.random(), 0.2)
    for side in (-1.0, 1.0):
        i = _arm_index(side)
        face = _at(shape, T, [240, side * 75, 120])
        ctl["wrists"][:, i] = ctl["wrists"][:, i] * (1 - up[:, None]) + face * up[:, None]
        ctl["elbow_poles"][:, i] = _pole(T, [0.0, side * 1.0, -1.0])
    ctl["twist"] = 0.45 * wiggle(t, rng, 0.08)
    ctl["head_pitch"] = 0.05 + 0.1 * wiggle(t, rng, 0.1)
    ctl["head_yaw"] = 0.05 * wiggle(t, rng, 0.1)
    crouch = shape.height * rng.uniform(0.0, 0.12) * np.clip(wiggle(t, rng, 0.07), 0, 1)
    ctl["lean"] = ctl["lean"] + crouch / shape.height
    return replace(_finish(shape, ctl, root_xy, crouch=crouch), props=("camera",))


_POSES = {
    # (right wrist, left wrist) in reference mm, lean, side, twist
    "arms_up": ([60, -220, 620], [60, 220, 620]),
    "akimbo": ([-10, -200, -250], [-10, 200, -250]),
    "t_pose": ([0, -700, 20], [0, 700, 20]),
    "right_up": ([60, -200, 620], None),
    "left_up": (None, [60, 200, 620]),
    "behind_head": ([-60, -150, 280], [-60, 150, 280]),
    "flex": ([80, -300, 200], [80, 300, 200]),
    "forward": ([600, -150, 40], [600, 150, 40]),
    "crossed": ([150, 110, -110], [140, -110, -90]),
}


def _posing(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _stand(t, rng, shape, place, sway=0.4)
    names = list(_POSES)
    hold = rng.uniform(2.0, 3.5)
    K = n_keys(t, hold)
    keys = []
    for _ in range(K):
        r, l = _POSES[names[rng.integers(len(names))]]
        row = []
        for side, p in ((-1.0, r), (1.0, l)):
            q = _hang(shape, 1, side)[0] if p is None else np.asarray(p, float) * shape.scale
            row.append(q + rng.normal(0, 25, 3) * shape.scale)
        row = np.concatenate(row + [[rng.uniform(-0.1, 0.35), rng.uniform(-0.25, 0.25), rng.uniform(-0.4, 0.4), rng.uniform(-0.5, 0.5)]])
        keys.append(row)
    k = keyed(t, hold, np.array(keys))
    ctl["wrists"] = k[:, :6].reshape(T, 2, 3)
    ctl["elbow_poles"] = np.stack([_pole(T, [-0.3, -1.0, -0.5]), _pole(T, [-0.3, 1.0, -0.5])], axis=1)
    ctl["lean"], ctl["side"], ctl["twist"], ctl["head_yaw"] = k[:, 6], k[:, 7], k[:, 8], k[:, 9]
    return _finish(shape, ctl, root_xy)


def _purchases(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _stand(t, rng, shape, place)
    side = rng.choice([-1.0, 1.0])
    i, o = _arm_index(side), _arm_index(-side)
    ctl["wrists"][:, i] = _hang(shape, T, side, out=0.09, fwd=0.03)
    reach = pulses(t, rng.uniform(3.0, 5.0), rng.uniform(0.4, 0.6), rng.random(), 0.25)
    el = rng.uniform(-0.9, 0.2)
    target = _point(shape, -side, np.full(T, -side * rng.uniform(0.0, 0.6)), np.full(T, el))
    ctl["wrists"][:, o] = ctl["wrists"][:, o] * (1 - reach[:, None]) + target * reach[:, None]
    ctl["elbow_poles"][:, o] = _pole(T, [0.0, -side * 0.4, -1.0])
    ctl["lean"] = ctl["lean"] + reach * (0.15 + 0.45 * max(-el, 0))
    ctl["head_pitch"] = 0.1 + 0.3 * reach
    return replace(_finish(shape, ctl, root_xy), props=(f"bag_{'r' if side < 0 else 'l'}",))


def _sitting_arms(t, rng, shape, ctl):
    T = len(t)
    mode = rng.integers(4)
    if mode == 1:  # talking with one hand
        side = rng.choice([-1.0, 1.0])
        i = _arm_index(side)
        busy = 0.5 + 0.5 * np.clip(1.5 * wiggle(t, rng, 0.15), -1, 1)
        ctl["thigh_hands"][:, i] = 1 - busy
        ctl["wrists"][:, i] = _gesture(t, rng, shape, T, side)
        ctl["elbow_poles"][:, i] = _pole(T, [-0.3, side * 0.6, -1.0])
    elif mode == 2:  # phone at the ear
        side = rng.choice([-1.0, 1.0])
        i = _arm_index(side)
        ctl["thigh_hands"][:, i] = 0.0
        ctl["wrists"][:, i] = _at(shape, T, [20, side * 95, 115])
        ctl["elbow_poles"][:, i] = _pole(T, [0.2, side * 1.0, -0.8])
    elif mode == 3:  # arms crossed
        ctl["thigh_hands"][:] = 0.0
        ctl["wrists"] = np.stack([_at(shape, T, [150, 110, -110]), _at(shape, T, [140, -110, -90])], axis=1)
        ctl["elbow_poles"] = np.stack([_pole(T, [0.2, -0.6, -1.0]), _pole(T, [0.2, 0.6, -1.0])], axis=1)


def _sitting(t, rng, shape, place):
    ctl, root, _ = _seated(t, rng, shape, place)
    _sitting_arms(t, rng, shape, ctl)
    ctl["head_yaw"] = 0.4 * wiggle(t, rng, 0.1)
    ctl["twist"] = 0.2 * wiggle(t, rng, 0.08)
    ctl["side"] = 0.08 * wiggle(t, rng, 0.07)
    return replace(_track_from(ctl, root), chair=_chair_of(shape, place, root[0, 2]))


def _sitting_down(t, rng, shape, place):
    T = len(t)
    h = shape.height
    ctl, _ = _stand(t, rng, shape, place, sway=0.0)
    seat, z_seat, ank = _seat(shape, place, rng, rng.uniform(0.55, 0.7))
    ctl["ankles"] = np.tile(ank, (T, 1, 1))
    ctl["heading"] = np.full(T, place.heading)
    period = rng.uniform(7.0, 11.0)
    f = np.mod(t / period + rng.random(), 1.0)
    down = smoothstep((f - 0.15) / 0.18)
    upw = smoothstep((f - 0.75) / 0.18)
    s = down * (1 - upw)
    fwd = np.array([np.cos(place.heading), np.sin(place.heading), 0.0])
    stand_xy = 0.5 * (ank[0] + ank[1]) - fwd * 0.03 * h
    root_xy = seat * s[:, None] + stand_xy * (1 - s[:, None])
    ctl_stand = dict(ctl)
    z_stand = _ground_root(shape, ctl_stand, root_xy, 0.975)
    z = z_stand * (1 - s) + z_seat * s
    transit = 4 * s * (1 - s)
    ctl["lean"] = 0.05 + 0.15 * s + 0.75 * transit
    ctl["pelvis_pitch"] = 0.35 * transit - 0.1 * s
    ctl["thigh_hands"] = np.tile((0.3 + 0.7 * np.maximum(s, transit))[:, None], (1, 2))
    ctl["head_pitch"] = 0.1 + 0.2 * transit
    root = np.concatenate([root_xy[:, :2], z[:, None]], axis=-1)
    return replace(_track_from(ctl, root), chair=_chair_of(shape, place, z_seat))


def _smoking(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _stand(t, rng, shape, place, sway=0.8)
    side = rng.choice([-1.0, 1.0])
    i, o = _arm_index(side), _arm_index(-side)
    b = pulses(t, rng.uniform(4.0, 7.0), rng.uniform(0.25, 0.4), rng.random(), 0.25)
    rest = _hang(shape, T, side, out=0.07, fwd=0.08) * 0.6 + _at(shape, T, [300, side * 150, -200]) * 0.4
    ctl["wrists"][:, i] = rest * (1 - b[:, None]) + _mouth(shape, T, side) * b[:, None]
    ctl["elbow_poles"][:, i] = _pole(T, [-0.2, side * 0.6, -1.0])
    ctl["wrists"][:, o] = _at(shape, T, [175, side * 30, -160])  # across the belly
    ctl["elbow_poles"][:, o] = _pole(T, [0.0, -side * 0.7, -1.0])
    ctl["head_yaw"] = 0.3 * wiggle(t, rng, 0.1)
    return _finish(shape, ctl, root_xy)


def _waiting(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _stand(t, rng, shape, place, sway=2.0)
    mode = rng.integers(4)
    if mode == 1:  # hands behind the back
        ctl["wrists"] = np.stack([_at(shape, T, [-190, -45, -300]), _at(shape, T, [-190, 45, -300])], axis=1)
        ctl["elbow_poles"] = np.stack([_pole(T, [-0.6, -1.0, -0.3]), _pole(T, [-0.6, 1.0, -0.3])], axis=1)
    elif mode == 2:  # arms crossed
        ctl["wrists"] = np.stack([_at(shape, T, [150, 110, -110]), _at(shape, T, [140, -110, -90])], axis=1)
        ctl["elbow_poles"] = np.stack([_pole(T, [0.2, -0.6, -1.0]), _pole(T, [0.2, 0.6, -1.0])], axis=1)
    elif mode == 3:  # hands on hips
        ctl["wrists"] = np.stack([_at(shape, T, [-10, -200, -250]), _at(shape, T, [-10, 200, -250])], axis=1)
        ctl["elbow_poles"] = np.stack([_pole(T, [-0.3, -1.0, 0.0]), _pole(T, [-0.3, 1.0, 0.0])], axis=1)
    ctl["head_yaw"] = 0.6 * wiggle(t, rng, 0.08)
    ctl["head_pitch"] = 0.1 * wiggle(t, rng, 0.1)
    return _finish(shape, ctl, root_xy)


def _walk_dog(t, rng, shape, place):
    T = len(t)
    ctl, root_xy = _walk(t, rng, shape, place, rng.uniform(700, 1100), rng.uniform(0.15, 0.3))
    side = rng.choice([-1.0, 1.0])
    i = _arm_index(side)
    ctl["wrists"][:, i] = _at(shape, T, [300, side * 170, -270]) + shape.scale * 40 * wiggle(t, rng, 0.5)[:, None]
    ctl["elbow_poles"][:, i] = _pole(T, [-0.5, side * 0.5, -1.0])
    ctl["head_pitch"] = 0.25 + 0.15 * wiggle(t, rng, 0.15)
    ctl["head_yaw"] = side * 0.2 + 0.25 * wiggle(t, rng, 0.2)
    return _finish(shape, ctl, root_xy, ext=0.985)


def _walking(t, rng, shape, place):
    ctl, root_xy = _walk(t, rng, shape, place, rng.uniform(1000, 1450), rng.uniform(0.25, 0.45))
    return _finish(shape, ctl, root_xy, ext=0.985)


def _walk_together(t, rng, shape, place):
    ctl, root_xy = _walk(t, rng, shape, place, rng.uniform(700, 1000), rng.uniform(0.1, 0.25))
    side = -place.direction  # the companion walks on the inner side of the loop
    ctl["head_yaw"] = side * rng.uniform(0.3, 0.7) * (0.6 + 0.4 * wiggle(t, rng, 0.1))
    ctl["twist"] = ctl["twist"] + side * 0.1
    return _finish(shape, ctl, root_xy, ext=0.985)


ACTIONS: dict[int, Callable] = {
    2: _directions,
    3: _discussion,
    4: _eating,
    5: _greeting,
    6: _phoning,
    7: _photo,
    8: _posing,
    9: _purchases,
    10: _sitting,
    11: _sitting_down,
    12: _smoking,
    13: _waiting,
    14: _walk_dog,
    15: _walking,
    16: _walk_together,
}
# Actions that walk around the capture area (their occluders keep clear of the whole loop).
WALKING = (14, 15, 16)


def action_track(action: int, t: np.ndarray, rng: np.random.Generator, shape: BodyShape, place: Placement) -> PoseTrack:
    """Motion controls of Human3.6M ``action`` (2..16) at times ``t`` (seconds)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown Human3.6M action id {action}; expected one of {sorted(ACTIONS)}")
    return ACTIONS[action](np.asarray(t, dtype=np.float64), rng, shape, place)


# ---------------------------------------------------------------------------------------------
# Skiing.

GRAVITY = 9810.0  # mm / s^2


@dataclass(frozen=True)
class SkiRun:
    """A carving run down the slope ``z = -tan(angle) x``: ``y = amp sin(2 pi x / wavelength + phase)``."""

    x0: float
    speed: float  # mm/s along x
    amp: float
    wavelength: float
    phase: float
    angle: float

    def course_y(self, x: np.ndarray) -> np.ndarray:
        return self.amp * np.sin(2 * np.pi * x / self.wavelength + self.phase)

    def slope_z(self, x: np.ndarray) -> np.ndarray:
        return -np.tan(self.angle) * x


def sample_ski_run(rng: np.random.Generator) -> SkiRun:
    return SkiRun(
        x0=float(rng.uniform(-20000, 20000)),
        speed=float(rng.uniform(6000, 10000)),
        amp=float(rng.uniform(1500, 2500)),
        wavelength=float(rng.uniform(30000, 40000)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        angle=float(rng.uniform(np.deg2rad(12), np.deg2rad(25))),
    )


def ski_track(t: np.ndarray, rng: np.random.Generator, shape: BodyShape, run: SkiRun) -> PoseTrack:
    """A crouched skier carving turns: inclined into each turn, skis on the snow, poles in hand."""
    t = np.asarray(t, dtype=np.float64)
    T = t.shape[0]
    h = shape.height
    ctl = _empty_track(T)
    x = run.x0 + run.speed * t
    k = 2 * np.pi / run.wavelength
    arg = k * x + run.phase
    dy = run.amp * k * np.cos(arg)
    d2y = -run.amp * k * k * np.sin(arg)
    heading = np.arctan2(dy, 1.0)
    v = run.speed * np.sqrt(1 + dy * dy)
    curvature = d2y / (1 + dy * dy) ** 1.5
    incline = np.clip(np.arctan(v * v * curvature / GRAVITY), -0.7, 0.7)
    ctl["heading"] = heading
    fwd = np.stack([np.cos(heading), np.sin(heading), np.zeros(T)], axis=-1)
    left = np.stack([-np.sin(heading), np.cos(heading), np.zeros(T)], axis=-1)
    normal = np.array([np.sin(run.angle), 0.0, np.cos(run.angle)])
    mid = np.stack([x, run.course_y(x), run.slope_z(x)], axis=-1)
    half = rng.uniform(0.06, 0.08) * h
    ankles = np.zeros((T, 2, 3))
    for i, side in enumerate((-1.0, 1.0)):
        p = mid + side * half * left
        p[:, 2] = run.slope_z(p[:, 0]) + shape.ankle_height / np.cos(run.angle)
        ankles[:, i] = p
    ctl["ankles"] = ankles
    crouch = rng.uniform(0.8, 0.9) + 0.04 * np.cos(2 * arg)
    incl_up = np.cos(incline)[:, None] * UP + np.sin(incline)[:, None] * left
    root = mid + normal * shape.ankle_height + incl_up * (crouch * shape.leg)[:, None] - fwd * 0.05 * h
    ctl["pelvis_roll"] = 0.8 * incline
    ctl["pelvis_pitch"] = np.full(T, rng.uniform(0.25, 0.5))
    ctl["lean"] = rng.uniform(0.15, 0.35) + 0.05 * wiggle(t, rng, 0.5)
    ctl["side"] = -0.4 * incline
    ctl["twist"] = -0.5 * heading
    ctl["head_pitch"] = -0.6 * (ctl["pelvis_pitch"] + ctl["lean"])
    ctl["head_yaw"] = 0.3 * heading
    plant = np.clip(np.sin(arg), 0, 1)
    wr = []
    for side in (-1.0, 1.0):
        inner = np.clip(side * np.sign(curvature), 0, 1)
        wr.append(_at(shape, T, [330, side * 230, -170]) + shape.scale * (inner * plant * 120)[:, None] * np.array([1.0, 0.0, 0.3]))
    ctl["wrists"] = np.stack(wr, axis=1)
    ctl["elbow_poles"] = np.stack([_pole(T, [-0.3, -0.8, -0.6]), _pole(T, [-0.3, 0.8, -0.6])], axis=1)
    ski_dir = fwd.copy()
    ski_dir[:, 2] = -np.tan(run.angle) * fwd[:, 0]
    ski_dir = _unit(ski_dir)
    return PoseTrack(
        root=root, foot_dirs=np.stack([ski_dir, ski_dir], axis=1), props=("skis", "poles"), ground_normal=normal, **ctl
    )
