"""Human3.6M in the H36M-Toolbox layout used by the Cross-View-Fusion, TransFusion and PPT code.

``ROOT/annot/h36m_{train,validation}.pkl`` hold a list of per-image records (every field in docs/data.md);
images live under ``ROOT/images/``. As in the published multi-view code:

- the three S9 sequences with damaged 3D ground truth (Greeting-2, SittingDown-2, Waiting-1) are
  left out (``drop_damaged``);
- records are grouped by ``(subject, action, subaction, image_id)`` in order of first appearance; a
  group lacking one of the chosen cameras is not used (it is logged and listed in
  ``incomplete_groups``);
- every 5th complete group is kept for training and every 64th for evaluation (``frame_stride``).

3D ground truth: a record's ``joints_3d`` is NOT the world pose. The H36M-Toolbox
(``generate_labels.py``) fills it from ``D3_Positions_mono_universal`` (the pose retargeted to the
universal skeleton, camera coordinates) and ``joints_3d_camera`` from ``D3_Positions_mono`` (the real
pose, camera coordinates, mm). The world truth is ``R^T joints_3d_camera + T`` with ``T`` the camera
centre, as the official 3D evaluation builds it (multi-view-PPT ``run/pose3d/estimate_tri.py``,
``lib/multiviews/cameras.py camera_to_world_frame``). This reader takes it from the first chosen view
and refuses a group whose views disagree by more than ``view_tolerance_mm``; ``joints_3d`` is never read.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

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
from mvpose.geometry.calibration.common import CalibrationError, field_array
from mvpose.safe_load import UntrustedFileError, load_pickle
from mvpose.skeletons import H36M_ACTIONS, get_skeleton

__all__ = [
    "H36M_CAMERA_IDS",
    "DAMAGED_SEQUENCES",
    "H36MDataset",
    "read_h36m",
    "annotation_file",
    "load_annotations",
    "is_damaged",
    "group_records",
    "H36M_IMAGE_SIZES",
    "h36m_camera_params",
    "h36m_camera_dict",
]

log = logging.getLogger(__name__)

# Camera ids in the order of the annotations' camera_id 0..3 (ca_01..ca_04).
H36M_CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
# (subject, action, subaction) with damaged 3D ground truth: S9 Greeting-2, SittingDown-2, Waiting-1.
DAMAGED_SEQUENCES = frozenset({(9, 5, 2), (9, 10, 2), (9, 13, 1)})
SPLIT_FILES = {"train": "h36m_train.pkl", "validation": "h36m_validation.pkl"}
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "test": "validation"}
DEFAULT_FRAME_STRIDE = {"train": 5, "validation": 64}
# Largest accepted distance (mm) between the world poses R^T joints_3d_camera + T of one group's views.
VIEW_TOLERANCE_MM = 5.0  # float32 labels agree to ~1e-3 mm; a mixed-up camera or record is metres off
RECORD_KEYS = (
    "image", "joints_2d", "joints_3d_camera", "joints_vis", "subject", "action", "subaction",
    "image_id", "camera_id", "camera", "center", "scale",
)
NUM_JOINTS = 17

GroupKey = tuple[int, int, int, int]  # subject, action, subaction, image_id


# ------------------------------------------------------------------------- Human3.6M cameras
# Human3.6M image sizes (width, height) per camera id: two of the four cameras record 1000x1002.
H36M_IMAGE_SIZES = {"54138969": (1000, 1002), "55011271": (1000, 1000), "58860488": (1000, 1000), "60457274": (1000, 1002)}


def h36m_camera_params(cam: Mapping[str, Any], where: str = "Human3.6M camera", name: str | None = None) -> dict[str, Any]:
    """Convert a Human3.6M camera dict to mvpose parameters.

    Accepts both the H36M-Toolbox annotation layout (``R (3,3)``, ``T (3,1)`` camera centre, ``fx``,
    ``fy``, ``cx``, ``cy`` as 1-element arrays, ``k (3,1)``, ``p (2,1)``) and the
    ``h36m_cameras.json`` layout (``f (2,)``, ``c (2,)``). Human3.6M stores the centre, so ``t = -R T``.
    """
    R = field_array(cam, "R", where, (3, 3))
    C = field_array(cam, "T", where, (3,))
    if "f" in cam:
        fx, fy = field_array(cam, "f", where, (2,))
        cx, cy = field_array(cam, "c", where, (2,))
    else:
        fx, fy, cx, cy = (float(field_array(cam, k, where).reshape(-1)[0]) for k in ("fx", "fy", "cx", "cy"))
    k = field_array(cam, "k", where, (3,))
    p = field_array(cam, "p", where, (2,))
    cam_id = str(cam.get("camera_id", cam.get("name", name or "")))
    size = np.asarray(H36M_IMAGE_SIZES.get(cam_id, (1000, 1000)), dtype=np.float64)
    return {
        "name": name or cam_id,
        "K": np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]),
        "dist": np.array([k[0], k[1], p[0], p[1], k[2]]),
        "R": R,
        "t": -R @ C,
        "size": size,
    }


def h36m_camera_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """mvpose parameters -> the H36M-Toolbox annotation camera dict (``T`` is the camera centre)."""
    R = np.asarray(params["R"], dtype=np.float64)
    K = np.asarray(params["K"], dtype=np.float64)
    d = np.asarray(params["dist"], dtype=np.float64)
    C = -R.T @ np.asarray(params["t"], dtype=np.float64)
    return {
        "R": R,
        "T": C.reshape(3, 1),
        "fx": np.array([K[0, 0]]),
        "fy": np.array([K[1, 1]]),
        "cx": np.array([K[0, 2]]),
        "cy": np.array([K[1, 2]]),
        "k": np.array([d[0], d[1], d[4]]).reshape(3, 1),
        "p": np.array([d[2], d[3]]).reshape(2, 1),
    }


# ------------------------------------------------------------------------------ annotations
def _split_name(split: str) -> str:
    name = SPLIT_ALIASES.get(split, split)
    if name not in SPLIT_FILES:
        raise DatasetError(f"Human3.6M: unknown split {split!r}; use 'train' or 'validation' (alias 'test')")
    return name


def annotation_file(root: str | Path, split: str) -> Path:
    """``ROOT/annot/h36m_{train,validation}.pkl``."""
    return Path(root) / "annot" / SPLIT_FILES[_split_name(split)]


def load_annotations(path: str | Path) -> list[dict[str, Any]]:
    """Read an annotation pickle and check it is a non-empty list of records with the schema's keys.

    The pickle is read with :func:`mvpose.safe_load.load_pickle`: only builtin containers and numpy
    arrays / dtypes / scalars (all the H36M-Toolbox files hold); a file naming another global raises
    :class:`~mvpose.data.dataset.DatasetError` naming the file and the global, before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: Human3.6M annotation file not found")
    try:
        records = load_pickle(path)  # builtins and numpy arrays only: never runs code from the file
    except UntrustedFileError as err:
        raise DatasetError(str(err)) from err
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err
    if not isinstance(records, list):
        raise DatasetError(f"{path}: expected a list of records, found {type(records).__name__}")
    if not records:
        raise DatasetError(f"{path}: the split is empty (no records)")
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise DatasetError(f"{path}: record {i} is a {type(rec).__name__}, expected a dict")
        missing = [k for k in RECORD_KEYS if k not in rec]
        if missing:
            raise DatasetError(f"{path}: record {i} ({rec.get('image', '?')}) lacks key(s) {missing}")
    return records


def is_damaged(record: Mapping[str, Any]) -> bool:
    """True for the S9 sequences with damaged 3D ground truth."""
    return (int(record["subject"]), int(record["action"]), int(record["subaction"])) in DAMAGED_SEQUENCES


def _int_field(rec: Mapping[str, Any], key: str, where: str) -> int:
    value = rec[key]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        raise DatasetError(f"{where}: field '{key}' must be a single number, found {value!r}")
    item = arr.reshape(-1)[0].item()
    if float(item) != int(item):
        raise DatasetError(f"{where}: field '{key}' must be an integer, found {value!r}")
    return int(item)


def group_records(
    records: Sequence[Mapping[str, Any]], camera_ids: Sequence[int], where: str, num_cameras: int = 4
) -> tuple[list[tuple[GroupKey, list[int]]], list[tuple[GroupKey, list[int]]]]:
    """Group record indices by ``(subject, action, subaction, image_id)``.

    Args:
        camera_ids: the cameras every group must have, in view order.

    Returns:
        complete: ``(key, record index per chosen camera)`` in order of first appearance.
        incomplete: ``(key, missing camera ids)`` of the groups lacking a chosen camera.
    """
    table: dict[GroupKey, dict[int, int]] = {}
    for i, rec in enumerate(records):
        w = f"{where} record {i} ({rec['image']})"
        cam = _int_field(rec, "camera_id", w)
        if not 0 <= cam < num_cameras:
            raise DatasetError(f"{w}: field 'camera_id' = {cam} is out of range 0..{num_cameras - 1}")
        action = _int_field(rec, "action", w)
        if action not in H36M_ACTIONS:
            raise DatasetError(f"{w}: field 'action' = {action}, expected an action id in {min(H36M_ACTIONS)}..{max(H36M_ACTIONS)}")
        key = (_int_field(rec, "subject", w), action, _int_field(rec, "subaction", w), _int_field(rec, "image_id", w))
        cams = table.setdefault(key, {})
        if cam in cams:
            raise DatasetError(f"{w}: duplicate of record {cams[cam]} (same subject, action, subaction, image_id, camera_id)")
        cams[cam] = i
    complete, incomplete = [], []
    for key, cams in table.items():
        missing = [c for c in camera_ids if c not in cams]
        if missing:
            incomplete.append((key, missing))
        else:
            complete.append((key, [cams[c] for c in camera_ids]))
    return complete, incomplete


def _array(rec: Mapping[str, Any], key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        arr = np.asarray(rec[key], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{where}: field '{key}' is not numeric") from err
    if arr.shape != shape:
        raise DatasetError(f"{where}: field '{key}' must have shape {shape}, found {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DatasetError(f"{where}: field '{key}' contains NaN or infinity")
    return arr


@register_dataset("h36m", aliases=("human36m",))
def read_h36m(
    root: str | Path,
    split: str = "train",
    views: int | Sequence[int] | None = None,
    frame_stride: int | None = None,
    drop_damaged: bool = True,
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
    check_files: bool = True,
    view_tolerance_mm: float = VIEW_TOLERANCE_MM,
) -> Reading:
    """Read a Human3.6M split (H36M-Toolbox layout) into multi-view groups.

    Args:
        root: dataset root (``annot/`` and ``images/`` inside).
        split: "train" or "validation" (alias "test", "val").
        views: None (all 4 cameras), N (cameras 0..N-1) or a list of camera ids 0..3.
        frame_stride: keep every n-th complete group; default 5 for train, 64 for validation.
        drop_damaged: leave out the damaged S9 sequences.
        image_sizes: required image ``(W, H)`` per camera id. Default: every image of a camera must
            have the size of that camera's first image, which must contain the principal point
            (the real rig's 1000x1002 cameras also accept 1000x1000, the crop some tools write).
        check_files: check at construction that every selected image exists (and read the
            reference sizes); without it, sizes are checked only against ``image_sizes``.
        view_tolerance_mm: largest accepted distance (mm) between the world poses
            ``R^T joints_3d_camera + T`` of one group's views (DatasetError naming the record otherwise).

    Returns:
        The :class:`~mvpose.data.dataset.Reading`: MPJPE broken down per action, hidden joints supervised.

    Raises:
        DatasetError: a missing or malformed file, record or image (the message names it).
    """
    root = Path(root)
    split = _split_name(split)
    path = annotation_file(root, split)
    camera_ids = select_views(views, len(H36M_CAMERA_IDS), f"Human3.6M {path}")
    stride = int(frame_stride or DEFAULT_FRAME_STRIDE[split])
    if stride < 1:
        raise DatasetError(f"Human3.6M: frame_stride must be >= 1, got {stride}")

    records = load_annotations(path)
    num_records = len(records)
    damaged = [r for r in records if is_damaged(r)]
    if drop_damaged and damaged:
        records = [r for r in records if not is_damaged(r)]
        log.info("%s: left out %d records of the damaged S9 sequences", path, len(damaged))
    if not records:
        raise DatasetError(f"{path}: no records left after dropping the damaged S9 sequences")
    complete, incomplete = group_records(records, camera_ids, str(path))
    if incomplete:
        log.warning(
            "%s: %d of %d groups lack a chosen camera %s and are not used (listed in incomplete_groups; first %s missing %s)",
            path, len(incomplete), len(incomplete) + len(complete), camera_ids, incomplete[0][0], incomplete[0][1],
        )
    if not complete:
        raise DatasetError(f"{path}: no group has all chosen cameras {camera_ids}")
    selected = complete[::stride]
    log.info(
        "%s: %d records -> %d complete groups -> %d samples (every %d), views %s",
        path, num_records, len(complete), len(selected), stride, camera_ids,
    )

    groups = [_group(records, key, idx, path, root, float(view_tolerance_mm)) for key, idx in selected]
    if check_files:
        check_images_exist(groups, f"Human3.6M {split} ({path})")
    if image_sizes is not None or check_files:
        _set_image_sizes(groups, image_sizes)
    return Reading(groups, get_skeleton("h36m"), camera_ids, name=f"h36m-{split}", split=split, root=root,
                   breakdown="action", supervise_hidden=True, incomplete_groups=incomplete)


def H36MDataset(root: str | Path, split: str = "train", views: int | Sequence[int] | None = None,
                **options: Any) -> MultiViewDataset:
    """Human3.6M samples (format in :mod:`mvpose.data.dataset`): :func:`read_h36m` into a
    :class:`~mvpose.data.dataset.MultiViewDataset`; ``options`` go to the reader or the dataset."""
    return read_dataset(read_h36m, root, split, views, **options)


def _set_image_sizes(groups: list[Group], override: Mapping[int, tuple[int, int]] | None) -> None:
    """Set the accepted image sizes per camera: ``override``, else the size of its first image."""
    if override is not None:
        sizes = {int(c): (tuple(int(v) for v in s),) for c, s in override.items()}
    else:
        sizes = {}
        for view in (v for g in groups for v in g.views):
            if view.camera_id in sizes:
                continue
            W, H = image_size(view.image)
            cx, cy = view.K[0, 2], view.K[1, 2]
            if not (0 < cx < W and 0 < cy < H):
                raise DatasetError(
                    f"{view.image}: image is {W}x{H} but camera {view.camera_id}'s principal point "
                    f"({cx:.1f}, {cy:.1f}) lies outside it: images and camera parameters disagree"
                )
            # The real rig's 1000x1002 cameras are cut to 1000 rows by some tools: accept both.
            alt = {1002: 1000, 1000: 1002}.get(H) if W == 1000 else None
            sizes[view.camera_id] = ((W, H),) if alt is None else ((W, H), (W, alt))
    for view in (v for g in groups for v in g.views):
        if view.camera_id not in sizes:
            raise DatasetError(f"Human3.6M: image_sizes gives no size for camera {view.camera_id} (has {sorted(sizes)})")
        view.image_sizes = sizes[view.camera_id]


def _world_truth(records, indices: list[int], views: list[ViewRecord], path: Path, tolerance_mm: float) -> np.ndarray:
    """World pose (17, 3) mm of a group: ``R^T joints_3d_camera + T`` of its first view.

    Raises DatasetError naming the records when two views' world poses differ by more than
    ``tolerance_mm`` (wrong camera, wrong ``joints_3d_camera`` or a mixed-up record).
    """
    worlds = []
    for i, view in zip(indices, views):
        rec = records[i]
        cam = _array(rec, "joints_3d_camera", (NUM_JOINTS, 3), f"{path} record ({rec['image']})")
        worlds.append((cam - view.t) @ view.R)  # R^T (x - t) = R^T x + C
    worlds = np.stack(worlds)
    gap = np.linalg.norm(worlds - worlds[0], axis=-1)  # (V, J) mm
    if gap.max() > tolerance_mm:
        v, j = np.unravel_index(np.argmax(gap), gap.shape)
        raise DatasetError(
            f"{path} record ({records[indices[v]]['image']}): its world pose R^T joints_3d_camera + T "
            f"differs from that of record ({records[indices[0]]['image']}) by {gap[v, j]:.1f} mm at joint {j} "
            f"(at most {tolerance_mm:g} mm accepted): the views of one frame disagree "
            "(wrong camera or joints_3d_camera)"
        )
    return worlds[0]


def _group(records, key: GroupKey, indices: list[int], path: Path, root: Path, tolerance_mm: float) -> Group:
    views = []
    for i in indices:
        rec = records[i]
        where = f"{path} record ({rec['image']})"
        cam = int(rec["camera_id"])
        try:
            params = h36m_camera_params(rec["camera"], where=f"{where} field 'camera'", name=H36M_CAMERA_IDS[cam])
        except CalibrationError as err:
            raise DatasetError(str(err)) from err
        vis = _array(rec, "joints_vis", (NUM_JOINTS, 3), where)
        views.append(
            ViewRecord(
                image=root / "images" / str(rec["image"]).replace("\\", "/"),
                joints_2d=_array(rec, "joints_2d", (NUM_JOINTS, 2), where),
                joints_vis=(vis[:, 0] > 0).astype(np.float64),
                center=_array(rec, "center", (2,), where),
                scale=_array(rec, "scale", (2,), where),
                K=params["K"], R=params["R"], t=params["t"], dist=params["dist"],
                camera_id=cam,
                image_sizes=(),
            )
        )
        if np.any(views[-1].scale <= 0):
            raise DatasetError(f"{where}: field 'scale' must be positive, found {views[-1].scale.tolist()}")
    joints_3d = _world_truth(records, indices, views, path, tolerance_mm)
    subject, action, subaction, image_id = key
    return Group(
        views=views, joints_3d=joints_3d, subject=subject, action=action, subaction=subaction,
        frame=image_id, action_name=H36M_ACTIONS[action],
    )
