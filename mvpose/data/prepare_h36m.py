"""Prepare Human3.6M from its raw download into the H36M-Toolbox layout (``ROOT/annot``, ``ROOT/images``).

Raw layout, per subject, as the official archives extract (``Poses_D3_Positions_S1.tgz`` and so on)::

    RAW/S1/MyPoseFeatures/D3_Positions/Directions 1.cdf               world joints, one file per take
    RAW/S1/MyPoseFeatures/D3_Positions_mono/Directions 1.54138969.cdf camera-frame joints, per camera
    RAW/S1/MyPoseFeatures/D3_Positions_mono_universal/Directions 1.54138969.cdf   the same, universal skeleton
    RAW/S1/MyPoseFeatures/D2_Positions/Directions 1.54138969.cdf      image joints, per camera
    RAW/S1/Videos/Directions 1.54138969.mp4

The h36m-fetch layout (``RAW/S1/Poses_D3_Positions/...``) is accepted too. Each CDF holds a ``Pose``
variable of shape ``(1, frames, 32 * d)``.

Output, as the H36M-Toolbox ``generate_labels.py`` writes it (every field in docs/data.md): action ids and
subaction numbers follow the official ``metadata.xml`` (:data:`ACTION_NAMES`, :data:`RAW_TAKES`), the 17
joints are :data:`H36M_32_TO_17` of the 32, ``joints_3d`` comes from ``D3_Positions_mono_universal``
(the pose retargeted to the universal skeleton, camera frame: NOT the world pose), ``joints_3d_camera``
from ``D3_Positions_mono`` (the real pose, camera frame, mm), ``joints_2d`` from ``D2_Positions``, and
the box is the root +-1 m horizontally, -0.9 m / +1.1 m vertically in the camera frame, projected
without distortion. The world pose is ``R^T joints_3d_camera + T`` (what :func:`~mvpose.data.h36m.read_h36m`
and the official 3D evaluation use). ``D3_Positions`` (world) serves only to check labels and cameras.

When a take's ``D3_Positions_mono_universal`` file is missing (it is a separate archive), its
``joints_3d`` holds ``D3_Positions_mono`` instead: the same frame and unit, the subject's own bone
lengths. The report says how many takes this concerns (``joints_3d_fallback``) and warns; mvpose never
reads ``joints_3d``.
"""

from __future__ import annotations

import logging
import os
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np

from mvpose.resources import h36m_calibration_path
from mvpose.skeletons import H36M_ACTIONS

__all__ = [
    "ACTION_NAMES",
    "CAMERA_IDS",
    "H36M_32_TO_17",
    "KNOWN_MISSING",
    "RAW_TAKES",
    "SUBJECTS",
    "TRAIN_SUBJECTS",
    "VALIDATION_SUBJECTS",
    "PrepareError",
    "Take",
    "format_report",
    "infer_boxes",
    "parse_subjects",
    "prepare_h36m",
    "raw_take_name",
    "read_cdf_pose",
]

log = logging.getLogger(__name__)

SUBJECTS = (1, 5, 6, 7, 8, 9, 11)
TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
VALIDATION_SUBJECTS = (9, 11)
# Camera ids in the order of camera_id 0..3 (ca_01..ca_04), as metadata.xml lists them.
CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
# The 17 joints kept of the 32 mocap joints (Hip, RHip, RKnee, RFoot, LHip, LKnee, LFoot, Spine, Thorax,
# Neck/Nose, Head, LShoulder, LElbow, LWrist, RShoulder, RElbow, RWrist), in the order of skeleton "h36m".
H36M_32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

# Action ids as metadata.xml numbers them (1 is "_ALL"); the H36M-Toolbox pickles use these.
ACTION_NAMES = dict(H36M_ACTIONS)
# S1's files spell two actions differently (metadata.xml records it).
_S1_NAMES = {12: "TakingPhoto", 15: "WalkingDog"}
# Which raw take is subaction 1 and which is 2, per action and subject, from metadata.xml's mapping:
# the number after the action name in the file name ("" = the unnumbered file). Not a sort order.
_TAKE_NUMBERS: dict[int, dict[int, tuple[str, str]]] = {
    #       S1           S5           S6           S7           S8           S9           S11
    2: dict(zip(SUBJECTS, [("1", ""), ("1", "2"), ("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", "")])),
    3: dict(zip(SUBJECTS, [("1", ""), ("2", "3"), ("1", ""), ("1", ""), ("1", ""), ("1", "2"), ("1", "2")])),
    4: dict(zip(SUBJECTS, [("2", ""), ("1", ""), ("1", "2"), ("1", ""), ("1", ""), ("1", ""), ("1", "")])),
    5: dict(zip(SUBJECTS, [("1", ""), ("1", "2"), ("1", ""), ("1", ""), ("1", ""), ("1", ""), ("2", "")])),
    6: dict(zip(SUBJECTS, [("1", ""), ("1", ""), ("1", ""), ("2", ""), ("1", ""), ("1", ""), ("3", "2")])),
    7: dict(zip(SUBJECTS, [("1", ""), ("1", ""), ("2", ""), ("1", ""), ("1", ""), ("1", ""), ("1", "")])),
    8: dict(zip(SUBJECTS, [("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", "")])),
    9: dict(zip(SUBJECTS, [("1", "2"), ("1", ""), ("1", "2"), ("1", ""), ("1", ""), ("1", ""), ("1", "")])),
    10: dict(zip(SUBJECTS, [("2", ""), ("", "1"), ("1", ""), ("", "1"), ("", "1"), ("", "1"), ("", "1")])),
    11: dict(zip(SUBJECTS, [("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", ""), ("2", "")])),
    12: dict(zip(SUBJECTS, [("1", ""), ("", "2"), ("", "1"), ("", "1"), ("1", ""), ("1", ""), ("1", "")])),
    13: dict(zip(SUBJECTS, [("1", ""), ("1", "2"), ("3", ""), ("1", "2"), ("1", ""), ("1", ""), ("1", "")])),
    14: dict(zip(SUBJECTS, [("1", ""), ("1", ""), ("1", ""), ("1", "2"), ("1", ""), ("1", ""), ("1", "")])),
    15: dict(zip(SUBJECTS, [("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", "")])),
    16: dict(zip(SUBJECTS, [("1", ""), ("1", ""), ("1", ""), ("1", ""), ("1", "2"), ("1", ""), ("1", "")])),
}
RAW_TAKES = _TAKE_NUMBERS
# Spellings found in re-distributed copies (renamed S1 files, "WalkingTogether"); tried when the
# official name is absent.
_ALIASES = {"TakingPhoto": "Photo", "Photo": "TakingPhoto", "WalkingDog": "WalkDog", "WalkDog": "WalkingDog",
            "WalkTogether": "WalkingTogether"}
# Takes the published annotations leave out: (subject, action, subaction, camera id) -> why.
KNOWN_MISSING = {
    (11, 2, 2, "54138969"): "S11 'Directions.54138969' is damaged in the official release; "
                            "the published annotations have no s_11_act_02_subact_02_ca_01",
}
# Where each pose kind lives below a subject folder: official archives, then h36m-fetch's extraction.
_POSE_DIRS = {
    "D3_Positions": ("MyPoseFeatures/D3_Positions", "Poses_D3_Positions"),
    "D3_Positions_mono": ("MyPoseFeatures/D3_Positions_mono", "Poses_D3_Positions_mono"),
    "D3_Positions_mono_universal": ("MyPoseFeatures/D3_Positions_mono_universal", "Poses_D3_Positions_mono_universal"),
    "D2_Positions": ("MyPoseFeatures/D2_Positions", "Poses_D2_Positions"),
}
_SPLITS = {"train": "h36m_train.pkl", "validation": "h36m_validation.pkl"}
_NUM_JOINTS_RAW = 32


class PrepareError(ValueError):
    """The raw download is incomplete or inconsistent; the message names the file and the problem."""


def raw_take_name(subject: int, action: int, subaction: int) -> str:
    """Official file stem of a take, e.g. ``raw_take_name(1, 4, 1) == "Eating 2"``."""
    if subject not in SUBJECTS or action not in ACTION_NAMES or subaction not in (1, 2):
        raise PrepareError(f"no Human3.6M take S{subject} action {action} subaction {subaction}; "
                           f"subjects {SUBJECTS}, actions 2..16, subactions 1..2")
    base = _S1_NAMES.get(action, ACTION_NAMES[action]) if subject == 1 else ACTION_NAMES[action]
    number = _TAKE_NUMBERS[action][subject][subaction - 1]
    return f"{base} {number}" if number else base


@dataclass(frozen=True)
class Take:
    """One camera's recording of one take: ``s_{subject}_act_{action}_subact_{subaction}_ca_{camera + 1}``."""

    subject: int
    action: int
    subaction: int
    camera: int  # 0..3

    @property
    def camera_name(self) -> str:
        return CAMERA_IDS[self.camera]

    @property
    def folder(self) -> str:
        return f"s_{self.subject:02d}_act_{self.action:02d}_subact_{self.subaction:02d}_ca_{self.camera + 1:02d}"

    @property
    def raw_name(self) -> str:
        return raw_take_name(self.subject, self.action, self.subaction)

    @property
    def video_id(self) -> int:
        """Position in the H36M-Toolbox loop over all subjects, actions, subactions and cameras."""
        s = SUBJECTS.index(self.subject)
        return ((s * len(ACTION_NAMES) + self.action - 2) * 2 + self.subaction - 1) * len(CAMERA_IDS) + self.camera

    def image(self, frame: int) -> str:
        """Relative image path of 1-based ``frame``."""
        return f"{self.folder}/{self.folder}_{frame:06d}.jpg"

    def __str__(self) -> str:
        return f"S{self.subject} {self.raw_name}.{self.camera_name} (act {self.action} subact {self.subaction})"


def parse_subjects(values: Iterable[str | int]) -> list[int]:
    """``["S1", "5", "6,7"]`` -> ``[1, 5, 6, 7]``; fails on subjects Human3.6M does not publish."""
    out: list[int] = []
    for value in values:
        for part in str(value).replace(",", " ").split():
            text = part.upper().removeprefix("S")
            if not text.isdigit() or int(text) not in SUBJECTS:
                raise PrepareError(f"unknown subject {part!r}; Human3.6M subjects are {', '.join(f'S{s}' for s in SUBJECTS)}")
            if int(text) not in out:
                out.append(int(text))
    return out


def read_cdf_pose(path: Path, dim: int) -> np.ndarray:
    """The ``Pose`` variable of a Human3.6M CDF file as ``(frames, 32, dim)``, in the file's dtype."""
    import cdflib

    try:
        cdf = cdflib.CDF(str(path))
        info = cdf.cdf_info()
        names = list(info.zVariables) + list(info.rVariables)
        if "Pose" not in names:
            raise PrepareError(f"{path}: no variable 'Pose' (variables: {names})")
        pose = np.asarray(cdf.varget("Pose"))
    except PrepareError:
        raise
    except Exception as err:  # cdflib raises bare OSError/ValueError/KeyError on damaged files
        raise PrepareError(f"{path}: not a readable CDF file ({type(err).__name__}: {err})") from err
    width = _NUM_JOINTS_RAW * dim
    if pose.ndim == 0 or pose.shape[-1] != width or pose.size == 0:
        raise PrepareError(f"{path}: variable 'Pose' must have shape (1, frames, {width}), found {pose.shape}")
    pose = pose.reshape(-1, _NUM_JOINTS_RAW, dim)
    if not np.all(np.isfinite(pose)):
        raise PrepareError(f"{path}: variable 'Pose' contains NaN or infinity")
    return pose


def infer_boxes(root_cam: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """H36M-Toolbox boxes from the camera-frame root ``(N, 3)`` mm -> ``(N, 4)`` ``x0, y0, x1, y1`` pixels.

    The box spans 2 m across and 2 m up and down (0.9 m above the root, 1.1 m below) at the root's depth,
    projected with the pinhole model (no distortion), as the published preprocessing does.
    """
    offsets = np.array([[-1000.0, -900.0], [1000.0, 1100.0]])  # (2 corners, xy)
    xy = root_cam[:, None, :2] + offsets  # (N, 2, 2)
    z = root_cam[:, None, 2:3]
    pix = xy / z * np.array([fx, fy]) + np.array([cx, cy])
    return pix.reshape(-1, 4)


# ------------------------------------------------------------------------------------ raw files
def _subject_dir(raw: Path, subject: int) -> Path:
    path = raw / f"S{subject}"
    if not path.is_dir():
        raise PrepareError(f"{raw}: subject folder 'S{subject}' not found (expected {path} with MyPoseFeatures/ and Videos/)")
    return path


def _candidates(stem: str) -> list[str]:
    """``stem`` (e.g. "TakingPhoto 1.54138969") and its spelling with the other action name, if any."""
    base = stem.split(" ")[0].split(".")[0]
    return [stem] + ([_ALIASES[base] + stem[len(base):]] if base in _ALIASES else [])


def _find_file(subject_dir: Path, dirs: Sequence[str], stem: str, suffix: str, what: str) -> Path:
    tried = []
    for d in dirs:
        for name in _candidates(stem):
            path = subject_dir / d / f"{name}{suffix}"
            if path.is_file():
                return path
            tried.append(path)
    also = f" (also tried {', '.join(str(p) for p in tried[1:])})" if len(tried) > 1 else ""
    raise PrepareError(f"missing {what} file {tried[0]}{also}")


def _pose_file(subject_dir: Path, kind: str, stem: str) -> Path:
    return _find_file(subject_dir, _POSE_DIRS[kind], stem, ".cdf", f"{kind} CDF")


def _video_file(subject_dir: Path, stem: str) -> Path:
    return _find_file(subject_dir, ("Videos",), stem, ".mp4", "video")


# ------------------------------------------------------------------------------------ frame extraction
@dataclass(frozen=True)
class _VideoTask:
    take: Take
    video: str
    cdf: str
    cdf_frames: int
    out_dir: str
    needed: tuple[int, ...]  # 1-based frames to write
    jpeg_quality: int


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per video already uses the cores


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise PrepareError(f"{path}: OpenCV could not encode the frame as JPEG")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)  # a killed run never leaves a truncated frame that a resume would skip


def _short_video(task: _VideoTask, frames: int) -> PrepareError:
    return PrepareError(f"{task.video}: the video has {frames} frames but {task.cdf} labels {task.cdf_frames}; "
                        "the video is truncated or damaged (download it again)")


def _extract_frames(task: _VideoTask) -> dict[str, Any]:
    """Decode one video and write the needed frames; returns its frame count and size."""
    cap = cv2.VideoCapture(task.video)
    if not cap.isOpened():
        raise PrepareError(f"{task.video}: OpenCV cannot open the video (damaged file or missing codec)")
    header = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    if 0 < header < task.cdf_frames:
        raise _short_video(task, header)
    written = 0
    if task.needed:
        out = Path(task.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        wanted = set(task.needed)
        for frame in range(1, max(wanted) + 1):
            if not cap.grab():  # grab without retrieve skips the colour conversion of unwanted frames
                raise _short_video(task, frame - 1)
            if frame in wanted:
                ok, image = cap.retrieve()
                if not ok:
                    raise PrepareError(f"{task.video}: frame {frame} could not be decoded")
                _write_jpeg(out / Path(task.take.image(frame)).name, image, task.jpeg_quality)
                written += 1
    cap.release()
    return {"take": task.take, "video_frames": header, "size": size, "written": written}


def _run_tasks(tasks: list[_VideoTask], workers: int, progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    results = []
    with tqdm(total=sum(len(t.needed) for t in tasks), unit="frame", desc="Human3.6M frames", disable=not progress) as bar:
        if workers <= 1:
            _init_worker()
            for task in tasks:
                results.append(_extract_frames(task))
                bar.update(results[-1]["written"])
            return results
        # Workers come from a fork server (mvpose.parallel: forking a process that ran torch/OpenCV
        # threads can hang). An executor (unlike multiprocessing.Pool) fails with BrokenProcessPool
        # when a worker dies instead of waiting forever.
        from mvpose.parallel import worker_context

        ctx = worker_context(preload=[__name__])
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = [pool.submit(_extract_frames, task) for task in tasks]
            try:
                for future in as_completed(futures):
                    results.append(future.result())
                    bar.update(results[-1]["written"])
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    return results


# ------------------------------------------------------------------------------------ annotations
def _records(take: Take, frames: np.ndarray, universal: np.ndarray, mono: np.ndarray, pose2d: np.ndarray,
             camera: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """H36M-Toolbox records of ``take`` for 0-based ``frames``; poses are ``(N, 17, d)`` already.

    ``universal`` is ``D3_Positions_mono_universal`` (camera frame), written as ``joints_3d`` as the
    toolbox does; ``mono`` is ``D3_Positions_mono``, written as ``joints_3d_camera``.
    """
    boxes = infer_boxes(mono[:, 0].astype(np.float64), *(float(camera[k][0]) for k in ("fx", "fy", "cx", "cy")))
    out = []
    for i, f in enumerate(frames.tolist()):
        box = boxes[i]
        out.append({
            "image": take.image(f + 1),
            "joints_2d": pose2d[i],
            "joints_3d": universal[i],
            "joints_3d_camera": mono[i],
            "joints_vis": np.ones((17, 3)),
            "video_id": take.video_id,
            "image_id": f + 1,
            "subject": take.subject,
            "action": take.action,
            "subaction": take.subaction,
            "camera_id": take.camera,
            "source": "h36m",
            "camera": camera,  # shared by the take's records, as published (pickle stores it once)
            "center": 0.5 * (box[:2] + box[2:]),
            "scale": (box[2:] - box[:2]) / 200.0,
            "box": box,
        })
    return out


def _reprojection(take: Take, camera: dict[str, np.ndarray], world: np.ndarray, pose2d: np.ndarray,
                  mono: np.ndarray) -> dict[str, Any]:
    """Labels against the camera: 2D vs projected 3D (px) and camera-frame 3D vs ``R (X - C)`` (mm)."""
    import torch

    from mvpose.geometry import Cameras
    from mvpose.data.h36m import h36m_camera_params

    p = h36m_camera_params(camera, where=f"{take} camera", name=take.camera_name)
    cam = Cameras.from_params(p["K"], p["R"], p["t"], p["dist"], p["size"])
    points = torch.from_numpy(world.astype(np.float64))
    err = (cam.project(points) - torch.from_numpy(pose2d.astype(np.float64))).norm(dim=-1).numpy()  # (N, 17)
    cam_err = np.abs(cam.world_to_camera(points).numpy() - mono).max()
    worst = np.unravel_index(np.argmax(err), err.shape)
    return {"frame_mean": err.mean(axis=1), "max": float(err[worst]), "worst": (int(worst[0]), int(worst[1])),
            "camera_3d_max": float(cam_err)}


def _camera_dicts(calibration: Path, subjects: Sequence[int]) -> dict[int, list[dict[str, np.ndarray]]]:
    from mvpose.data.h36m import h36m_camera_dict
    from mvpose.geometry.calibration import CalibrationError, read_calibration

    try:
        rigs = read_calibration(calibration)
    except CalibrationError as err:
        raise PrepareError(str(err)) from err
    out = {}
    for s in subjects:
        rig = rigs.get(f"S{s}")
        if rig is None:
            raise PrepareError(f"{calibration}: no rig 'S{s}' (rigs: {sorted(rigs)})")
        by_name = {p["name"]: p for p in rig}
        missing = [c for c in CAMERA_IDS if c not in by_name]
        if missing:
            raise PrepareError(f"{calibration}: rig 'S{s}' lacks camera(s) {missing} (has {sorted(by_name)})")
        out[s] = [h36m_camera_dict(by_name[c]) for c in CAMERA_IDS]
    return out


def _write_pickle(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump(records, f, protocol=4)  # readable by any Python 3 the published code runs on
    os.replace(tmp, path)


def prepare_h36m(
    raw: str | Path,
    out: str | Path,
    subjects: Sequence[int] | None = None,
    actions: Sequence[int] | None = None,
    every: int = 1,
    workers: int | None = None,
    calibration: str | Path | None = None,
    progress: bool = True,
    jpeg_quality: int = 90,
) -> dict[str, Any]:
    """Write ``OUT/annot/h36m_{train,validation}.pkl`` and ``OUT/images/`` from the raw download.

    Args:
        raw: folder holding ``S1``, ``S5``, ... as the official archives extract.
        out: dataset root to write.
        subjects: subjects to prepare (default all seven); a split pickle is written only when the run
            includes one of its subjects, and holds exactly this run's subjects.
        actions: action ids 2..16 to prepare (default all).
        every: keep frames 1, 1 + every, ... (1 keeps all, as published).
        workers: processes decoding videos (default min(4, cores); 0 or 1 decodes in this process).
        calibration: camera file with rigs ``S1``..``S11`` (default: the shipped ``mvpose/calibration/h36m.json``,
            :func:`mvpose.resources.h36m_calibration_path`).
        progress: show a tqdm progress bar.

    Frames already on disk are not decoded again; the pickles are replaced atomically at the end.

    Returns:
        The report (see :func:`format_report`).
    """
    raw, out = Path(raw), Path(out)
    subjects = list(subjects or SUBJECTS)
    actions = list(actions or ACTION_NAMES)
    bad = [a for a in actions if a not in ACTION_NAMES]
    if bad:
        raise PrepareError(f"unknown action id(s) {bad}; Human3.6M action ids are 2..16 ({ACTION_NAMES})")
    parse_subjects(subjects)
    if every < 1:
        raise PrepareError(f"every must be >= 1, got {every}")
    if not raw.is_dir():
        raise PrepareError(f"{raw}: raw Human3.6M folder not found")
    workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
    calibration = Path(calibration) if calibration is not None else h36m_calibration_path()
    cameras = _camera_dicts(calibration, subjects)
    subject_dirs = {s: _subject_dir(raw, s) for s in subjects}
    idx17 = list(H36M_32_TO_17)

    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in _SPLITS}
    tasks: list[_VideoTask] = []
    skipped: list[str] = []
    warnings: list[str] = []
    checks: dict[Take, dict[str, Any]] = {}
    no_universal: list[str] = []
    present = 0
    for s in subjects:
        sdir = subject_dirs[s]
        for a in actions:
            for sa in (1, 2):
                stem = raw_take_name(s, a, sa)
                world_file = _pose_file(sdir, "D3_Positions", stem)
                world_all = read_cdf_pose(world_file, 3)
                for c in range(len(CAMERA_IDS)):
                    take = Take(s, a, sa, c)
                    if (s, a, sa, take.camera_name) in KNOWN_MISSING:
                        skipped.append(f"{take}: {KNOWN_MISSING[(s, a, sa, take.camera_name)]}")
                        log.info("skipping %s", skipped[-1])
                        continue
                    mono_file = _pose_file(sdir, "D3_Positions_mono", f"{stem}.{take.camera_name}")
                    d2_file = _pose_file(sdir, "D2_Positions", f"{stem}.{take.camera_name}")
                    video = _video_file(sdir, f"{stem}.{take.camera_name}")
                    mono_all, d2_all = read_cdf_pose(mono_file, 3), read_cdf_pose(d2_file, 2)
                    counts = {world_file: len(world_all), mono_file: len(mono_all), d2_file: len(d2_all)}
                    try:
                        universal_file = _pose_file(sdir, "D3_Positions_mono_universal", f"{stem}.{take.camera_name}")
                        universal_all = read_cdf_pose(universal_file, 3)
                        counts[universal_file] = len(universal_all)
                    except PrepareError as err:
                        if not str(err).startswith("missing "):
                            raise
                        no_universal.append(str(err))
                        universal_all = mono_all
                    n = min(counts.values())
                    if len(set(counts.values())) > 1:
                        warnings.append(f"{take}: frame counts differ between CDF files "
                                        f"({', '.join(f'{p.name}: {k}' for p, k in counts.items())}); using the first {n}")
                    frames = np.arange(0, n, every)
                    world = world_all[frames][:, idx17]
                    mono = mono_all[frames][:, idx17]
                    pose2d = d2_all[frames][:, idx17]
                    camera = cameras[s][c]
                    split = "train" if s in TRAIN_SUBJECTS else "validation"
                    universal = universal_all[frames][:, idx17]
                    splits[split].extend(_records(take, frames, universal, mono, pose2d, camera))
                    checks[take] = _reprojection(take, camera, world, pose2d, mono)
                    checks[take]["cdf_frames"] = n

                    folder = out / "images" / take.folder
                    existing = set(os.listdir(folder)) if folder.is_dir() else set()
                    needed = tuple(f + 1 for f in frames.tolist() if Path(take.image(f + 1)).name not in existing)
                    present += len(frames) - len(needed)
                    tasks.append(_VideoTask(take, str(video), str(d2_file), n, str(folder), needed, int(jpeg_quality)))

    if no_universal:
        warnings.append(
            f"{len(no_universal)} take(s) lack their D3_Positions_mono_universal file ({no_universal[0]}): their "
            "joints_3d holds D3_Positions_mono (real pose, camera frame) instead of the universal-skeleton pose; "
            "mvpose reads the world pose from joints_3d_camera, so training and evaluation are unaffected"
        )
    log.info("%d videos, %d frames to write, %d already present", len(tasks), sum(len(t.needed) for t in tasks), present)
    results = _run_tasks(tasks, workers, progress)

    annot = out / "annot"
    annot.mkdir(parents=True, exist_ok=True)
    written_files = []
    for split, records in splits.items():
        path = annot / _SPLITS[split]
        if not records:
            if path.exists():
                warnings.append(f"{path} left as it was: this run has no {split} subject")
            continue
        _write_pickle(path, records)
        written_files.append(str(path))
    report = _report(out, subjects, actions, every, splits, results, checks, skipped, warnings, present, written_files)
    report["joints_3d_fallback"] = len(no_universal)
    return report


def _report(out, subjects, actions, every, splits, results, checks, skipped, warnings, present, files) -> dict[str, Any]:
    from mvpose.data.h36m import H36M_IMAGE_SIZES
    from mvpose.skeletons import get_skeleton

    joints = get_skeleton("h36m").joints
    video_rows, odd_sizes = [], []
    for res in sorted(results, key=lambda r: r["take"].video_id):
        take = res["take"]
        video_rows.append({"take": take.folder, "cdf_frames": checks[take]["cdf_frames"], "video_frames": res["video_frames"],
                           "size": list(res["size"])})
        expected = tuple(H36M_IMAGE_SIZES[take.camera_name])
        if tuple(res["size"]) != expected:
            odd_sizes.append(f"{take.folder} is {res['size'][0]}x{res['size'][1]}, expected {expected[0]}x{expected[1]}")
    if odd_sizes:
        warnings.append(f"{len(odd_sizes)} video(s) differ in size from the real cameras, e.g. {odd_sizes[0]}")
    frame_means = np.concatenate([c["frame_mean"] for c in checks.values()]) if checks else np.zeros(0)
    worst_take = max(checks, key=lambda t: checks[t]["max"]) if checks else None
    reproj: dict[str, Any] = {"median_px": float(np.median(frame_means)) if frame_means.size else float("nan"),
                              "max_px": checks[worst_take]["max"] if worst_take else float("nan")}
    if worst_take is not None:
        frame, joint = checks[worst_take]["worst"]
        reproj["worst"] = {"image": worst_take.image(frame * every + 1), "joint": joints[joint]}
    longer = [r["video_frames"] - r["cdf_frames"] for r in video_rows if r["video_frames"] > r["cdf_frames"]]
    return {
        "out": str(out),
        "subjects": list(subjects),
        "actions": list(actions),
        "every": every,
        "videos": len(results),
        "skipped": skipped,
        "records": {k: len(v) for k, v in splits.items()},
        "files": files,
        "frames_written": int(sum(r["written"] for r in results)),
        "frames_present": int(present),
        "frame_counts": {"equal": sum(r["video_frames"] == r["cdf_frames"] for r in video_rows),
                         "video_longer": len(longer), "max_extra": max(longer, default=0), "videos": video_rows},
        "reprojection": reproj,
        "camera_3d_max_mm": max((c["camera_3d_max"] for c in checks.values()), default=float("nan")),
        "warnings": warnings,
    }


def format_report(report: Mapping[str, Any], max_warnings: int = 5) -> str:
    """A few lines for the terminal."""
    r = report
    fc, rp = r["frame_counts"], r["reprojection"]
    lines = [
        f"Human3.6M written to {r['out']}",
        f"  subjects {' '.join(f'S{s}' for s in r['subjects'])}; actions "
        + ("all 15" if len(r["actions"]) == len(ACTION_NAMES) else " ".join(str(a) for a in r["actions"]))
        + f"; every {r['every']} frame(s)",
        f"  records: train {r['records']['train']}, validation {r['records']['validation']}",
        f"  frames: {r['frames_written']} written, {r['frames_present']} already present; {r['videos']} videos",
        f"  frame counts: CDF == video for {fc['equal']}, video longer for {fc['video_longer']} (at most +{fc['max_extra']})",
        f"  2D labels vs projected 3D labels: median {rp['median_px']:.3f} px, max {rp['max_px']:.3f} px"
        + (f" ({rp['worst']['image']}, {rp['worst']['joint']})" if "worst" in rp else ""),
        f"  camera-frame 3D labels vs R (X - C): max {r['camera_3d_max_mm']:.3f} mm",
        "  joints_3d: D3_Positions_mono_universal (universal skeleton, camera frame; world = R^T joints_3d_camera + T)"
        + (f"; D3_Positions_mono for {r['joints_3d_fallback']} take(s) lacking it" if r.get("joints_3d_fallback") else ""),
    ]
    lines += [f"  skipped {s}" for s in r["skipped"]]
    warnings = r["warnings"]
    lines += [f"  warning: {w}" for w in warnings[:max_warnings]]
    if len(warnings) > max_warnings:
        lines.append(f"  ... and {len(warnings) - max_warnings} more warnings")
    return "\n".join(lines)
