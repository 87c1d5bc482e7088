"""`mvpose triangulate`: recorded multi-camera 2D keypoints -> 3D joints, diagnostics and pictures.

Steps (:func:`run_capture`):

1. read the calibration (any format of :mod:`mvpose.geometry.calibration`) and one keypoint source per camera
   (:mod:`mvpose.capture.keypoints`), matched by camera name; or run a model on one video / image folder per
   camera (:mod:`mvpose.capture.detect`), which gives the same detections. Both are keypoint sources
   (:class:`~mvpose.capture.types.KeypointSource`): this module imports neither the detector nor the model;
2. synchronise by frame index: capture frame ``i`` uses frame ``i + offset[cam]`` of each camera;
3. pick one person per frame and view (:func:`mvpose.capture.people.select_person`);
4. triangulate every frame with :func:`mvpose.geometry.triangulation.triangulate_robust` (or plain DLT),
   batched over chunks of frames: confidences as weights, a minimum confidence, at least ``min_views`` views
   per joint, views excluded on reprojection error, optional Levenberg-Marquardt refinement;
5. optionally fill short gaps and low-pass the trajectories (:mod:`mvpose.capture.temporal`);
6. write ``poses3d.h5``, ``poses3d.trc``, ``summary.json`` and ``report.txt`` (atomically), and pictures on
   request (:mod:`mvpose.capture.render`).

Bad input degrades instead of stopping when something can still be computed: a calibrated camera without
keypoints or with no readable file, a camera with fewer frames or with no detection at all, unreadable files,
placeholder people, keypoints outside the calibrated image size all become issues. After triangulation the
result is checked (:mod:`mvpose.capture.checks`): joints short of ``min_views`` views, a skeleton whose size
points to another calibration unit, bones that fit another joint order. Every issue, and every warning
logged while the capture runs, goes into one :class:`~mvpose.capture.issues.IssueLog`: printed, in
``report.txt`` and in ``summary.json`` (``issues`` with kind and count, ``issue_counts``). Nothing at all
triangulated is an error naming the cause.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from mvpose.capture.checks import check_person, check_quality, check_unresolved
from mvpose.capture.issues import CaptureError, IssueLog
from mvpose.capture.keypoints import (
    BAD_VALUES,
    PLACEHOLDERS,
    CameraKeypoints,
    KeypointError,
    default_workers,
    find_camera_sources,
    read_camera_keypoints,
    resolve_joint_set,
)
from mvpose.capture.people import select_person
from mvpose.capture.stages import (
    check_image_bounds,
    check_offsets,
    frame_rate,
    h5_contents,
    match_cameras,
    parse_offsets,
    run_job,
    synchronise,
    timed,
    triangulate_frames,
)
from mvpose.capture.temporal import smooth
from mvpose.capture.types import MODES, Capture, CaptureOptions, CaptureResult, KeypointSource
from mvpose.geometry.calibration import calibration_units, load_calibration
from mvpose.geometry.camera import Cameras
from mvpose.geometry.triangulation import reprojection_error
from mvpose.skeletons import get_skeleton

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureOptions",
    "CaptureResult",
    "KeypointFiles",
    "KeypointSource",
    "MODES",
    "check_image_bounds",
    "load_capture",
    "match_cameras",
    "parse_offsets",
    "process_capture",
    "run_capture",
    "synchronise",
    "triangulate_frames",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------- loading
def load_capture(
    calibration: str | Path,
    keypoints_dir: str | Path,
    *,
    joints: str | None = None,
    offsets: dict[str, int] | None = None,
    rig: str | None = None,
    workers: int | None = 0,
    progress: bool = True,
    units: str | None = None,
    issues: IssueLog | None = None,
) -> Capture:
    """Read and synchronise a capture: calibration + one keypoint source per camera (see :func:`run_capture`).

    A camera none of whose files can be used is dropped with an issue while two cameras remain.

    Args:
        units: unit of the calibration's translations where its format does not fix it (None: the file's).
        issues: the log to add to (a new one by default); warnings logged meanwhile are added to it.

    Raises:
        CaptureError: fewer than two usable cameras, disagreeing joint counts, no keypoint anywhere.
    """
    issues = IssueLog() if issues is None else issues
    with issues.capture_logging():
        return _load_capture(calibration, keypoints_dir, joints, offsets, rig, workers, progress, units, issues)


@dataclass
class KeypointFiles:
    """Keypoints read from files (a :class:`~mvpose.capture.types.KeypointSource`): ``folder`` holds one entry
    per camera, an OpenPose JSON folder or a COCO results ``.json`` (:func:`load_capture`)."""

    folder: str | Path | None
    stage: ClassVar[str] = "read"

    def load(self, calibration: str | Path, options: CaptureOptions, *, rig: str | None = None,
             videos: str | Path | None = None, images: str | Path | None = None,
             timings: dict[str, float] | None = None, issues: IssueLog | None = None) -> Capture:
        return load_capture(calibration, self.folder, joints=options.joints, offsets=options.offsets, rig=rig,
                            workers=options.workers, progress=options.progress, units=options.calibration_units,
                            issues=issues)

    def write(self, capture: Capture, out_dir: str | Path) -> dict[str, Path]:
        return {}  # nothing beyond the pipeline's outputs


def _placeholder_issue(cam: CameraKeypoints, issues: IssueLog) -> None:
    people = {k: n for k, n in cam.skipped.items() if k in PLACEHOLDERS}
    bad = {k: cam.skipped[k] for k in BAD_VALUES if cam.skipped.get(k)}
    if people:
        what = "; ".join(f"{n} {PLACEHOLDERS[k]}" for k, n in people.items())
        issues.add(f"camera {cam.name}: skipped placeholder people ({what}); the other people of those frames "
                   "are used", "placeholders", sum(people.values()))
    if bad:
        what = "; ".join(f"{n} {BAD_VALUES[k]}" for k, n in bad.items())
        issues.add(f"camera {cam.name}: keypoints with values no detector writes were left out ({what})", "input",
                   sum(bad.values()))


def _load_capture(calibration, keypoints_dir, joints, offsets, rig, workers, progress, units, issues) -> Capture:
    rig_cams = load_calibration(calibration, rig=rig, units=units)
    sources = find_camera_sources(keypoints_dir)
    names = match_cameras(rig_cams.names, list(sources), f"keypoints {keypoints_dir}", issues)
    offsets = dict(offsets or {})
    check_offsets(offsets, names)
    workers = default_workers(workers)
    cams = []
    with contextlib.ExitStack() as stack:
        # One pool for every camera: starting processes costs more than parsing a few hundred files.
        pool = stack.enter_context(ProcessPoolExecutor(workers)) if workers > 1 else None
        unusable = {}
        for name in names:
            try:
                cam = read_camera_keypoints(sources[name], name, progress=progress, pool=pool)
            except KeypointError as err:
                unusable[name] = str(err)
                continue
            for line in cam.issues[:20]:
                issues.add(line, "unreadable")
            if len(cam.issues) > 20:
                issues.add(f"camera {name}: {len(cam.issues) - 20} more unreadable files or records", "unreadable",
                           len(cam.issues) - 20)
            _placeholder_issue(cam, issues)
            cams.append(cam)
    if unusable:
        reasons = "; ".join(f"camera {n}: {e}" for n, e in unusable.items())
        if len(cams) < 2:
            raise CaptureError(f"{len(cams)} camera(s) with usable keypoints, at least 2 are needed; {reasons}")
        for n, e in unusable.items():
            issues.add(f"camera {n}: no usable keypoints, camera dropped ({e})", "cameras")
        names = [c.name for c in cams]
    counts = {c.name: c.num_joints for c in cams if (c.people[..., 2] > 0).any()}
    if not counts:
        raise CaptureError(f"keypoints {keypoints_dir}: no camera has a single detected keypoint")
    if len(set(counts.values())) > 1:
        raise CaptureError(f"cameras disagree on the keypoints per person: {counts}")
    J = next(iter(counts.values()))
    for c in cams:  # a camera with nothing detected may have no joint count of its own
        if c.num_joints != J:
            c.people = np.full((*c.people.shape[:2], J, 3), np.nan)
            c.people[..., 2] = 0.0
    joint_set = resolve_joint_set(J, joints, f"keypoints {keypoints_dir}")
    frame_index, people = synchronise(cams, offsets, issues)
    cameras = rig_cams[names]
    check_image_bounds(people, cameras, names, issues)
    capture = Capture(cameras, names, frame_index, people, joint_set, issues, {n: str(sources[n]) for n in names})
    capture.units = calibration_units(calibration, units=units)
    return capture


# --------------------------------------------------------------------------------------------- processing
def _reprojection_errors(points3d: np.ndarray, keypoints: np.ndarray, cameras: Cameras, chunk: int) -> np.ndarray:
    X = torch.from_numpy(points3d)
    p = torch.from_numpy(keypoints[..., :2])
    return torch.cat([reprojection_error(X[s:s + chunk], p[s:s + chunk], cameras) for s in range(0, len(X), chunk)]).numpy()


def process_capture(capture: Capture, options: CaptureOptions, fps: float | None = None) -> CaptureResult:
    """Person selection, triangulation, checks and temporal processing of a loaded capture (no files written).

    Raises:
        CaptureError: bad options, or nothing at all could be triangulated (the message names the cause).
    """
    with capture.issues.capture_logging():
        return _process_capture(capture, options, fps)


def _process_capture(capture: Capture, options: CaptureOptions, fps: float | None) -> CaptureResult:
    options.check()
    timings: dict[str, float] = {}
    fps = frame_rate(options, fps)
    cameras = capture.cameras.to(dtype=torch.float64)
    with timed(timings, "select"):
        people = torch.from_numpy(capture.people)
        keypoints, person = select_person(people, cameras, min_confidence=options.min_confidence,
                                          threshold_px=options.person_threshold_px)
    stats: dict[str, Any] = {}
    with timed(timings, "triangulate"):
        X, used = triangulate_frames(keypoints, cameras, options, stats)
    with timed(timings, "check"):  # views and skeleton checks into capture.issues / capture.checks
        capture.checks.update(check_person(capture, keypoints.numpy(), X.numpy(), options,
                                           (capture.people[..., 2] > 0).any(axis=2), capture.issues))
        capture.checks["unresolved_points"] = check_unresolved(stats["unresolved"].numpy(), X.numpy(),
                                                               get_skeleton(capture.joint_set).joints, options, capture.issues)
    with timed(timings, "temporal"):
        raw = X.numpy()
        points, filled = smooth(raw, options, fps)
        kp = keypoints.numpy()
        err = _reprojection_errors(points, kp, cameras, options.chunk_frames)
    return CaptureResult(capture, points, raw, kp, person.numpy(), err, used.numpy(), filled, fps, options, timings)


# --------------------------------------------------------------------------------------------- outputs
def write_outputs(result: CaptureResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``poses3d.h5``, ``poses3d.trc``, ``summary.json`` and ``report.txt`` into ``out_dir``."""
    from mvpose.capture.io import write_h5, write_json, write_text, write_trc
    from mvpose.capture.report import build_summary, format_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cap = result.capture
    skeleton = get_skeleton(cap.joint_set)
    fps, arrays, attrs = h5_contents(result, options=asdict(result.options))
    with timed(result.timings, "write"):
        paths = {"h5": write_h5(out / "poses3d.h5", arrays, attrs)}
        paths["trc"] = write_trc(out / "poses3d.trc", result.points3d, skeleton.joints, fps, cap.frame_index)
    result.summary = build_summary(result)
    check_quality(result.summary, result.person, (cap.people[..., 2] > 0).any(axis=(2, 3)),
                  result.options.threshold_px, cap.issues)
    result.summary.update(issues=cap.issues.as_dicts(), issue_counts=cap.issues.counts())
    paths["summary"] = write_json(out / "summary.json", result.summary)
    paths["report"] = write_text(out / "report.txt", format_report(result.summary))
    result.paths.update(paths)
    return paths


def run_capture(
    calibration: str | Path,
    keypoints_dir: str | Path | None,
    out_dir: str | Path,
    options: CaptureOptions | None = None,
    *,
    detect: KeypointSource | None = None,
    rig: str | None = None,
    videos: str | Path | None = None,
    images: str | Path | None = None,
    render: bool = False,
    plot_frames: Sequence[int] | None = None,
    render_every: int = 1,
) -> CaptureResult:
    """The whole `mvpose triangulate` job: read (or detect), triangulate, filter, write, render.

    Args:
        calibration: calibration file (any readable format); its camera names name the keypoint sources.
        keypoints_dir: folder with one entry per camera: an OpenPose JSON folder or a COCO results ``.json``;
            None with ``detect``.
        detect: another keypoint source instead of ``keypoints_dir`` (:class:`~mvpose.capture.types.KeypointSource`),
            e.g. :class:`mvpose.capture.detect.DetectOptions`: a model run on ``videos`` / ``images``, which also
            writes ``detection.json`` and ``boxes/<camera>.csv``.
        out_dir: output folder (``poses3d.h5``, ``poses3d.trc``, ``summary.json``, ``report.txt``).
        options: processing options.
        rig: rig of a multi-rig calibration file.
        videos, images: folders with one video file / image folder per camera, for ``detect`` and ``render``
            (videos also give the frame rate).
        render: write overlays per camera and a 3D skeleton plot into ``out_dir/render``.
        plot_frames: capture frame numbers for the 3D plot (default: four spread over the sequence).
        render_every: overlays draw every ``render_every``-th frame.

    Returns:
        The :class:`CaptureResult`, with ``summary``, ``timings`` and ``paths`` filled.
    """
    options = options or CaptureOptions()
    options.check()
    source: KeypointSource = detect if detect is not None else KeypointFiles(keypoints_dir)
    render_fn = None
    if render:
        from mvpose.capture.render import render_capture as render_fn
    return run_job(source, calibration, out_dir, options, lambda capture, fps: process_capture(capture, options, fps),
                   write_outputs, render_fn, rig=rig, videos=videos, images=images, plot_frames=plot_frames,
                   render_every=render_every)
