"""Ski-Pose PTZ (Ski-PosePTZ-CameraDataset), read directly from its ``labels.h5`` files.

Layout (ROOT is the unzipped ``Ski-PosePTZ-CameraDataset-png`` folder)::

    ROOT/{train,test}/labels.h5
    ROOT/{train,test}/seq_{seq:03d}/cam_{cam:02d}/image_{frame:06d}.png    256 x 256
    ROOT/ski_centers.csv  or  ROOT/../ski_centers.csv                     lines "seq frame X Y Z"

``labels.h5`` datasets, one row per image: ``seq``, ``cam``, ``frame``, ``subj``; ``3D`` (N, 51)
root-relative joints in camera axes; ``2D`` (N, 34) in 0..1 of the image; ``cam_intrinsic`` (N, 9)
normalised by the image size; ``cam_position`` (N, 3) camera centre; ``R_cam_2_world`` (N, 9).

The cameras pan, tilt and zoom, so each image has its own camera: world-to-camera ``R`` is
``R_cam_2_world^T``, the centre ``C`` is ``cam_position`` and ``K`` is ``cam_intrinsic`` with its first
two rows times 256. ``ski_centers.csv`` gives the world root, so ``joints_cam = 3D + R (root - C)`` and
``joints_world = R^T joints_cam + C``. The published labels are in metres (cameras stand tens of metres
from the skier); the reader checks that and converts to millimetres. Six cameras per
``(seq, frame)`` form one multi-view group.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mvpose.data.dataset import (
    DatasetError,
    Group,
    MultiViewDataset,
    Reading,
    ViewRecord,
    check_images_exist,
    image_size,
    read_dataset,
    select_views,
)
from mvpose.data.registry import register_dataset
from mvpose.geometry.calibration.common import CalibrationError, units_scale
from mvpose.geometry.camera import Cameras
from mvpose.skeletons import Skeleton, get_skeleton

__all__ = [
    "SKIPOSE_JOINTS",
    "SKIPOSE_SKELETON",
    "SKIPOSE_NUM_CAMERAS",
    "SkiPoseDataset",
    "read_skipose",
    "read_labels",
    "find_centers_file",
    "read_centers",
    "skipose_world_joints",
    "skipose_cameras",
]

log = logging.getLogger(__name__)

# Joint order of the Ski-Pose labels (Rhodin et al.'s 17-joint Human3.6M order, their names). It is
# index-aligned with mvpose's "h36m" set: spine1 is h36m "belly", head is h36m "nose" (the published
# Ski-Pose code maps it so), head_top is h36m "head".
SKIPOSE_JOINTS = (
    "hip", "right_up_leg", "right_leg", "right_foot", "left_up_leg", "left_leg", "left_foot",
    "spine1", "neck", "head", "head_top", "left_arm", "left_forearm", "left_hand",
    "right_arm", "right_forearm", "right_hand",
)


def _flip_pairs(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    return tuple((i, names.index("right_" + n[5:])) for i, n in enumerate(names) if n.startswith("left_"))


_H36M = get_skeleton("h36m")
SKIPOSE_SKELETON = Skeleton(
    name="skipose",
    joints=SKIPOSE_JOINTS,
    limbs=_H36M.limbs,
    flip_pairs=_flip_pairs(SKIPOSE_JOINTS),
    canonical=_H36M.canonical,
)
SKIPOSE_NUM_CAMERAS = 6
IMAGE_SIZE = 256
# labels.h5 dataset -> trailing shape of one row.
H5_FIELDS = {
    "seq": (), "cam": (), "frame": (), "subj": (), "3D": (51,), "2D": (34,),
    "cam_intrinsic": (9,), "cam_position": (3,), "R_cam_2_world": (9,),
}
SPLITS = {"train": "train", "test": "test", "validation": "test", "val": "test"}
CENTERS_FILE = "ski_centers.csv"
METRES_TO_MM = 1000.0
# Plausible camera-to-skier distances in metres; outside, the labels are not in metres.
_METRE_RANGE = (0.5, 1000.0)


def skipose_cameras(
    cam_intrinsic,
    cam_position,
    R_cam_2_world,
    image_size: int | tuple[int, int] = 256,
    units: str = "m",
    dtype: torch.dtype = torch.float64,
) -> Cameras:
    """Per-frame Ski-Pose (Ski-PosePTZ) cameras from the ``labels.h5`` fields.

    The cameras pan, tilt and zoom, so every sample has its own camera. As read by the public
    Ski-Pose loaders: ``K = cam_intrinsic.reshape(3, 3)`` (row-major) with its top two rows
    normalised by the image size, ``R = R_cam_2_world.reshape(3, 3).T`` and
    ``x_cam = R (X - cam_position)``. No lens distortion is given.

    Args:
        cam_intrinsic: (N, 9) normalised intrinsics, row-major.
        cam_position: (N, 3) camera centres in ``units`` (metres in the release).
        R_cam_2_world: (N, 9) camera-to-world rotations, row-major.
        image_size: image side (square) or ``(width, height)`` in pixels.

    Returns:
        ``Cameras`` of batch shape ``(N,)``, millimetres.
    """
    where = "Ski-Pose cameras"
    as_t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    Kn, C, Rc2w = as_t(cam_intrinsic), as_t(cam_position), as_t(R_cam_2_world)
    N = Kn.shape[0] if Kn.ndim else 0
    for field, x, width in (("cam_intrinsic", Kn, 9), ("cam_position", C, 3), ("R_cam_2_world", Rc2w, 9)):
        if x.shape != (N, width):
            raise CalibrationError(f"{where}: '{field}' must have shape (N, {width}) with N = {N}, found {tuple(x.shape)}")
        bad = ~torch.isfinite(x).all(dim=1)
        if bad.any():
            raise CalibrationError(f"{where}: '{field}' row {int(bad.nonzero()[0])} contains NaN or infinity")
    Kn = Kn.reshape(N, 3, 3)
    bottom_bad = (Kn[:, 2, :2].abs() > 1e-9).any(dim=1) | (Kn[:, 2, 2] <= 0)
    if bottom_bad.any():
        i = int(bottom_bad.nonzero()[0, 0])
        raise CalibrationError(f"{where}: 'cam_intrinsic' row {i} has bottom row {Kn[i, 2].tolist()}, expected [0, 0, s > 0]")
    focal_bad = (Kn[:, 0, 0] <= 0) | (Kn[:, 1, 1] <= 0)
    if focal_bad.any():
        i = int(focal_bad.nonzero()[0, 0])
        raise CalibrationError(
            f"{where}: 'cam_intrinsic' row {i} has focal lengths {Kn[i, 0, 0].item():.4g}, {Kn[i, 1, 1].item():.4g}, expected > 0"
        )
    R = Rc2w.reshape(N, 3, 3).transpose(-1, -2)
    ortho = (R @ R.transpose(-1, -2) - torch.eye(3, dtype=R.dtype)).abs().amax(dim=(-1, -2))
    bad = (ortho > 1e-4) | (torch.linalg.det(R) < 0)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise CalibrationError(f"{where}: 'R_cam_2_world' row {i} is not a rotation (|R R^T - I| = {float(ortho[i]):.2e})")
    w, h = (image_size, image_size) if np.ndim(image_size) == 0 else image_size
    K = torch.zeros(N, 3, 3, dtype=torch.float64)
    K[:, 0], K[:, 1], K[:, 2, 2] = Kn[:, 0] * w, Kn[:, 1] * h, 1.0
    C = C * units_scale(units, f"{where}: units")
    t = -(R @ C.unsqueeze(-1)).squeeze(-1)
    size = torch.tensor([float(w), float(h)], dtype=torch.float64).expand(N, 2)
    return Cameras.from_params(K, R, t, None, size, dtype=dtype)


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    """Read and validate every dataset of a Ski-Pose ``labels.h5``.

    Returns:
        arrays keyed like :data:`H5_FIELDS`, ids as int64, the rest float64, all with N rows.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: Ski-Pose labels file not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in H5_FIELDS if k not in f]
            if missing:
                raise DatasetError(f"{path}: missing dataset(s) {missing}; file has {sorted(f.keys())}")
            raw = {k: np.asarray(f[k]) for k in H5_FIELDS}
    except OSError as err:
        raise DatasetError(f"{path}: not a readable HDF5 file ({err})") from err
    n = len(raw["seq"])
    if n == 0:
        raise DatasetError(f"{path}: the split is empty (dataset 'seq' has no rows)")
    out = {}
    for key, shape in H5_FIELDS.items():
        arr = raw[key]
        if arr.shape[:1] != (n,) or int(np.prod(arr.shape[1:])) != int(np.prod(shape)):
            raise DatasetError(f"{path}: dataset '{key}' must have shape {(n,) + shape}, found {arr.shape}")
        arr = arr.reshape((n,) + shape).astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise DatasetError(f"{path}: dataset '{key}' contains NaN or infinity")
        if not shape:
            if np.any(arr != np.round(arr)):
                raise DatasetError(f"{path}: dataset '{key}' must hold integers")
            arr = arr.astype(np.int64)
        out[key] = arr
    bad = np.flatnonzero((out["cam"] < 0) | (out["cam"] >= SKIPOSE_NUM_CAMERAS))
    if bad.size:
        raise DatasetError(
            f"{path}: dataset 'cam' row {bad[0]} = {out['cam'][bad[0]]} is out of range 0..{SKIPOSE_NUM_CAMERAS - 1}"
        )
    return out


def find_centers_file(root: str | Path) -> Path:
    """``ski_centers.csv`` in ROOT or its parent."""
    root = Path(root)
    candidates = [root / CENTERS_FILE, root.resolve().parent / CENTERS_FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetError(f"Ski-Pose: {CENTERS_FILE} not found; looked at {', '.join(str(p) for p in candidates)}")


def read_centers(path: str | Path) -> dict[tuple[int, int], np.ndarray]:
    """``ski_centers.csv`` -> ``{(seq, frame): (3,) world root}`` in the file's units (metres)."""
    path = Path(path)
    centers: dict[tuple[int, int], np.ndarray] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DatasetError(f"{path}: line {lineno} has {len(fields)} fields, expected 5 (seq frame X Y Z): {line!r}")
        try:
            seq, frame = (int(float(v)) for v in fields[:2])
            xyz = np.array([float(v) for v in fields[2:]])
        except ValueError as err:
            raise DatasetError(f"{path}: line {lineno} is not numeric: {line!r}") from err
        if not np.all(np.isfinite(xyz)):
            raise DatasetError(f"{path}: line {lineno} contains NaN or infinity")
        centers[(seq, frame)] = xyz
    if not centers:
        raise DatasetError(f"{path}: no centre lines")
    return centers


def skipose_world_joints(pose_3d: np.ndarray, root: np.ndarray, R: np.ndarray, C: np.ndarray) -> np.ndarray:
    """World joints from root-relative camera-axes joints.

    Args:
        pose_3d: (N, J, 3) root-relative, camera axes. root: (N, 3) world root. R: (N, 3, 3)
            world-to-camera. C: (N, 3) camera centres.

    Returns:
        (N, J, 3) world joints, same units as the inputs.
    """
    root_cam = np.einsum("nij,nj->ni", R, root - C)
    joints_cam = pose_3d + root_cam[:, None, :]
    return np.einsum("nji,nkj->nki", R, joints_cam) + C[:, None, :]


@register_dataset("skipose", aliases=("ski",))
def read_skipose(
    root: str | Path,
    split: str = "train",
    views: int | Sequence[int] | None = None,
    frame_stride: int = 1,
    image_side: int | None = None,
    check_files: bool = True,
) -> Reading:
    """Read a Ski-Pose split into multi-view groups; V <= 6, world mm.

    Args:
        root: the ``Ski-PosePTZ-CameraDataset-png`` folder.
        split: "train" or "test" (alias "validation").
        views: None (all 6 cameras), N (cameras 0..N-1) or a list of camera ids 0..5.
        frame_stride: keep every n-th complete group (default 1: the published code uses all).
        image_side: side of the square images the normalised labels refer to; default: read off
            the first image (256 for the published set). Every image must have this size.
        check_files: check that every selected image exists.

    Group fields: ``subject`` = ``subj``, ``subaction`` = ``seq``, ``frame`` = ``frame``, ``action`` 0.

    Returns:
        The :class:`~mvpose.data.dataset.Reading`: MPJPE broken down per sequence (no actions),
        hidden joints supervised.

    Raises:
        DatasetError: a missing or malformed file or image (the message names it).
    """
    if split not in SPLITS:
        raise DatasetError(f"Ski-Pose: unknown split {split!r}; use 'train' or 'test'")
    root = Path(root)
    split = SPLITS[split]
    path = root / split / "labels.h5"
    camera_ids = select_views(views, SKIPOSE_NUM_CAMERAS, f"Ski-Pose {path}")
    if int(frame_stride) < 1:
        raise DatasetError(f"Ski-Pose: frame_stride must be >= 1, got {frame_stride}")
    labels = read_labels(path)
    centers_path = find_centers_file(root)
    centers = read_centers(centers_path)
    n = len(labels["seq"])

    keys = list(zip(labels["seq"].tolist(), labels["frame"].tolist()))
    lacking = [k for k in keys if k not in centers]
    if lacking:
        raise DatasetError(
            f"{centers_path}: no world centre for {len(lacking)} labelled (seq, frame) of {path}, e.g. {lacking[0]}"
        )
    try:  # the one Ski-Pose camera formula (mvpose.geometry.calibration), on a unit image
        cameras = skipose_cameras(labels["cam_intrinsic"], labels["cam_position"], labels["R_cam_2_world"], 1, units="m")
    except CalibrationError as err:
        raise DatasetError(f"{path}: {err}") from err
    K_unit, R, t = cameras.K.numpy(), cameras.R.numpy(), cameras.t.numpy()
    C = cameras.centers.numpy() / METRES_TO_MM  # file units, like the centres and the 3D labels
    root_world = np.stack([centers[k] for k in keys])
    distance = np.median(np.linalg.norm(C - root_world, axis=-1))
    if not _METRE_RANGE[0] <= distance <= _METRE_RANGE[1]:
        raise DatasetError(
            f"{path}: median camera-to-skier distance is {distance:.4g} in file units; the Ski-Pose labels are "
            f"in metres (expected {_METRE_RANGE[0]}..{_METRE_RANGE[1]}), so these are not"
        )
    pose = labels["3D"].reshape(n, -1, 3)
    world = skipose_world_joints(pose, root_world, R, C) * METRES_TO_MM

    table: dict[tuple[int, int], dict[int, int]] = {}
    for i, (key, cam) in enumerate(zip(keys, labels["cam"].tolist())):
        cams = table.setdefault(key, {})
        if cam in cams:
            raise DatasetError(f"{path}: rows {cams[cam]} and {i} are both seq {key[0]} frame {key[1]} camera {cam}")
        cams[cam] = i
    complete = [(k, [c[v] for v in camera_ids]) for k, c in table.items() if all(v in c for v in camera_ids)]
    incomplete = [(k, [v for v in camera_ids if v not in c]) for k, c in table.items() if not all(v in c for v in camera_ids)]
    if incomplete:
        log.warning(
            "%s: %d of %d (seq, frame) groups lack a chosen camera %s and are not used (listed in incomplete_groups)",
            path, len(incomplete), len(table), camera_ids,
        )
    if not complete:
        raise DatasetError(f"{path}: no (seq, frame) has all chosen cameras {camera_ids}")
    selected = complete[:: int(frame_stride)]
    log.info("%s: %d images -> %d complete groups -> %d samples, views %s", path, n, len(complete), len(selected), camera_ids)

    size = _image_side(root, split, image_side, selected, labels, check_files, path)
    K = K_unit.copy()
    K[:, :2, :] *= size
    joints_2d = labels["2D"].reshape(n, -1, 2) * size
    full = float(size - 1)
    groups = []
    for (seq, frame), rows in selected:
        views_ = [
            ViewRecord(
                image=_image_path(root, split, seq, int(labels["cam"][i]), frame),
                joints_2d=joints_2d[i],
                joints_vis=np.ones(len(SKIPOSE_JOINTS)),
                # The whole image: with the UDP convention this crop is the identity when input = image size.
                center=np.array([full / 2.0, full / 2.0]),
                scale=np.array([full, full]) / 200.0,
                K=K[i], R=R[i], t=t[i], dist=np.zeros(5),
                camera_id=int(labels["cam"][i]),
                image_sizes=((size, size),),
            )
            for i in rows
        ]
        groups.append(
            Group(
                views=views_, joints_3d=world[rows].mean(axis=0), subject=int(labels["subj"][rows[0]]),
                action=0, subaction=seq, frame=frame, action_name="Skiing",
            )
        )
    if check_files:
        check_images_exist(groups, f"Ski-Pose {split} ({path})")
    return Reading(groups, SKIPOSE_SKELETON, camera_ids, name=f"skipose-{split}", split=split, root=root,
                   breakdown="sequence", supervise_hidden=True, incomplete_groups=incomplete)


def SkiPoseDataset(root: str | Path, split: str = "train", views: int | Sequence[int] | None = None,
                   **options: Any) -> MultiViewDataset:
    """Ski-Pose samples (format in :mod:`mvpose.data.dataset`): :func:`read_skipose` into a
    :class:`~mvpose.data.dataset.MultiViewDataset`; ``options`` go to the reader or the dataset."""
    return read_dataset(read_skipose, root, split, views, **options)


def _image_path(root: Path, split: str, seq: int, cam: int, frame: int) -> Path:
    return root / split / f"seq_{seq:03d}" / f"cam_{cam:02d}" / f"image_{frame:06d}.png"


def _image_side(root: Path, split: str, size: int | None, selected, labels, check_files: bool, path: Path) -> int:
    """Side of the square images: given, else read off the first image (the published set: 256)."""
    if size is not None:
        return int(size)
    if not check_files:
        return IMAGE_SIZE
    (seq, frame), rows = selected[0]
    first = _image_path(root, split, seq, int(labels["cam"][rows[0]]), frame)
    W, H = image_size(first)
    if W != H:
        raise DatasetError(f"{first}: Ski-Pose images are square (labels are normalised by one side), found {W}x{H}")
    if W != IMAGE_SIZE:
        log.info("%s: images are %dx%d (the published set has %d)", path, W, H, IMAGE_SIZE)
    return W
