"""The data of a capture job: options, synchronised inputs, results (a leaf module, shared without import cycles
by :mod:`mvpose.capture.pipeline`, :mod:`~mvpose.capture.detect`, :mod:`~mvpose.capture.report` and
:mod:`~mvpose.capture.render`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from mvpose.capture.issues import CaptureError, IssueLog
from mvpose.geometry.calibration import UNITS_MM
from mvpose.geometry.camera import Cameras

__all__ = ["Capture", "CaptureOptions", "CaptureResult", "KeypointSource", "MODES"]

MODES = ("dlt", "drop_worst", "ransac")


@dataclass
class CaptureOptions:
    """Processing options (the CLI flags of ``mvpose triangulate``).

    Attributes:
        joints: joint set of the keypoints (``body25``, ``body25b``, ``coco``, ``halpe26``, ``h36m``); None: from the count.
        calibration_units: length unit of the calibration's translations (``m``, ``cm``, ``mm``) for formats
            that do not fix it (Pose2Sim / anipose TOML, OpenCV without ``units``); None: the file's own.
        mode: ``"drop_worst"`` / ``"ransac"`` (robust, see :func:`triangulate_robust`) or ``"dlt"`` (plain).
        threshold_px: reprojection error above which a view is excluded (robust modes).
        min_confidence: keypoints below it are not used.
        min_views: views a joint needs (>= 2).
        refine: Levenberg-Marquardt refinement of every point on its kept views.
        reject_unresolved: robust modes: leave a joint missing in a frame when its largest reprojection error over
            the views it kept is still above ``threshold_px`` (Pose2Sim's behaviour; ``max_gap`` may then fill it).
            False keeps such points and counts them in the report (``unresolved_points``).
        max_gap: fill runs of at most this many missing frames per joint (0: no filling).
        cutoff_hz: Butterworth low-pass cut-off (None: no filtering); needs ``fps``.
        filter_order: order of the zero-phase filter (even).
        fps: frame rate; None: taken from the videos when given.
        offsets: per-camera frame offsets, capture frame ``i`` = camera frame ``i + offset``.
        person_threshold_px: median joint distance for a detection to agree with the others (several people).
        chunk_frames: frames per triangulation batch.
        workers: processes for reading keypoints and rendering (None: CPU count, 0: in-process).
        progress: progress bars.
    """

    joints: str | None = None
    calibration_units: str | None = None
    mode: str = "drop_worst"
    threshold_px: float = 20.0
    min_confidence: float = 0.3
    min_views: int = 2
    refine: bool = False
    reject_unresolved: bool = False
    max_gap: int = 0
    cutoff_hz: float | None = None
    filter_order: int = 4
    fps: float | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    person_threshold_px: float = 50.0
    chunk_frames: int = 1024
    workers: int | None = 0
    progress: bool = True

    def check(self) -> None:
        if self.mode not in MODES:
            raise CaptureError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.reject_unresolved and self.mode == "dlt":
            raise CaptureError("--reject-unresolved goes with the robust modes (--mode drop_worst or ransac): plain DLT "
                               "keeps every view, so it has no unresolved points to leave out")
        if self.min_views < 2:
            raise CaptureError(f"min_views must be >= 2 (a point needs two rays), got {self.min_views}")
        if not self.threshold_px > 0:
            raise CaptureError(f"threshold_px must be > 0, got {self.threshold_px}")
        if self.max_gap < 0:
            raise CaptureError(f"max_gap must be >= 0, got {self.max_gap}")
        if self.cutoff_hz is not None and (self.filter_order < 2 or self.filter_order % 2):
            raise CaptureError(f"filter order must be even and >= 2, got {self.filter_order}")
        if self.fps is not None and not self.fps > 0:
            raise CaptureError(f"fps must be > 0, got {self.fps}")
        check_cutoff(self.cutoff_hz, self.fps)
        if self.calibration_units is not None and self.calibration_units not in UNITS_MM:
            raise CaptureError(f"calibration units must be one of {sorted(UNITS_MM)}, got {self.calibration_units!r}")


def check_cutoff(cutoff_hz: float | None, fps: float | None, source: str = "--fps") -> None:
    """Check the low-pass cut-off against the Nyquist frequency ``fps / 2`` (before any work is done).

    Raises:
        CaptureError: ``cutoff_hz`` is not in (0, fps / 2); ``source`` says where ``fps`` came from.
    """
    if cutoff_hz is None:
        return
    if not cutoff_hz > 0:
        raise CaptureError(f"--cutoff {cutoff_hz:g}: the low-pass cut-off must be > 0 Hz")
    if fps is not None and not cutoff_hz < fps / 2:
        raise CaptureError(f"--cutoff {cutoff_hz:g}: must be below the Nyquist frequency {fps / 2:g} Hz of the frame rate "
                           f"{fps:g} ({source})")


@dataclass
class Capture:
    """Synchronised inputs.

    Attributes:
        cameras: rig with batch shape ``(V,)``, in the order of ``names``.
        names: the V camera names used.
        frame_index: (T,) capture frame numbers.
        people: (T, V, P, J, 3) detections ``(x, y, confidence)``.
        joint_set: skeleton name of the keypoints.
        issues: everything doubtful found while loading and processing.
        sources: camera name -> keypoint source path (video / image folder for the model path).
        detection: what the model path did (:class:`mvpose.capture.detect.Detection`); None for keypoints.
        units: the unit the calibration's translations were read in.
        checks: findings of :mod:`mvpose.capture.checks` (views, skeleton), for ``summary.json``.
    """

    cameras: Cameras
    names: list[str]
    frame_index: np.ndarray
    people: np.ndarray
    joint_set: str
    issues: IssueLog = field(default_factory=IssueLog)
    sources: dict[str, str] = field(default_factory=dict)
    detection: Any = None
    units: str = "mm"
    checks: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaptureResult:
    """Everything :func:`process_capture` computed (arrays as in ``poses3d.h5``, see :mod:`mvpose.capture.io`)."""

    capture: Capture
    points3d: np.ndarray  # (T, J, 3) final
    raw3d: np.ndarray  # (T, J, 3) per-frame triangulation, before temporal processing
    keypoints: np.ndarray  # (T, V, J, 3) chosen detections
    person: np.ndarray  # (T, V)
    reprojection_error: np.ndarray  # (T, V, J) of the final points
    used: np.ndarray  # (T, V, J)
    filled: np.ndarray  # (T, J)
    fps: float | None
    options: CaptureOptions
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


class KeypointSource(Protocol):
    """Where the 2D keypoints of a capture come from: all :func:`mvpose.capture.stages.run_job` (behind
    :func:`mvpose.capture.pipeline.run_capture` and :func:`mvpose.capture.multi.run_people_capture`) asks of
    them, so the pipeline imports no source. Keypoint files (:class:`mvpose.capture.pipeline.KeypointFiles`)
    and a model run on the frames (:class:`mvpose.capture.detect.DetectOptions`; for several people
    :func:`mvpose.capture.multi.detect_people` behind one) are the ones there are.
    """

    stage: ClassVar[str]  # the timing name of :meth:`load` (``read_s`` / ``detect_s`` in the timings)

    def load(
        self,
        calibration: str | Path,
        options: CaptureOptions,
        *,
        rig: str | None = None,
        videos: str | Path | None = None,
        images: str | Path | None = None,
        timings: dict[str, float] | None = None,
        issues: IssueLog | None = None,
    ) -> Capture:
        """The synchronised capture of the calibration's cameras (``people (T, V, P, J, 3)``).

        Raises:
            CaptureError: nothing usable (the message names the cause).
        """
        ...

    def write(self, capture: Capture, out_dir: Path) -> dict[str, Path]:
        """The source's own outputs beside the pipeline's (the model path: ``detection.json``, ``boxes/``)."""
        ...
