"""The steps every keypoint source and the capture pipeline share: timing, matching sources to the
calibration's cameras, one frame axis, the image-bounds check, per-frame triangulation, the frame rate, the
``poses3d.h5`` contents and the job around them (:func:`run_job`).

Used by :mod:`mvpose.capture.pipeline`, :mod:`mvpose.capture.detect` and :mod:`mvpose.capture.multi`;
imports none of them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from mvpose.capture.issues import CaptureError, IssueLog
from mvpose.capture.keypoints import CameraKeypoints, find_camera_sources
from mvpose.capture.types import Capture, CaptureOptions, KeypointSource, check_cutoff
from mvpose.frames import VIDEO_SUFFIXES
from mvpose.geometry.camera import Cameras
from mvpose.geometry.triangulation import refine_points, triangulate, triangulate_robust, worst_used_error
from mvpose.skeletons import get_skeleton

__all__ = [
    "OUTSIDE_WARN_FRACTION", "check_image_bounds", "check_offsets", "cpu_seconds", "frame_axis", "frame_rate",
    "h5_contents", "match_cameras", "parse_offsets", "run_job", "synchronise", "timed", "triangulate_frames",
    "video_fps",
]

log = logging.getLogger(__name__)

# Share of a camera's keypoints outside its calibrated image above which the calibration is suspect.
OUTSIDE_WARN_FRACTION = 0.02

def cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    try:
        import resource
    except ImportError:  # not on Windows: this process only
        return time.process_time()
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Record a block's wall time as ``<stage>_s`` and its CPU time as ``<stage>_cpu_s``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    try:
        yield
    finally:
        timings[f"{stage}_s"] = time.perf_counter() - wall
        timings[f"{stage}_cpu_s"] = cpu_seconds() - cpu


# --------------------------------------------------------------------------------------------- one frame axis
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


def check_offsets(offsets: dict[str, int], names: Sequence[str]) -> None:
    """CaptureError when a frame offset names a camera that is not used (a typo would be ignored otherwise)."""
    stray = [n for n in offsets if n not in names]
    if stray:
        raise CaptureError(f"offsets name camera(s) {', '.join(stray)} that are not used; cameras are {', '.join(names)}")


def frame_axis(frames: Sequence[np.ndarray], offsets: Sequence[int]) -> np.ndarray:
    """(T,) capture frames from the first to the last ``camera frame - offset`` of any camera (cameras
    without frames count for nothing; none at all gives an empty axis)."""
    shifted = [np.asarray(f) - o for f, o in zip(frames, offsets) if len(f)]
    if not shifted:
        return np.zeros(0, np.int64)
    return np.arange(min(int(s.min()) for s in shifted), max(int(s.max()) for s in shifted) + 1)


def synchronise(
    cams: Sequence[CameraKeypoints], offsets: dict[str, int], issues: IssueLog
) -> tuple[np.ndarray, np.ndarray]:
    """Put every camera on one frame axis: capture frame ``i`` holds camera frame ``i + offsets[cam]``.

    Returns:
        frame_index: (T,) every capture frame from the first to the last seen by any camera.
        people: (T, V, P, J, 3), missing where a camera has no such frame.
    """
    shifted = [c.frames - offsets.get(c.name, 0) for c in cams]
    frame_index = frame_axis([c.frames for c in cams], [offsets.get(c.name, 0) for c in cams])
    if not len(frame_index):
        raise CaptureError(f"no camera has a keypoint frame ({', '.join(c.name for c in cams)})")
    start, T, V = int(frame_index[0]), len(frame_index), len(cams)
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
    return frame_index, people


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


# --------------------------------------------------------------------------------------------- triangulation
def triangulate_frames(
    keypoints: torch.Tensor, cameras: Cameras, options: CaptureOptions, stats: dict[str, Any] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame triangulation of a whole sequence, in chunks of frames.

    Args:
        keypoints: (T, V, J, 3) ``(x, y, confidence)``; missing joints NaN / 0.
        cameras: rig ``(V,)``.
        options: mode, threshold, minimum confidence and views, refinement, chunk size, ``reject_unresolved``.
        stats: if given, receives ``unresolved`` (T, J) bool (robust modes; all False for ``dlt``): points whose
            largest reprojection error over the views kept is above ``options.threshold_px`` (the robust mode
            ran out of views to drop), whether or not ``options.reject_unresolved`` then blanked them.

    Returns:
        points3d: (T, J, 3) world mm, NaN where fewer than ``min_views`` views were usable (and, with
        ``reject_unresolved``, where the point stayed unresolved).
        used: (T, V, J) bool, the views kept.
    """
    T = keypoints.shape[0]
    xy, conf = keypoints[..., :2], keypoints[..., 2]
    weights = torch.where((conf >= options.min_confidence) & xy.isfinite().all(dim=-1), conf, torch.zeros_like(conf))
    out_X, out_used, unresolved = [], [], []
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
            X, used = tri.points3d, tri.used
            bad = (worst_used_error(tri.reprojection_error, used, vdim=-2) > options.threshold_px) & X.isfinite().all(dim=-1)
            unresolved.append(bad)
            if options.reject_unresolved and bool(bad.any()):
                X = X.masked_fill(bad[..., None], math.nan)
                tri = tri._replace(used=used & ~bad[:, None, :])
        out_X.append(X)
        out_used.append(tri.used)
        bar.update(p.shape[0])
    bar.close()
    if stats is not None:
        J = keypoints.shape[2]
        stats["unresolved"] = torch.cat(unresolved) if unresolved else torch.zeros(T, J, dtype=torch.bool)
    return torch.cat(out_X), torch.cat(out_used)


def video_fps(videos: str | Path | None, names: Sequence[str]) -> float | None:
    """The frame rate of the first camera video in ``videos`` (a folder with one video per camera) that has one."""
    if videos is None:
        return None
    import cv2

    sources = find_camera_sources(videos, VIDEO_SUFFIXES)
    for name in names:
        if name in sources and sources[name].is_file():
            cap = cv2.VideoCapture(str(sources[name]))
            fps = cap.get(cv2.CAP_PROP_FPS)
            cap.release()
            if fps and fps > 0:
                return float(fps)
    return None


# --------------------------------------------------------------------------------------------- after triangulation
def frame_rate(options: CaptureOptions, fps: float | None) -> float | None:
    """The frame rate to use: ``options.fps`` over the one read from the videos (``fps``; None: unknown).

    Raises:
        CaptureError: a low-pass filter (``options.cutoff_hz``) is asked for and no frame rate is known, or
            the cut-off is not below half the frame rate.
    """
    source = "--fps" if options.fps else "read from the videos"
    fps = options.fps or fps
    if options.cutoff_hz is not None and fps is None:
        raise CaptureError("the low-pass filter needs the frame rate: pass fps (--fps), or videos to read it from")
    check_cutoff(options.cutoff_hz, fps, source)
    return fps


# --------------------------------------------------------------------------------------------- outputs
def h5_contents(result: Any, **attrs: Any) -> tuple[float, dict[str, np.ndarray], dict[str, Any]]:
    """The TRC frame rate and the arrays and attributes of ``poses3d.h5`` for a single- or several-people result.

    A result without a frame rate gets 30 fps, with an issue. The attributes hold ``joint_set``, ``joints``,
    ``cameras``, ``units`` (mm), ``fps``, then ``attrs``, then the issues known so far (all but the quality
    checks, so a wrong unit is flagged in the h5 file too).

    Returns:
        fps, arrays (``poses3d``, ``points2d``, ``confidence``, ``reprojection_error``, ``used``, ``filled``,
        ``person``, ``frame_index``), attributes.
    """
    cap = result.capture
    fps = result.fps
    if fps is None:
        fps = 30.0
        cap.issues.add("frame rate unknown (no --fps, no videos): the TRC time column assumes 30 fps", "options")
    head = {"joint_set": cap.joint_set, "joints": list(get_skeleton(cap.joint_set).joints), "cameras": list(cap.names),
            "units": "mm", "fps": fps}
    arrays = {
        "poses3d": result.points3d, "points2d": result.keypoints[..., :2], "confidence": result.keypoints[..., 2],
        "reprojection_error": result.reprojection_error, "used": result.used, "filled": result.filled,
        "person": result.person, "frame_index": cap.frame_index,
    }
    return fps, arrays, {**head, **attrs, "issues": {"counts": cap.issues.counts(), "list": cap.issues.as_dicts()}}


R = TypeVar("R")


def run_job(
    source: KeypointSource,
    calibration: str | Path,
    out_dir: str | Path,
    options: CaptureOptions,
    process: Callable[[Capture, float | None], R],
    write: Callable[[R, str | Path], Any],
    render: Callable[..., dict[str, Path]] | None = None,
    *,
    rig: str | None = None,
    videos: str | Path | None = None,
    images: str | Path | None = None,
    plot_frames: Sequence[int] | None = None,
    render_every: int = 1,
) -> R:
    """One capture job: load from ``source`` (timed as its ``stage``), read the frame rate from ``videos``,
    ``process`` it, ``write`` the outputs and the source's own files, and render on request.

    Every issue and every warning logged meanwhile go into one :class:`~mvpose.capture.issues.IssueLog`.

    Args:
        process: (capture, fps from the videos or None) -> a result with ``timings`` and ``paths``.
        write: (result, out_dir) -> the paths it wrote (also added to ``result.paths``).
        render: None (no pictures), or the render function of the result (:mod:`mvpose.capture.render`), called as
            ``render(result, out_dir / "render", videos=, images=, plot_frames=, every=)``.

    Returns:
        The result, with ``timings`` (``total_s``, the source's stage, the processing steps, ``write_s``,
        ``render_s``) and ``paths`` filled.
    """
    timings: dict[str, float] = {}
    issues = IssueLog()
    with timed(timings, "total"), issues.capture_logging():
        with timed(timings, source.stage):
            capture = source.load(calibration, options, rig=rig, videos=videos, images=images, timings=timings,
                                  issues=issues)
        if render is not None and plot_frames is not None:  # before the work, not after it
            missing = sorted(set(int(f) for f in plot_frames) - set(capture.frame_index.tolist()))
            if missing:
                raise CaptureError(f"--plot-frames: frames {missing} are not in the capture (its frames are "
                                   f"{capture.frame_index[0]}..{capture.frame_index[-1]})")
        fps = video_fps(videos, capture.names)
        result = process(capture, fps)
        result.timings = {**timings, **result.timings}
        write(result, out_dir)
        result.paths.update(source.write(capture, out_dir))
        if render is not None:
            with timed(result.timings, "render"):
                result.paths.update(render(result, Path(out_dir) / "render", videos=videos, images=images,
                                              plot_frames=plot_frames, every=render_every))
    result.timings.update(timings)
    return result
