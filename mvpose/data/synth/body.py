"""Volumetric body: per-subject proportions and the capsules/ellipsoids/boxes that are rendered.

World frame: millimetres, ``z`` up (the Human3.6M floor is ``z = 0``). A body frame has columns
forward, left, up. Joints follow the H36M-17 order of :data:`mvpose.skeletons.H36M`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvpose.skeletons import H36M

__all__ = [
    "BodyShape",
    "Appearance",
    "Capsule",
    "Ellipsoid",
    "Box",
    "J",
    "sample_body_shape",
    "sample_appearance",
    "torso_ellipsoids",
    "head_ellipsoid",
    "body_primitives",
    "prop_primitives",
    "JOINT_OWNERS",
    "PART_IDS",
]

# Joint indices by name (H36M-17 order).
J = {name: i for i, name in enumerate(H36M.joints)}

REFERENCE_HEIGHT = 1750.0


@dataclass(frozen=True)
class BodyShape:
    """Bone lengths and limb radii of one subject (mm).

    Lengths are distances between H36M joints; ``ankle_height`` is the ankle joint above the sole.
    """

    height: float
    hip_half: float
    thigh: float
    shin: float
    ankle_height: float
    spine_low: float
    spine_up: float
    neck: float
    head: float
    shoulder_half: float
    shoulder_drop: float
    upper_arm: float
    forearm: float
    girth: float

    @property
    def scale(self) -> float:
        """Size relative to a 1.75 m reference body; motions scale their offsets by it."""
        return self.height / REFERENCE_HEIGHT

    @property
    def leg(self) -> float:
        return self.thigh + self.shin

    @property
    def arm(self) -> float:
        return self.upper_arm + self.forearm

    def radius(self, part: str) -> float:
        """Limb radius (mm) of a named part, scaled with height and girth."""
        return _RADII[part] * self.height * self.girth


# Radii as fractions of height.
_RADII = {
    "thigh": 0.040,
    "shin": 0.029,
    "upper_arm": 0.026,
    "forearm": 0.021,
    "hand": 0.026,
    "neck": 0.030,
    "shoulders": 0.030,
}

# Bone lengths as fractions of height (close to Human3.6M subject averages).
_PROPORTIONS = {
    "hip_half": 0.074,
    "thigh": 0.256,
    "shin": 0.250,
    "ankle_height": 0.047,
    "spine_low": 0.133,
    "spine_up": 0.143,
    "neck": 0.066,
    "head": 0.066,
    "shoulder_half": 0.088,
    "shoulder_drop": 0.012,
    "upper_arm": 0.160,
    "forearm": 0.143,
}


def sample_body_shape(rng: np.random.Generator) -> BodyShape:
    """A random adult body: height 1.55-1.90 m, each proportion jittered by up to +-5 %."""
    height = float(rng.uniform(1550.0, 1900.0))
    lengths = {k: float(v * height * rng.uniform(0.95, 1.05)) for k, v in _PROPORTIONS.items()}
    return BodyShape(height=height, girth=float(rng.uniform(0.9, 1.2)), **lengths)


@dataclass(frozen=True)
class Appearance:
    """Colours (BGR, 0..1) of one sequence. Left and right limbs share a colour."""

    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    sleeve: np.ndarray
    pants: np.ndarray
    shin: np.ndarray
    shoes: np.ndarray
    long_hair: bool
    prop: np.ndarray


def _colour(rng: np.random.Generator, lo: float = 0.1, hi: float = 0.9) -> np.ndarray:
    return rng.uniform(lo, hi, size=3)


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Random clothing per sequence: short or long sleeves and trousers, skin tone, hair."""
    tone = rng.uniform(0.25, 0.95)
    skin = np.array([0.55, 0.68, 0.85]) * tone + rng.uniform(-0.04, 0.04, 3)
    hair = np.array([0.08, 0.1, 0.14]) * rng.uniform(0.5, 4.0) + rng.uniform(0.0, 0.05, 3)
    shirt = _colour(rng)
    pants = _colour(rng, 0.05, 0.7)
    long_sleeves = rng.random() < 0.6
    shorts = rng.random() < 0.15
    return Appearance(
        skin=np.clip(skin, 0, 1),
        hair=np.clip(hair, 0, 1),
        shirt=shirt,
        sleeve=shirt if long_sleeves else np.clip(skin, 0, 1),
        pants=pants,
        shin=np.clip(skin, 0, 1) if shorts else pants,
        shoes=_colour(rng, 0.02, 0.5),
        long_hair=bool(rng.random() < 0.3),
        prop=_colour(rng, 0.05, 0.95),
    )


# ---------------------------------------------------------------------------------------------
# Primitives. Each carries a part id (1..N for the body, >= 100 for scene objects), used by the
# visibility test, and a BGR colour.


@dataclass
class Capsule:
    a: np.ndarray
    b: np.ndarray
    radius: float
    color: np.ndarray
    pid: int


@dataclass
class Ellipsoid:
    center: np.ndarray
    axes: np.ndarray  # (3, 3) columns: unit axes in world
    radii: np.ndarray  # (3,)
    color: np.ndarray
    pid: int


@dataclass
class Box:
    center: np.ndarray
    axes: np.ndarray  # (3, 3) columns: unit axes in world
    half: np.ndarray  # (3,) half sizes
    color: np.ndarray
    pid: int


PART_IDS = {
    name: i + 1
    for i, name in enumerate(
        (
            "pelvis", "abdomen", "chest", "shoulders", "neck", "head", "hair",
            "r_upper_arm", "r_forearm", "r_hand", "l_upper_arm", "l_forearm", "l_hand",
            "r_thigh", "r_shin", "r_foot", "l_thigh", "l_shin", "l_foot", "props",
        )
    )
}

# Parts that contain each joint: a joint is hidden in a view when the surface seen at its pixel
# belongs to another part (or a scene object) and lies in front of it.
_OWNERS = {
    "root": ("pelvis", "abdomen", "r_thigh", "l_thigh"),
    "rhip": ("pelvis", "r_thigh", "abdomen"),
    "rkne": ("r_thigh", "r_shin"),
    "rank": ("r_shin", "r_foot"),
    "lhip": ("pelvis", "l_thigh", "abdomen"),
    "lkne": ("l_thigh", "l_shin"),
    "lank": ("l_shin", "l_foot"),
    "belly": ("abdomen", "chest", "pelvis"),
    "neck": ("chest", "neck", "shoulders"),
    "nose": ("neck", "head", "hair"),
    "head": ("head", "hair"),
    "lsho": ("chest", "shoulders", "l_upper_arm"),
    "lelb": ("l_upper_arm", "l_forearm"),
    "lwri": ("l_forearm", "l_hand"),
    "rsho": ("chest", "shoulders", "r_upper_arm"),
    "relb": ("r_upper_arm", "r_forearm"),
    "rwri": ("r_forearm", "r_hand"),
}
JOINT_OWNERS: tuple[frozenset[int], ...] = tuple(
    frozenset(PART_IDS[p] for p in _OWNERS[name]) for name in H36M.joints
)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _segment_frame(a: np.ndarray, b: np.ndarray, lateral: np.ndarray) -> np.ndarray:
    """(..., 3, 3) orthonormal columns (forward, lateral, along a->b) for an ellipsoid on a segment."""
    up = _unit(b - a)
    lat = _unit(lateral - np.sum(lateral * up, axis=-1, keepdims=True) * up)
    fwd = np.cross(lat, up)
    return np.stack([fwd, lat, up], axis=-1)


def torso_ellipsoids(
    shape: BodyShape, joints: np.ndarray, R_pelvis: np.ndarray, R_chest: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pelvis, abdomen and chest ellipsoids as ``(center (..., 3), axes (..., 3, 3), radii (3,))``.

    Args:
        joints: (..., 17, 3) joints (only root, belly, neck are used).
        R_pelvis, R_chest: (..., 3, 3) body frames (columns forward, left, up).
    """
    h, g = shape.height, shape.girth
    gl = 1.0 + 0.5 * (g - 1.0)  # width grows slower than depth with girth
    root, belly, thorax = joints[..., J["root"], :], joints[..., J["belly"], :], joints[..., J["neck"], :]
    R_mid = _segment_frame(root, belly, R_pelvis[..., :, 1] + R_chest[..., :, 1])
    pelvis = (root + R_pelvis[..., :, 2] * 0.006 * h, R_pelvis, np.array([0.060 * h * g, 0.095 * h * gl, 0.068 * h]))
    abdomen = (
        0.45 * root + 0.55 * belly,
        R_mid,
        np.array([0.058 * h * g, 0.078 * h * gl, 0.58 * shape.spine_low]),
    )
    chest_frame = _segment_frame(belly, thorax, R_chest[..., :, 1])
    chest = (
        belly + 0.5 * (thorax - belly) - chest_frame[..., :, 0] * 0.006 * h,
        chest_frame,
        np.array([0.062 * h * g, 0.085 * h * gl, 0.64 * shape.spine_up]),
    )
    return [pelvis, abdomen, chest]


def head_ellipsoid(shape: BodyShape, joints: np.ndarray, R_head: np.ndarray):
    """Head ellipsoid ``(center, axes, radii)``: centred between the nose point and the head top."""
    h = shape.height
    nose, top = joints[..., J["nose"], :], joints[..., J["head"], :]
    axes = _segment_frame(nose, top, R_head[..., :, 1])
    center = 0.5 * (nose + top) - R_head[..., :, 0] * 0.004 * h + R_head[..., :, 2] * 0.004 * h
    return center, axes, np.array([0.058 * h, 0.047 * h, 0.5 * shape.head + 0.035 * h])


def inside_ellipsoid(points: np.ndarray, center: np.ndarray, axes: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Normalised radius ``|diag(1/r) A^T (p - c)|`` (< 1 inside) of ``points (..., 3)``."""
    local = np.einsum("...ji,...j->...i", axes, points - center)
    return np.linalg.norm(local / radii, axis=-1)


def push_out_of_ellipsoid(
    points: np.ndarray, center: np.ndarray, axes: np.ndarray, radii: np.ndarray, margin: float
) -> np.ndarray:
    """Move points ``(..., 3)`` inside the ellipsoid inflated by ``margin`` (mm) radially onto its surface."""
    r = radii + margin
    local = np.einsum("...ji,...j->...i", axes, points - center) / r
    n = np.linalg.norm(local, axis=-1, keepdims=True)
    scale = np.where(n < 1.0, 1.0 / np.maximum(n, 1e-6), 1.0)
    local = local * scale * r
    return center + np.einsum("...ij,...j->...i", axes, local)


def body_primitives(
    shape: BodyShape,
    appearance: Appearance,
    joints: np.ndarray,
    R_pelvis: np.ndarray,
    R_chest: np.ndarray,
    R_head: np.ndarray,
    foot_dirs: np.ndarray,
) -> list:
    """Primitives of one frame.

    Args:
        joints: (17, 3) world joints.
        R_pelvis, R_chest, R_head: (3, 3) body frames (columns forward, left, up).
        foot_dirs: (2, 3) unit forward directions of the right and left foot.
    """
    app = appearance
    h = shape.height
    prims: list = []
    pelvis, abdomen, chest = torso_ellipsoids(shape, joints, R_pelvis, R_chest)
    prims.append(Ellipsoid(*pelvis, app.pants, PART_IDS["pelvis"]))
    prims.append(Ellipsoid(*abdomen, app.shirt, PART_IDS["abdomen"]))
    prims.append(Ellipsoid(*chest, app.shirt, PART_IDS["chest"]))
    prims.append(
        Capsule(joints[J["rsho"]], joints[J["lsho"]], shape.radius("shoulders"), app.shirt, PART_IDS["shoulders"])
    )
    nose, thorax = joints[J["nose"]], joints[J["neck"]]
    prims.append(Capsule(thorax, thorax + 0.75 * (nose - thorax), shape.radius("neck"), app.skin, PART_IDS["neck"]))
    hc, ha, hr = head_ellipsoid(shape, joints, R_head)
    prims.append(Ellipsoid(hc, ha, hr, app.skin, PART_IDS["head"]))
    # Hair: a slightly larger shell shifted back and up, so the face stays visible from the front
    # and the back of the head reads as hair (front/back is then decidable, as in real images).
    back = 0.018 * h if not app.long_hair else 0.024 * h
    prims.append(
        Ellipsoid(
            hc - R_head[:, 0] * back + R_head[:, 2] * 0.010 * h,
            ha,
            hr * np.array([0.93, 1.06, 0.97 if not app.long_hair else 1.05]),
            app.hair,
            PART_IDS["hair"],
        )
    )
    for side, s in (("r", "r"), ("l", "l")):
        sho, elb, wri = joints[J[s + "sho"]], joints[J[s + "elb"]], joints[J[s + "wri"]]
        prims.append(Capsule(sho, elb, shape.radius("upper_arm"), app.shirt, PART_IDS[f"{side}_upper_arm"]))
        prims.append(Capsule(elb, wri, shape.radius("forearm"), app.sleeve, PART_IDS[f"{side}_forearm"]))
        fdir = _unit(wri - elb)
        hand_r = shape.radius("hand")
        axes = _segment_frame(wri, wri + fdir, R_chest[:, 1])
        prims.append(
            Ellipsoid(wri + fdir * 0.045 * h, axes, np.array([0.5 * hand_r, 0.85 * hand_r, 1.6 * hand_r]), app.skin, PART_IDS[f"{side}_hand"])
        )
        hip, kne, ank = joints[J[s + "hip"]], joints[J[s + "kne"]], joints[J[s + "ank"]]
        prims.append(Capsule(hip, kne, shape.radius("thigh"), app.pants, PART_IDS[f"{side}_thigh"]))
        prims.append(Capsule(kne, ank, shape.radius("shin"), app.shin, PART_IDS[f"{side}_shin"]))
        fwd = foot_dirs[0 if side == "r" else 1]
        up = np.array([0.0, 0.0, 1.0])
        lat = _unit(np.cross(up, fwd))
        axes = np.stack([fwd, lat, np.cross(fwd, lat)], axis=-1)
        center = ank + fwd * 0.040 * h - up * 0.6 * shape.ankle_height
        prims.append(
            Ellipsoid(center, axes, np.array([0.072 * h, 0.028 * h, 0.55 * shape.ankle_height]), app.shoes, PART_IDS[f"{side}_foot"])
        )
    return prims


def prop_primitives(
    shape: BodyShape,
    appearance: Appearance,
    props: tuple[str, ...],
    joints: np.ndarray,
    R_chest: np.ndarray,
    foot_dirs: np.ndarray,
    ground_normal: np.ndarray,
) -> list:
    """Hand-held and worn items of one frame: ``bag_r``/``bag_l``, ``phone_r``/``phone_l``,
    ``camera``, ``skis``, ``poles``. They occlude like scene objects (part id ``props``)."""
    h = shape.height
    pid = PART_IDS["props"]
    col = appearance.prop
    up = np.array([0.0, 0.0, 1.0])
    fwd = R_chest[:, 0] - R_chest[:, 0] @ up * up
    fwd = fwd / max(np.linalg.norm(fwd), 1e-6)
    flat = np.stack([fwd, np.cross(up, fwd), up], axis=-1)
    out: list = []
    for prop in props:
        if prop.startswith("bag_"):
            wri = joints[J[prop[-1] + "wri"]]
            half = np.array([0.09 * h, 0.035 * h, 0.085 * h])
            out.append(Box(wri - up * (0.04 * h + half[2]), flat, half, col, pid))
        elif prop.startswith("phone_"):
            s = prop[-1]
            wri, elb = joints[J[s + "wri"]], joints[J[s + "elb"]]
            d = _unit(wri - elb)
            axes = _segment_frame(wri, wri + d, R_chest[:, 1])
            out.append(Box(wri + d * 0.06 * h, axes, np.array([0.006 * h, 0.02 * h, 0.042 * h]), col * 0.3, pid))
        elif prop == "camera":
            mid = 0.5 * (joints[J["rwri"]] + joints[J["lwri"]])
            out.append(Box(mid + R_chest[:, 0] * 0.035 * h + up * 0.03 * h, R_chest, np.array([0.025, 0.05, 0.035]) * h, col * 0.4, pid))
        elif prop == "skis":
            n = ground_normal / np.linalg.norm(ground_normal)
            for i, s in enumerate("rl"):
                f = foot_dirs[i] - foot_dirs[i] @ n * n
                f = f / np.linalg.norm(f)
                lat = np.cross(n, f)
                ank = joints[J[s + "ank"]]
                c = ank - n * (1.1 * shape.ankle_height) + f * 0.03 * h
                # A flat ellipsoid: rounded tips like a ski, and cheaper to ray-cast than a box.
                out.append(Ellipsoid(c, np.stack([f, lat, n], axis=-1), np.array([0.5 * h, 0.024 * h, 0.007 * h]), col, pid))
        elif prop == "poles":
            for s in "rl":
                wri, elb = joints[J[s + "wri"]], joints[J[s + "elb"]]
                grip = wri + _unit(wri - elb) * 0.04 * h
                side = np.cross(up, fwd) * (1.0 if s == "l" else -1.0)
                d = _unit(-0.45 * fwd - 0.85 * up + 0.2 * side)
                out.append(Capsule(grip, grip + d * 0.68 * h, 0.006 * h, col * 0.5 + 0.1, pid))
        else:
            raise ValueError(f"unknown prop {prop!r}")
    return out
