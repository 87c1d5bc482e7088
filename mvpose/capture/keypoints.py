"""Readers of 2D keypoints written by off-the-shelf detectors, one camera at a time.

Two layouts are read:

- **OpenPose JSON**: a folder with one file per frame (``<video>_000000000012_keypoints.json``), each
  ``{"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, y1, c1, ...]}, ...]}``. The frame number is the
  last run of digits in the file name (sorted order when no name has digits). ``(0, 0, 0)`` triples are
  missing joints, as OpenPose writes them. Pose2Sim, AlphaPose (``--format open``), RTMLib and MMPose
  exporters write the same layout.
- **COCO results JSON**: one file per camera, a list of ``{"image_id", "keypoints": [x, y, score, ...],
  "score"}`` (the layout ``COCOeval`` reads), or a dict with ``"annotations"`` (the dataset layout). The
  frame number is ``image_id`` (or the last digits of a string id).

Joint sets (:mod:`mvpose.skeletons`) are named with ``joints`` or recognised from the count: 25 is BODY_25,
26 HALPE-26, 17 COCO-17 (Human3.6M-17 also has 17: name it with ``joints="h36m"``; OpenPose BODY_25B also
has 25: ``joints="body25b"``).

An unreadable or malformed file does not stop the capture: its frame counts as missing for that camera and
the reason (file, field, what was expected) is kept in :attr:`CameraKeypoints.issues`.

Placeholder people are skipped and counted in :attr:`CameraKeypoints.skipped` (trackers that keep one slot
per person write them ahead of the real one): a ``null`` entry of ``people`` or of a COCO results list, a
person whose keypoints are ``null`` or ``[]``, and a person without a single joint of confidence > 0 (an
all-zero slot). The people that remain keep their order; :attr:`CameraKeypoints.people` slot ``p`` is the
``p``-th real person of the frame.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from mvpose.frames import frame_number
from mvpose.skeletons import SKELETONS, get_skeleton

__all__ = [
    "CameraKeypoints",
    "KeypointError",
    "JOINT_SETS_BY_COUNT",
    "PLACEHOLDERS",
    "BAD_VALUES",
    "find_camera_sources",
    "frame_number",
    "parse_openpose",
    "read_camera_keypoints",
    "read_coco_results",
    "read_openpose_folder",
    "resolve_joint_set",
]

log = logging.getLogger(__name__)

# Keypoint count -> joint set. 17 is also Human3.6M-17; that one must be named.
JOINT_SETS_BY_COUNT = {25: "body25", 26: "halpe26", 17: "coco"}
# Placeholder kinds counted in CameraKeypoints.skipped.
PLACEHOLDERS = {
    "null": "null entries",
    "null_keypoints": "people whose keypoints are null",
    "empty": "people with empty keypoints",
    "all_zero": "all-zero people (no joint with confidence > 0)",
}
# Values no detector should write, left out and counted in CameraKeypoints.skipped as well (not placeholders).
BAD_VALUES = {
    "invalid_values": "people without a usable joint (NaN or negative confidences, or no finite position)",
    "joint_nan_confidence": "joints with a NaN confidence",
    "joint_negative_confidence": "joints with a negative confidence",
    "joint_bad_position": "joints with confidence > 0 but x or y null, NaN or infinite",
}


class KeypointError(ValueError):
    """Keypoints could not be read at all (no usable file); the message names the path and the reason."""


@dataclass
class CameraKeypoints:
    """The 2D detections of one camera.

    Attributes:
        name: camera name (the folder or file stem).
        source: the folder or file read.
        frames: (F,) int64 frame numbers, increasing.
        people: (F, P, J, 3) float64 ``(x, y, confidence)``; NaN ``x, y`` and confidence 0 where a joint or a
            whole person slot is missing (P is the most people in any frame, at least 1).
        issues: one line per file or record that could not be used.
        skipped: placeholder kind (see :data:`PLACEHOLDERS`) -> how many were skipped.
    """

    name: str
    source: Path
    frames: np.ndarray
    people: np.ndarray
    issues: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def num_joints(self) -> int:
        return self.people.shape[2]


# --------------------------------------------------------------------------------------------- helpers
def resolve_joint_set(num_joints: int, joints: str | None, where: str) -> str:
    """Name the joint set of ``num_joints`` keypoints per person, checking an explicit choice against it."""
    if joints is not None:
        skeleton = get_skeleton(joints)
        if skeleton.num_joints != num_joints:
            raise KeypointError(
                f"{where}: {num_joints} keypoints per person, but joint set {joints!r} has {skeleton.num_joints}"
            )
        return skeleton.name
    if num_joints not in JOINT_SETS_BY_COUNT:
        known = ", ".join(f"{n} ({s})" for s, n in sorted((s.name, s.num_joints) for s in SKELETONS.values()))
        raise KeypointError(
            f"{where}: {num_joints} keypoints per person matches no joint set; known: {known}"
        )
    name = JOINT_SETS_BY_COUNT[num_joints]
    if num_joints == 17:
        log.info("%s: 17 keypoints per person read as COCO-17 (use joints='h36m' for Human3.6M order)", where)
    if num_joints == 25:
        log.info("%s: 25 keypoints per person read as BODY_25 (use joints='body25b' for BODY_25B order)", where)
    return name


def _triples(values: Any, where: str, key: str, skipped: dict[str, int] | None = None) -> np.ndarray:
    """A flat ``[x, y, c, ...]`` list -> (J, 3) float64 with missing joints as NaN, confidence 0.

    Joints with a NaN or negative confidence, or a confident joint without a finite position, are missing
    too and counted in ``skipped`` (:data:`BAD_VALUES`): values no detector should write.
    """
    if not isinstance(values, list):
        raise ValueError(f"{where}: field '{key}' must be a list of numbers, found {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field '{key}' holds non-numeric values") from None
    if arr.ndim != 1 or arr.size % 3 or arr.size == 0:
        raise ValueError(f"{where}: field '{key}' must hold x, y, confidence triples, found {arr.size} values")
    arr = arr.reshape(-1, 3)
    raw = arr[:, 2]
    conf = np.nan_to_num(raw, nan=0.0)
    bad_xy = ~np.isfinite(arr[:, :2]).all(axis=1)
    for kind, n in (("joint_nan_confidence", np.isnan(raw).sum()), ("joint_negative_confidence", (raw < 0).sum()),
                    ("joint_bad_position", ((conf > 0) & bad_xy).sum())):
        if n:
            _count(skipped, kind, int(n))
    missing = (conf <= 0) | bad_xy
    arr[missing, :2] = np.nan
    arr[:, 2] = np.where(missing, 0.0, conf)
    return arr


def _no_joint_kind(values: list) -> str:
    """Why a person has no usable joint: every confidence 0 (a placeholder) or bad values."""
    conf = np.asarray(values, dtype=np.float64).reshape(-1, 3)[:, 2]
    return "all_zero" if (conf == 0).all() else "invalid_values"


def _placeholder(kp: Any) -> str | None:
    """The kind of placeholder a keypoint field is before parsing (None: parse it)."""
    if kp is None:
        return "null_keypoints"
    if isinstance(kp, list) and not kp:
        return "empty"
    return None


def _count(skipped: dict[str, int] | None, kind: str, n: int = 1) -> None:
    if skipped is not None:
        skipped[kind] = skipped.get(kind, 0) + n


def parse_openpose(text: str | bytes, where: str, skipped: dict[str, int] | None = None) -> list[np.ndarray]:
    """One OpenPose JSON document -> a list of (J, 3) people. Raises ValueError naming ``where`` and the field.

    Placeholders (module doc) are left out and counted in ``skipped`` (kind -> count) when given.
    """
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or "people" not in doc:
        raise ValueError(f"{where}: expected an OpenPose object with a 'people' list")
    people = doc["people"]
    if people is None:  # a frame without anybody, written as null
        _count(skipped, "null")
        people = []
    if not isinstance(people, list):
        raise ValueError(f"{where}: field 'people' must be a list, found {type(people).__name__}")
    out = []
    for i, person in enumerate(people):
        if person is None:
            _count(skipped, "null")
            continue
        if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
            raise ValueError(f"{where}: people[{i}] has no field 'pose_keypoints_2d'")
        kp = person["pose_keypoints_2d"]
        kind = _placeholder(kp)  # OpenPose writes [] for a body it did not estimate
        if kind is None:
            arr = _triples(kp, f"{where} people[{i}]", "pose_keypoints_2d", skipped)
            kind = None if (arr[:, 2] > 0).any() else _no_joint_kind(kp)
        if kind is not None:
            _count(skipped, kind)
            continue
        out.append(arr)
    return out


def _read_openpose_files(paths: Sequence[str]) -> tuple[list[list[np.ndarray] | str], dict[str, int]]:
    """Worker: parse files; each entry is the people list or an error line; plus the placeholders skipped."""
    out: list[list[np.ndarray] | str] = []
    skipped: dict[str, int] = {}
    for path in paths:
        try:
            out.append(parse_openpose(Path(path).read_bytes(), path, skipped))
        except (OSError, ValueError) as err:
            out.append(str(err) if isinstance(err, ValueError) else f"{path}: cannot read ({err.strerror})")
    return out, skipped


def _pack(name: str, source: Path, frames: list[int], people: list[list[np.ndarray]], issues: list[str],
          skipped: dict[str, int]) -> CameraKeypoints:
    """Per-frame people lists -> one padded array; people with another joint count become issues."""
    counts = [p.shape[0] for frame in people for p in frame]
    if not counts:
        J = 0
    else:
        values, n = np.unique(counts, return_counts=True)
        J = int(values[np.argmax(n)])
    if len(set(counts)) > 1:
        for f, frame in zip(frames, people):
            bad = [p.shape[0] for p in frame if p.shape[0] != J]
            if bad:
                issues.append(f"{source}: frame {f}: {bad[0]} keypoints per person where the other frames have {J}; ignored")
        people = [[p for p in frame if p.shape[0] == J] for frame in people]
    P = max([len(frame) for frame in people] + [1])
    order = np.argsort(frames, kind="stable")
    arr = np.full((len(frames), P, max(J, 1), 3), np.nan)
    arr[..., 2] = 0.0
    for row, i in enumerate(order):
        for p, person in enumerate(people[i]):
            arr[row, p] = person
    return CameraKeypoints(name, source, np.asarray(frames, dtype=np.int64)[order], arr, issues, skipped)


def read_openpose_folder(
    folder: str | Path, name: str | None = None, workers: int = 0, progress: bool = False,
    pool: Executor | None = None,
) -> CameraKeypoints:
    """Read a folder of OpenPose JSON files (one per frame).

    Args:
        folder: the folder; every ``*.json`` in it is a frame.
        name: camera name (default: the folder name).
        workers: processes parsing files (0 or 1: in this process); ignored when ``pool`` is given.
        progress: a progress bar over the files.
        pool: an executor to parse chunks of files in (shared by several cameras).

    Returns:
        :class:`CameraKeypoints`; unreadable files are missing frames listed in ``issues``.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".json" and not p.name.startswith("."))
    if not files:
        raise KeypointError(f"{folder}: no OpenPose .json files")
    numbers = [frame_number(p.name) for p in files]
    unnumbered: list[str] = []
    if any(n is None for n in numbers):
        if all(n is None for n in numbers):
            numbers = list(range(len(files)))
        elif 2 * sum(n is None for n in numbers) <= len(numbers):
            # A few strays among numbered frames (a summary or settings file): left out, not the camera.
            unnumbered = [f"{folder / p.name}: no frame number in the file name; not read as a frame"
                          for p, n in zip(files, numbers) if n is None]
            files, numbers = [p for p, n in zip(files, numbers) if n is not None], [n for n in numbers if n is not None]
        else:
            bad = [p.name for p, n in zip(files, numbers) if n is None][:3]
            raise KeypointError(f"{folder}: some file names carry no frame number (e.g. {bad}); all or none must")
    seen: dict[int, str] = {}
    for p, n in zip(files, numbers):
        if n in seen:
            raise KeypointError(f"{folder}: files {seen[n]} and {p.name} both hold frame {n}")
        seen[n] = p.name
    paths = [str(p) for p in files]
    size = min(256, max(16, math.ceil(len(paths) / (4 * max(workers, 1)))))
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    parsed: list[list[np.ndarray] | str] = []
    skipped: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        if pool is None and workers > 1 and len(chunks) > 1:
            from mvpose.parallel import worker_context

            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=worker_context(preload=[__name__])))
        parts = pool.map(_read_openpose_files, chunks) if pool is not None else map(_read_openpose_files, chunks)
        bar = stack.enter_context(tqdm(total=len(paths), desc=f"read {name or folder.name}", unit="file",
                                       disable=not progress, leave=False))
        for part, part_skipped in parts:
            parsed += part
            for kind, n in part_skipped.items():
                skipped[kind] = skipped.get(kind, 0) + n
            bar.update(len(part))
    issues = unnumbered + [r for r in parsed if isinstance(r, str)]
    keep = [i for i, r in enumerate(parsed) if not isinstance(r, str)]
    if not keep:
        raise KeypointError(f"{folder}: none of the {len(files)} files could be read; first problem: {issues[-1]}")
    return _pack(name or folder.name, folder, [numbers[i] for i in keep], [parsed[i] for i in keep], issues, skipped)


def read_coco_results(path: str | Path, name: str | None = None) -> CameraKeypoints:
    """Read a COCO keypoint results JSON (list of detections) or a COCO-style dict with ``annotations``.

    Every detection of an image is one person of that frame; the frame number is ``image_id`` (the last digits
    of a string id; for the dict layout, the digits of the image's ``file_name`` when it has them).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except OSError as err:
        raise KeypointError(f"{path}: cannot read ({err.strerror})") from None
    except ValueError as err:
        raise KeypointError(f"{path}: not valid JSON ({err})") from None
    frame_of: dict[Any, int] = {}
    if isinstance(doc, dict):
        if not isinstance(doc.get("annotations"), list):
            raise KeypointError(f"{path}: expected a COCO results list or a dict with an 'annotations' list")
        for img in doc.get("images", []) or []:
            if isinstance(img, dict) and "id" in img and frame_number(str(img.get("file_name", ""))) is not None:
                frame_of[img["id"]] = frame_number(str(img["file_name"]))
        records = doc["annotations"]
    elif isinstance(doc, list):
        records = doc
    else:
        raise KeypointError(f"{path}: expected a COCO results list, found {type(doc).__name__}")
    issues: list[str] = []
    skipped: dict[str, int] = {}
    by_frame: dict[int, list[np.ndarray]] = {}
    for i, rec in enumerate(records):
        where = f"{path} [{i}]"
        try:
            if rec is None:
                _count(skipped, "null")
                continue
            if not isinstance(rec, dict) or "image_id" not in rec or "keypoints" not in rec:
                raise ValueError(f"{where}: needs fields 'image_id' and 'keypoints'")
            image_id = rec["image_id"]
            frame = frame_of.get(image_id)
            if frame is None:
                frame = image_id if isinstance(image_id, int) else frame_number(str(image_id))
            if not isinstance(frame, int):
                raise ValueError(f"{where}: 'image_id' {image_id!r} is not a frame number")
            kind = _placeholder(rec["keypoints"])
            if kind is None:
                person = _triples(rec["keypoints"], where, "keypoints", skipped)
                kind = None if (person[:, 2] > 0).any() else _no_joint_kind(rec["keypoints"])
            if kind is not None:
                _count(skipped, kind)
                by_frame.setdefault(frame, [])  # the frame exists, with nobody in it
                continue
            by_frame.setdefault(frame, []).append(person)
        except ValueError as err:
            issues.append(str(err))
    if not by_frame:
        first = f"; first problem: {issues[0]}" if issues else ""
        raise KeypointError(f"{path}: no usable detection{first}")
    frames = sorted(by_frame)
    return _pack(name or path.stem, path, frames, [by_frame[f] for f in frames], issues, skipped)


def _is_coco_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    return head.startswith(b"[") or (head.startswith(b"{") and b'"annotations"' in head)


def read_camera_keypoints(
    source: str | Path, name: str | None = None, workers: int = 0, progress: bool = False,
    pool: Executor | None = None,
) -> CameraKeypoints:
    """Read one camera's keypoints: an OpenPose folder, a COCO results file, or a folder holding only one.

    Args:
        source: folder of OpenPose files, or a ``.json`` COCO results file.
        name: camera name (default: the folder name or file stem).
        workers: processes for OpenPose folders.
        progress: a progress bar over the files of OpenPose folders.
        pool: an executor for OpenPose folders (see :func:`read_openpose_folder`).
    """
    source = Path(source)
    if source.is_file():
        return read_coco_results(source, name)
    if not source.is_dir():
        raise KeypointError(f"{source}: no such folder or file")
    files = [p for p in source.iterdir() if p.suffix.lower() == ".json" and not p.name.startswith(".")]
    if len(files) == 1 and _is_coco_file(files[0]):
        return read_coco_results(files[0], name or source.name)
    return read_openpose_folder(source, name, workers, progress, pool)


def find_camera_sources(directory: str | Path, file_suffixes: Sequence[str] = (".json",)) -> dict[str, Path]:
    """Entries of an input folder by camera name: sub-folders by name, files with ``file_suffixes`` by stem.

    Hidden entries and other files (a README, a calibration) are left out.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise KeypointError(f"{directory}: not a folder")
    out: dict[str, Path] = {}
    for p in sorted(directory.iterdir()):
        if p.name.startswith(".") or not (p.is_dir() or p.suffix.lower() in file_suffixes):
            continue
        key = p.name if p.is_dir() else p.stem
        if key in out:
            raise KeypointError(f"{directory}: both {out[key].name} and {p.name} claim camera {key!r}")
        out[key] = p
    return out


def default_workers(workers: int | None) -> int:
    """``None`` -> the CPU count (at most 8); the number otherwise."""
    return min(8, os.cpu_count() or 1) if workers is None else workers
