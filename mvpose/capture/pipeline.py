"""`mvpose triangulate`: recorded multi-camera 2D keypoints -> 3D joints, diagnostics and pictures.

Steps (:func:`run_capture`):

1. read the calibration (any format of :mod:`mvpose.geometry.calibration`) and one keypoint source per camera
   (:mod:`mvpose.capture.keypoints`), matched by camera name; or run a model on one video / image folder per
   camera (:mod:`mvpose.capture.detect`), which gives the same detections;
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
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mvpose.capture.issues import CaptureError, IssueLog
from mvpose.capture.keypoints import (
    PLACEHOLDERS,
    CameraKeypoints,
    KeypointError,
    default_workers,
    find_camera_sources,
    read_camera_keypoints,
    resolve_joint_set,
)
from mvpose.capture.people import select_person
from mvpose.capture.temporal import fill_gaps, lowpass
from mvpose.capture.types import MODES, Capture, CaptureOptions, CaptureResult
from mvpose.geometry.calibration import calibration_units, load_calibration
from mvpose.geometry.camera import Cameras
from mvpose.geometry.triangulation import refine_points, reprojection_error, triangulate, triangulate_robust
from mvpose.skeletons import get_skeleton

if TYPE_CHECKING:
    from mvpose.capture.detect import DetectOptions

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureOptions",
    "CaptureResult",
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

# Share of a camera's keypoints outside its calibrated image above which the calibration is suspect.
OUTSIDE_WARN_FRACTION = 0.02

def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    try:
        import resource
    except ImportError:  # not on Windows: this process only
        return time.process_time()
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Record a block's wall time as ``<stage>_s`` and its CPU time as ``<stage>_cpu_s``."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    try:
        yield
    finally:
        timings[f"{stage}_s"] = time.perf_counter() - wall
        timings[f"{stage}_cpu_s"] = _cpu_seconds() - cpu


# --------------------------------------------------------------------------------------------- loading
def parse_offsets(text: str | None) -> dict[str, int]:
    """``"cam1=3,cam2=-1"`` -> ``{"cam1": 3, "cam2": -1}``."""
    out: dict[str, int] = {}
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = int(value)
        except ValueError:
            raise CaptureError(f"offsets: expected CAMERA=INTEGER items separated by commas, got {part!r}") from None
    return out


def match_cameras(
    calibrated: Sequence[str], found: Sequence[str], where: str, issues: IssueLog, what: str = "keypoints"
) -> list[str]:
    """Cameras present on both sides, in calibration order.

    A source named like no calibrated camera is an error (a typo would otherwise drop data silently); a
    calibrated camera without a source is a warning, as long as two cameras remain.
    """
    unknown = [n for n in found if n not in calibrated]
    both = [n for n in calibrated if n in found]
    sides = f"calibration cameras: {', '.join(calibrated)}; {where}: {', '.join(found) or '(nothing)'}"
    if unknown:
        raise CaptureError(f"{where}: {', '.join(unknown)} not in the calibration (names must match exactly); {sides}")
    if len(both) < 2:
        raise CaptureError(f"{where}: {len(both)} camera(s) match the calibration, at least 2 are needed; {sides}")
    missing = [n for n in calibrated if n not in found]
    if missing:
        issues.add(f"{where}: no {what} for calibrated camera(s) {', '.join(missing)}; using {', '.join(both)}",
                   "cameras", len(missing))
    return both


def synchronise(
    cams: Sequence[CameraKeypoints], offsets: dict[str, int], issues: IssueLog
) -> tuple[np.ndarray, np.ndarray]:
    """Put every camera on one frame axis: capture frame ``i`` holds camera frame ``i + offsets[cam]``.

    Returns:
        frame_index: (T,) every capture frame from the first to the last seen by any camera.
        people: (T, V, P, J, 3), missing where a camera has no such frame.
    """
    shifted = [c.frames - offsets.get(c.name, 0) for c in cams]
    start = min(int(s.min()) for s in shifted)
    stop = max(int(s.max()) for s in shifted) + 1
    T, V = stop - start, len(cams)
    P = max(c.people.shape[1] for c in cams)
    J = cams[0].num_joints
    people = np.full((T, V, P, J, 3), np.nan)
    people[..., 2] = 0.0
    for v, (c, s) in enumerate(zip(cams, shifted)):
        people[s - start, v, : c.people.shape[1]] = c.people
        if len(s) < T:
            issues.add(f"camera {c.name}: keypoints for {len(s)} of {T} frames; the other frames use the remaining views",
                       "frames", T - len(s))
        if not (c.people[..., 2] > 0).any():
            issues.add(f"camera {c.name}: no keypoint in any frame ({c.source})", "cameras")
    return np.arange(start, stop), people


def check_image_bounds(people: np.ndarray, cameras: Cameras, names: Sequence[str], issues: IssueLog) -> None:
    """Warn when many keypoints fall outside a camera's calibrated image size (calibration of another size?).

    The message gives the span of the keypoints on both axes: keypoints beyond the far edges point to a
    calibration of a smaller size, negative ones to a detector that extrapolates joints beyond the border.
    """
    size = cameras.image_size.cpu().numpy()  # (V, 2)
    xy = people[..., :2]
    seen = (people[..., 2] > 0) & np.isfinite(xy).all(axis=-1)  # (T, V, P, J)
    margin = 0.02 * size[None, :, None, None, :]
    outside = ((xy < -margin) | (xy > size[None, :, None, None, :] + margin)).any(axis=-1) & seen
    n_seen, n_out = seen.sum(axis=(0, 2, 3)), outside.sum(axis=(0, 2, 3))
    for v, name in enumerate(names):
        if n_seen[v] and n_out[v] > OUTSIDE_WARN_FRACTION * n_seen[v]:
            pts = xy[:, v][seen[:, v]]
            issues.add(
                f"camera {name}: {100 * n_out[v] / n_seen[v]:.0f}% of keypoints fall outside the calibrated image "
                f"{size[v, 0]:.0f}x{size[v, 1]:.0f} (keypoints span x {pts[:, 0].min():.0f}..{pts[:, 0].max():.0f}, "
                f"y {pts[:, 1].min():.0f}..{pts[:, 1].max():.0f}); "
                "is the calibration for another resolution?", "calibration", int(n_out[v]),
            )


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


def _placeholder_issue(cam: CameraKeypoints, issues: IssueLog) -> None:
    if cam.skipped:
        what = "; ".join(f"{n} {PLACEHOLDERS[k]}" for k, n in cam.skipped.items())
        issues.add(f"camera {cam.name}: skipped placeholder people ({what}); the other people of those frames "
                   "are used", "placeholders", sum(cam.skipped.values()))


def _load_capture(calibration, keypoints_dir, joints, offsets, rig, workers, progress, units, issues) -> Capture:
    rig_cams = load_calibration(calibration, rig=rig, units=units)
    sources = find_camera_sources(keypoints_dir)
    names = match_cameras(rig_cams.names, list(sources), f"keypoints {keypoints_dir}", issues)
    offsets = dict(offsets or {})
    stray = [n for n in offsets if n not in names]
    if stray:
        raise CaptureError(f"offsets name camera(s) {', '.join(stray)} that are not used; cameras are {', '.join(names)}")
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
def triangulate_frames(
    keypoints: torch.Tensor, cameras: Cameras, options: CaptureOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame triangulation of a whole sequence, in chunks of frames.

    Args:
        keypoints: (T, V, J, 3) ``(x, y, confidence)``; missing joints NaN / 0.
        cameras: rig ``(V,)``.
        options: mode, threshold, minimum confidence and views, refinement, chunk size.

    Returns:
        points3d: (T, J, 3) world mm, NaN where fewer than ``min_views`` views were usable.
        used: (T, V, J) bool, the views kept.
    """
    T = keypoints.shape[0]
    xy, conf = keypoints[..., :2], keypoints[..., 2]
    weights = torch.where((conf >= options.min_confidence) & xy.isfinite().all(dim=-1), conf, torch.zeros_like(conf))
    out_X, out_used = [], []
    gen = torch.Generator().manual_seed(0)
    bar = tqdm(total=T, desc="triangulate", unit="frame", disable=not options.progress, leave=False)
    for s in range(0, T, options.chunk_frames):
        p, w = xy[s:s + options.chunk_frames], weights[s:s + options.chunk_frames]
        if options.mode == "dlt":
            tri = triangulate(p, cameras, w, min_views=options.min_views)
            X = tri.points3d
            if options.refine:
                X = refine_points(X, p, cameras, w, tri.used)
        else:
            tri = triangulate_robust(p, cameras, w, threshold_px=options.threshold_px, min_views=options.min_views,
                                     mode=options.mode, refine=options.refine, generator=gen)
            X = tri.points3d
        out_X.append(X)
        out_used.append(tri.used)
        bar.update(p.shape[0])
    bar.close()
    return torch.cat(out_X), torch.cat(out_used)


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


def _check_result(capture: Capture, keypoints: torch.Tensor, X: torch.Tensor, options: CaptureOptions) -> None:
    """Views and skeleton checks (:mod:`mvpose.capture.checks`) into ``capture.issues`` / ``capture.checks``."""
    from mvpose.capture.checks import check_skeleton, check_views

    kp = keypoints.numpy()
    usable = (kp[..., 2] >= options.min_confidence) & np.isfinite(kp[..., :2]).all(axis=-1)
    detected = (capture.people[..., 2] > 0).any(axis=2)
    joints = get_skeleton(capture.joint_set).joints
    points = X.numpy()
    capture.checks["views"] = check_views(usable, points, capture.names, joints, options.min_views,
                                          options.min_confidence, detected, kp[..., 2] > 0, capture.issues,
                                          capture.frame_index)
    capture.checks["skeleton"] = check_skeleton(points, capture.joint_set, capture.issues, units=capture.units)


def _process_capture(capture: Capture, options: CaptureOptions, fps: float | None) -> CaptureResult:
    options.check()
    timings: dict[str, float] = {}
    fps = options.fps or fps
    if options.cutoff_hz is not None and fps is None:
        raise CaptureError("the low-pass filter needs the frame rate: pass fps (--fps), or videos to read it from")
    cameras = capture.cameras.to(dtype=torch.float64)
    with _timed(timings, "select"):
        people = torch.from_numpy(capture.people)
        keypoints, person = select_person(people, cameras, min_confidence=options.min_confidence,
                                          threshold_px=options.person_threshold_px)
    with _timed(timings, "triangulate"):
        X, used = triangulate_frames(keypoints, cameras, options)
    with _timed(timings, "check"):
        _check_result(capture, keypoints, X, options)
    with _timed(timings, "temporal"):
        raw = X.numpy()
        points, filled = fill_gaps(raw, options.max_gap)
        if options.cutoff_hz is not None:
            points = lowpass(points, fps, options.cutoff_hz, options.filter_order)
        kp = keypoints.numpy()
        err = _reprojection_errors(points, kp, cameras, options.chunk_frames)
    return CaptureResult(capture, points, raw, kp, person.numpy(), err, used.numpy(), filled, fps, options, timings)


# --------------------------------------------------------------------------------------------- outputs
def _video_fps(videos: str | Path | None, names: Sequence[str]) -> float | None:
    if videos is None:
        return None
    import cv2

    from mvpose.geometry.board_calibration import VIDEO_SUFFIXES

    sources = find_camera_sources(videos, VIDEO_SUFFIXES)
    for name in names:
        if name in sources and sources[name].is_file():
            cap = cv2.VideoCapture(str(sources[name]))
            fps = cap.get(cv2.CAP_PROP_FPS)
            cap.release()
            if fps and fps > 0:
                return float(fps)
    return None


def write_outputs(result: CaptureResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``poses3d.h5``, ``poses3d.trc``, ``summary.json`` and ``report.txt`` into ``out_dir``."""
    from mvpose.capture.checks import check_quality
    from mvpose.capture.io import write_h5, write_json, write_text, write_trc
    from mvpose.capture.report import build_summary, format_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cap = result.capture
    skeleton = get_skeleton(cap.joint_set)
    fps = result.fps
    if fps is None:
        fps = 30.0
        cap.issues.add("frame rate unknown (no --fps, no videos): the TRC time column assumes 30 fps", "options")
    opts = asdict(result.options)
    # Issues known before writing (all but the quality checks), so a wrong unit is flagged in the h5 file too.
    attrs = {"joint_set": cap.joint_set, "joints": list(skeleton.joints), "cameras": list(cap.names), "units": "mm",
             "fps": fps, "options": opts, "issues": {"counts": cap.issues.counts(), "list": cap.issues.as_dicts()}}
    arrays = {
        "poses3d": result.points3d, "points2d": result.keypoints[..., :2], "confidence": result.keypoints[..., 2],
        "reprojection_error": result.reprojection_error, "used": result.used, "filled": result.filled,
        "person": result.person, "frame_index": cap.frame_index,
    }
    with _timed(result.timings, "write"):
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
    detect: "DetectOptions | None" = None,
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
        detect: run a model on ``videos`` / ``images`` instead (:func:`mvpose.capture.detect.detect_capture`);
            also writes ``detection.json`` and ``boxes/<camera>.csv``.
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
    timings: dict[str, float] = {}
    issues = IssueLog()
    with _timed(timings, "total"), issues.capture_logging():
        if detect is not None:
            from mvpose.capture.detect import detect_capture

            with _timed(timings, "detect"):
                capture = detect_capture(calibration, detect, options, rig=rig, videos=videos, images=images,
                                         timings=timings, issues=issues)
        else:
            with _timed(timings, "read"):
                capture = load_capture(calibration, keypoints_dir, joints=options.joints, offsets=options.offsets,
                                       rig=rig, workers=options.workers, progress=options.progress,
                                       units=options.calibration_units, issues=issues)
        fps = _video_fps(videos, capture.names)
        result = process_capture(capture, options, fps)
        result.timings = {**timings, **result.timings}
        write_outputs(result, out_dir)
        if capture.detection is not None:
            from mvpose.capture.detect import write_detection

            result.paths.update(write_detection(capture.detection, out_dir))
        if render:
            from mvpose.capture.render import render_capture

            with _timed(result.timings, "render"):
                result.paths.update(render_capture(result, Path(out_dir) / "render", videos=videos, images=images,
                                                   plot_frames=plot_frames, every=render_every))
    result.timings.update(timings)
    return result
