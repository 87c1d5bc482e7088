"""Joint sets as data: names, limbs, flip pairs, and every mapping between them.

Five joint sets are defined, each in its published order:

- ``h36m``: the 17 Human3.6M joints used by the H36M-Toolbox / Cross-View-Fusion / PPT code.
  ``neck`` is H36M's *Thorax*, ``nose`` is its *Neck/Nose* point and ``head`` is the top of the
  head (*Head*); ``belly`` is the *Spine* joint between pelvis and thorax.
- ``coco``: COCO-17 person keypoints with COCO's own ``skeleton`` limbs.
- ``body25``: OpenPose BODY_25 (COCO body plus ``Neck``, ``MidHip`` and six foot points).
- ``halpe26``: HALPE-26 (COCO-17 plus ``head`` top, ``neck``, ``hip`` centre, big toes,
  small toes and heels).
- ``body25b``: OpenPose's experimental BODY_25B (openpose_train ``experimental_models``; the default
  model of Pose2Sim's OpenPose demos): COCO-17 in COCO order, then ``Neck`` (OpenPose *UpperNeck*),
  ``Head`` (*HeadTop*) and six foot points. Same count as BODY_25, different order; joint names as
  Pose2Sim writes them in its TRC files.

Mappings go through one shared vocabulary (:attr:`Skeleton.canonical`): two joints of different
sets are the same joint when their canonical keys are equal. A destination joint whose key the
source lacks may be *derived* as the mean of other joints (:data:`DERIVED_JOINTS`):

- ``pelvis`` (h36m ``root``, BODY_25 ``MidHip``, HALPE ``hip``) = mean of the two hips;
- ``neck`` (h36m ``neck``/thorax, BODY_25 ``Neck``, HALPE ``neck``) = mean of the two shoulders;
- ``spine`` (h36m ``belly``) = mean of pelvis and neck. This is an approximation: the real
  Human3.6M spine joint sits near the middle of the torso but not exactly halfway.

Anything else missing (h36m ``head`` top from COCO or BODY_25, eyes/ears from h36m, feet from
COCO or h36m) is unmappable: NaN in the output and ``valid`` False.

Cross-dataset equalities are semantic, not metric: COCO/OpenPose hips are annotated on the
skin surface while Human3.6M hips are mocap joint centres, and the H36M "nose" point sits
between nose and chin. Expect systematic offsets of a few centimetres when comparing
predictions of one joint set against ground truth of another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # torch is a dependency of the package, but the joint tables do not need it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

__all__ = [
    "Skeleton",
    "SKELETONS",
    "H36M",
    "COCO",
    "BODY25",
    "HALPE26",
    "BODY25B",
    "H36M_ACTIONS",
    "DERIVED_JOINTS",
    "get_skeleton",
    "joint_mapping",
    "conversion_table",
    "convert_joints",
]


@dataclass(frozen=True)
class Skeleton:
    """A joint set.

    Attributes:
        name: registry name, e.g. ``"h36m"``.
        joints: joint names in the order the data stores them, length J.
        limbs: bones as ``(parent, child)`` joint indices (for sets whose published limb list has
            no hierarchy, e.g. COCO, the published order is kept).
        flip_pairs: ``(left, right)`` joint index pairs swapped by a horizontal flip.
        canonical: for each joint its key in the shared vocabulary used for mappings
            (defaults to ``joints``).
    """

    name: str
    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    canonical: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.canonical is None:
            object.__setattr__(self, "canonical", tuple(self.joints))
        where = f"Skeleton {self.name!r}"
        num = len(self.joints)
        if len(set(self.joints)) != num:
            raise ValueError(f"{where}: joint names must be unique, got {self.joints}")
        if len(self.canonical) != num or len(set(self.canonical)) != num:
            raise ValueError(
                f"{where}: canonical needs {num} unique keys, got {len(self.canonical)}: "
                f"{self.canonical}"
            )
        for field in ("limbs", "flip_pairs"):
            for pair in getattr(self, field):
                if len(pair) != 2 or not all(0 <= i < num for i in pair) or pair[0] == pair[1]:
                    raise ValueError(
                        f"{where}: {field} entry {pair} must be two different joint indices "
                        f"in [0, {num})"
                    )
        flipped = [i for pair in self.flip_pairs for i in pair]
        if len(set(flipped)) != len(flipped):
            raise ValueError(
                f"{where}: a joint appears in more than one flip pair: {self.flip_pairs}"
            )

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, name: str) -> int:
        """Index of joint ``name``; KeyError listing the joint names if absent."""
        try:
            return self.joints.index(name)
        except ValueError:
            raise KeyError(
                f"skeleton {self.name!r} has no joint {name!r}; joints: {', '.join(self.joints)}"
            ) from None

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation (J,) such that ``points[..., flip_index, :]`` swaps left and right."""
        perm = np.arange(self.num_joints)
        for left, right in self.flip_pairs:
            perm[left], perm[right] = right, left
        return perm


H36M = Skeleton(
    name="h36m",
    joints=(
        "root", "rhip", "rkne", "rank", "lhip", "lkne", "lank", "belly",
        "neck", "nose", "head", "lsho", "lelb", "lwri", "rsho", "relb", "rwri",
    ),
    limbs=(
        (0, 1), (1, 2), (2, 3),  # right leg
        (0, 4), (4, 5), (5, 6),  # left leg
        (0, 7), (7, 8), (8, 9), (9, 10),  # spine to head top
        (8, 11), (11, 12), (12, 13),  # left arm
        (8, 14), (14, 15), (15, 16),  # right arm
    ),
    flip_pairs=((4, 1), (5, 2), (6, 3), (11, 14), (12, 15), (13, 16)),
    canonical=(
        "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
        "spine", "neck", "nose", "head_top", "left_shoulder", "left_elbow", "left_wrist",
        "right_shoulder", "right_elbow", "right_wrist",
    ),
)

_COCO_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# COCO's published `skeleton` field is 1-based; stored here 0-based, same order.
_COCO_LIMBS = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
_COCO_FLIP = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

COCO = Skeleton(name="coco", joints=_COCO_JOINTS, limbs=_COCO_LIMBS, flip_pairs=_COCO_FLIP)

BODY25 = Skeleton(
    name="body25",
    joints=(
        "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
        "MidHip", "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye",
        "REar", "LEar", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    ),
    # OpenPose POSE_BODY_25_PAIRS_RENDER
    limbs=(
        (1, 8), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11),
        (8, 12), (12, 13), (13, 14), (1, 0), (0, 15), (15, 17), (0, 16), (16, 18),
        (14, 19), (19, 20), (14, 21), (11, 22), (22, 23), (11, 24),
    ),
    flip_pairs=(
        (5, 2), (6, 3), (7, 4), (12, 9), (13, 10), (14, 11), (16, 15), (18, 17),
        (19, 22), (20, 23), (21, 24),
    ),
    canonical=(
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
        "left_elbow", "left_wrist", "pelvis", "right_hip", "right_knee", "right_ankle",
        "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
        "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe",
        "right_heel",
    ),
)

HALPE26 = Skeleton(
    name="halpe26",
    joints=_COCO_JOINTS + (
        "head", "neck", "hip", "left_big_toe", "right_big_toe", "left_small_toe",
        "right_small_toe", "left_heel", "right_heel",
    ),
    # AlphaPose's HALPE-26 pairs (the dataset authors' own). In them the face (nose, eyes,
    # ears) is not linked to the body; head top links to neck.
    limbs=(
        (0, 1), (0, 2), (1, 3), (2, 4), (5, 18), (6, 18), (5, 7), (7, 9), (6, 8), (8, 10),
        (17, 18), (18, 19), (19, 11), (19, 12), (11, 13), (12, 14), (13, 15), (14, 16),
        (20, 24), (21, 25), (23, 25), (22, 24), (15, 24), (16, 25),
    ),
    flip_pairs=_COCO_FLIP + ((20, 21), (22, 23), (24, 25)),
    canonical=_COCO_JOINTS + (
        "head_top", "neck", "pelvis", "left_big_toe", "right_big_toe", "left_small_toe",
        "right_small_toe", "left_heel", "right_heel",
    ),
)

BODY25B = Skeleton(
    name="body25b",
    joints=(
        "Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow",
        "LWrist", "RWrist", "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle", "Neck", "Head",
        "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    ),
    # A tree from the neck (no pelvis point): arms, trunk sides to the hips, legs, feet, face, head
    # top; as Pose2Sim's BODY_25B hierarchy (skeletons.py) with hips joined as in COCO.
    limbs=(
        (17, 5), (5, 7), (7, 9), (17, 6), (6, 8), (8, 10),  # arms
        (5, 11), (11, 13), (13, 15), (6, 12), (12, 14), (14, 16), (11, 12),  # trunk sides, legs
        (15, 19), (19, 20), (15, 21), (16, 22), (22, 23), (16, 24),  # feet
        (17, 0), (0, 1), (1, 3), (0, 2), (2, 4), (17, 18),  # face, head top
    ),
    flip_pairs=_COCO_FLIP + ((19, 22), (20, 23), (21, 24)),
    canonical=_COCO_JOINTS + (
        "neck", "head_top", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
        "right_small_toe", "right_heel",
    ),
)

SKELETONS: dict[str, Skeleton] = {s.name: s for s in (H36M, COCO, BODY25, HALPE26, BODY25B)}

# Human3.6M action ids as the official metadata.xml and the H36M-Toolbox pickles number them
# (not alphabetical: Posing is 7, TakingPhoto 12, Walking 14, WalkingDog 15). The damaged S9
# sequences (5/2 Greeting, 10/2 SittingDown, 13/1 Waiting) confirm this numbering.
H36M_ACTIONS: dict[int, str] = {
    2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning", 7: "Posing",
    8: "Purchases", 9: "Sitting", 10: "SittingDown", 11: "Smoking", 12: "Photo",
    13: "Waiting", 14: "Walking", 15: "WalkDog", 16: "WalkTogether",
}

# Derived joint (canonical key) -> canonical keys averaged to approximate it. Parents may be
# derived themselves; a source that has a key directly always uses it instead.
DERIVED_JOINTS: dict[str, tuple[str, ...]] = {
    "pelvis": ("left_hip", "right_hip"),
    "neck": ("left_shoulder", "right_shoulder"),
    "spine": ("pelvis", "neck"),
}


def get_skeleton(name: str | Skeleton) -> Skeleton:
    """Registered skeleton by name (a Skeleton passes through)."""
    if isinstance(name, Skeleton):
        return name
    try:
        return SKELETONS[name]
    except KeyError:
        raise KeyError(
            f"unknown skeleton {name!r}; known skeletons: {', '.join(sorted(SKELETONS))}"
        ) from None


def joint_mapping(src: str | Skeleton, dst: str | Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Direct joint correspondence from ``src`` to ``dst``.

    Returns:
        index: (J_dst,) int64, the ``src`` joint each ``dst`` joint is, -1 where ``src`` has no
            such joint (it may still be derivable, see :func:`convert_joints`).
        valid: (J_dst,) bool, ``index >= 0``.
    """
    src, dst = get_skeleton(src), get_skeleton(dst)
    lookup = {key: i for i, key in enumerate(src.canonical)}
    index = np.array([lookup.get(key, -1) for key in dst.canonical], dtype=np.int64)
    return index, index >= 0


def _src_weights(src: Skeleton, key: str, depth: int = 0) -> dict[int, float] | None:
    """Weights over ``src`` joints that reproduce canonical ``key``; None if impossible."""
    if key in src.canonical:
        return {src.canonical.index(key): 1.0}
    parents = DERIVED_JOINTS.get(key)
    if parents is None or depth > len(DERIVED_JOINTS):  # depth guards a cyclic table
        return None
    weights: dict[int, float] = {}
    for parent in parents:
        sub = _src_weights(src, parent, depth + 1)
        if sub is None:
            return None
        for i, w in sub.items():
            weights[i] = weights.get(i, 0.0) + w / len(parents)
    return weights


@functools.lru_cache(maxsize=None)
def conversion_table(
    src: str | Skeleton, dst: str | Skeleton
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear map from ``src`` joints to ``dst`` joints, direct and derived.

    ``dst[j] = sum_k weights[j, k] * src[index[j, k]]``.

    Returns:
        index: (J_dst, K) int64 source joints, padded with the first used one (weight 0).
        weights: (J_dst, K) float64, rows summing to 1 for valid joints, 0 otherwise.
        valid: (J_dst,) bool.
    """
    src, dst = get_skeleton(src), get_skeleton(dst)
    rows = [_src_weights(src, key) for key in dst.canonical]
    width = max((len(r) for r in rows if r), default=1)
    index = np.zeros((dst.num_joints, width), dtype=np.int64)
    weights = np.zeros((dst.num_joints, width), dtype=np.float64)
    for j, row in enumerate(rows):
        if not row:
            continue
        items = sorted(row.items())
        # Padding repeats a joint that is used anyway, so a NaN in some unrelated source
        # joint can never leak into this row through 0 * NaN.
        index[j] = items[0][0]
        for k, (i, w) in enumerate(items):
            index[j, k], weights[j, k] = i, w
    valid = np.array([bool(r) for r in rows])
    for arr in (index, weights, valid):
        arr.setflags(write=False)  # cached: callers must not mutate the shared tables
    return index, weights, valid


def convert_joints(points: Any, src: str | Skeleton, dst: str | Skeleton) -> tuple[Any, Any]:
    """Re-express points of joint set ``src`` in joint set ``dst``.

    Derived joints are means of their parents over every channel, so a confidence channel is
    averaged too. Unmappable joints are NaN.

    Args:
        points: (..., J_src, D) numpy array or torch tensor (D any, e.g. x, y, confidence).

    Returns:
        points_dst: (..., J_dst, D) same type (floating; integers are promoted), device kept.
        valid: (J_dst,) bool of the same type. It says whether the mapping defines a joint; a
            NaN in a source joint still propagates to the joints made from it.
    """
    src, dst = get_skeleton(src), get_skeleton(dst)
    if points.ndim < 2 or points.shape[-2] != src.num_joints:
        raise ValueError(
            f"convert_joints: points must have shape (..., {src.num_joints}, D) for skeleton "
            f"{src.name!r}, got {tuple(points.shape)}"
        )
    index, weights, valid = conversion_table(src, dst)
    if torch is not None and isinstance(points, torch.Tensor):
        if not points.is_floating_point():
            points = points.float()
        idx_t = torch.tensor(index, device=points.device)
        w_t = torch.tensor(weights, dtype=points.dtype, device=points.device)
        valid_t = torch.tensor(valid, device=points.device)
        out = (points[..., idx_t, :] * w_t[:, :, None]).sum(dim=-2)
        nan = torch.full_like(out, float("nan"))
        return torch.where(valid_t[:, None], out, nan), valid_t
    points = np.asarray(points)
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float64)
    out = (points[..., index, :] * weights[:, :, None].astype(points.dtype)).sum(axis=-2)
    out[..., ~valid, :] = np.nan
    return out, valid.copy()
