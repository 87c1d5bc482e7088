"""Several people in one capture: `mvpose triangulate --people N|auto`.

Steps (:func:`run_people_capture`), after reading and synchronising the capture as the single-person path does
(:func:`mvpose.capture.pipeline.load_capture`):

1. per frame, group the detections of all views into people (:func:`mvpose.capture.association.associate_people`;
   at most ``people`` per frame, or as many as the detections support); detections that fit no one are counted;
2. triangulate every person of every frame exactly as the single-person path triangulates its subject
   (:func:`mvpose.capture.pipeline.triangulate_frames`: same robust modes, thresholds, refinement);
3. link the people of consecutive frames into identities by 3D distance
   (:func:`mvpose.capture.tracking.track_people`; people entering and leaving, short phantom tracks dropped);
4. per identity, fill short gaps and low-pass (:mod:`mvpose.capture.temporal`, the same per-joint functions);
5. write ``poses3d.h5`` with a person axis, one ``poses3d_<id>.trc`` per person, ``summary.json`` and
   ``report.txt`` with the association and tracking counts and one section per person, and on request overlays
   and a 3D plot coloured per person (:mod:`mvpose.capture.render`).

With one person (``--people 1``, the default of the CLI) `mvpose triangulate` runs the single-person path of
:mod:`mvpose.capture.pipeline` instead, whose outputs are unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
import torch

from mvpose.capture.association import associate_people
from mvpose.capture.checks import check_person, check_quality, check_unresolved
from mvpose.capture.issues import CaptureError, IssueLog
from mvpose.capture.pipeline import KeypointFiles
from mvpose.capture.stages import frame_rate, h5_contents, run_job, timed, triangulate_frames
from mvpose.capture.temporal import smooth
from mvpose.capture.tracking import track_people
from mvpose.capture.types import Capture, CaptureOptions, CaptureResult
from mvpose.geometry.triangulation import reprojection_error
from mvpose.skeletons import get_skeleton

if TYPE_CHECKING:
    from mvpose.capture.detect import DetectOptions

__all__ = ["PeopleOptions", "PeopleResult", "detect_people", "parse_people", "process_people", "run_people_capture",
           "write_people_detection", "write_people_outputs"]

log = logging.getLogger(__name__)


def parse_people(text: str | int | None) -> int | None:
    """``"auto"`` -> None (found automatically), ``"3"`` -> 3.

    Raises:
        CaptureError: neither ``auto`` nor a positive integer.
    """
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return None
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise CaptureError(f"--people: expected a positive integer or 'auto', got {text!r}") from None
    if n < 1:
        raise CaptureError(f"--people: expected a positive integer or 'auto', got {text!r}")
    return n


@dataclass
class PeopleOptions:
    """Options of the several-people path (the CLI flags ``--people``, ``--track-distance``, ``--track-age``,
    ``--min-track``).

    Attributes:
        people: most people per frame and in the whole capture; None: as many as found.
        max_distance_mm: largest median joint distance (mm) between a track's predicted pose and a person of the
            next frame for them to be linked.
        max_age: frames a person may go unseen before its track is closed (a later return starts a new id,
            unless ``people`` is given and the tracks can be joined).
        min_frames: identities seen in fewer frames are dropped.
    """

    people: int | None = None
    max_distance_mm: float = 500.0
    max_age: int = 30
    min_frames: int = 5

    def check(self) -> None:
        if self.people is not None and self.people < 1:
            raise CaptureError(f"people must be >= 1 or None (automatic), got {self.people}")
        if not self.max_distance_mm > 0:
            raise CaptureError(f"track distance must be > 0 mm, got {self.max_distance_mm}")
        if self.max_age < 1 or self.min_frames < 1:
            raise CaptureError("track age and minimum track length must be >= 1, got "
                               f"{self.max_age}, {self.min_frames}")


@dataclass
class PeopleResult:
    """Everything :func:`process_people` computed (M identities, arrays as in ``poses3d.h5``).

    Attributes:
        ids: M names (``person1`` ... in order of first appearance).
        points3d, raw3d: (T, M, J, 3) final / per-frame triangulation, world mm, NaN where missing.
        keypoints: (T, M, V, J, 3) each person's detections.
        person: (T, M, V) int64 index of each person's detection in the frame's list, -1 where none.
        reprojection_error: (T, M, V, J) px of the final points.
        used: (T, M, V, J) views kept; filled: (T, M, J) joints filled by gap interpolation.
        association: counts of the association and tracking steps (see :func:`process_people`).
        checks: per id, the findings of :mod:`mvpose.capture.checks` (views, skeleton) for that person.
    """

    capture: Capture
    ids: list[str]
    points3d: np.ndarray
    raw3d: np.ndarray
    keypoints: np.ndarray
    person: np.ndarray
    reprojection_error: np.ndarray
    used: np.ndarray
    filled: np.ndarray
    fps: float | None
    options: CaptureOptions
    people_options: PeopleOptions
    association: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def single(self, m: int) -> CaptureResult:
        """Identity ``m`` as a single-person :class:`~mvpose.capture.pipeline.CaptureResult` (views, no copies)."""
        return CaptureResult(self.capture, self.points3d[:, m], self.raw3d[:, m], self.keypoints[:, m],
                             self.person[:, m], self.reprojection_error[:, m], self.used[:, m], self.filled[:, m],
                             self.fps, self.options, self.timings)


def _gather(people: np.ndarray, index: np.ndarray) -> np.ndarray:
    """people (T, V, P, J, 3), index (T, K, V) into P (-1: none) -> (T, K, V, J, 3), missing where -1."""
    T, V, P, J, _ = people.shape
    K = index.shape[1]
    missing = np.array([np.nan, np.nan, 0.0])
    if not P:
        return np.broadcast_to(missing, (T, K, V, J, 3)).copy()
    t = np.arange(T)[:, None, None]
    v = np.arange(V)[None, None, :]
    out = people[t, v, index.clip(min=0)]  # (T, K, V, J, 3)
    return np.where((index >= 0)[..., None, None], out, missing)


class _PersonIssues:
    """The capture's issue log seen by the checks of one person: every message starts with the person's id."""

    def __init__(self, issues: IssueLog, name: str) -> None:
        self.issues, self.name = issues, name

    def add(self, message: str, kind: str = "input", count: int = 1):
        return self.issues.add(f"{self.name}: {message}", kind, count)


def _check_person(capture: Capture, result: PeopleResult, m: int) -> dict[str, Any]:
    """Views and skeleton checks (:mod:`mvpose.capture.checks`) of identity ``m``; issues named after it."""
    kp = result.keypoints[:, m]
    return check_person(capture, kp, result.raw3d[:, m], result.options, kp[..., 2] > 0,
                        _PersonIssues(capture.issues, result.ids[m]))


def process_people(
    capture: Capture, options: CaptureOptions, people_options: PeopleOptions | None = None, fps: float | None = None
) -> PeopleResult:
    """Association, triangulation, tracking, checks and temporal processing of a loaded capture (no files written).

    Returns:
        :class:`PeopleResult`; ``association`` holds ``detections`` and ``unassigned_detections`` (in total and
        ``per_camera``), ``people_per_frame`` (a histogram ``{count: frames}``), ``tracks_started``,
        ``tracks_dropped`` (with ``dropped_people``, per-frame people in them), ``tracks_joined``.

    Raises:
        CaptureError: bad options, or a low-pass filter without a frame rate.
    """
    with capture.issues.capture_logging():
        return _process_people(capture, options, people_options, fps)


def _process_people(capture: Capture, options: CaptureOptions, people_options: PeopleOptions | None,
                    fps: float | None) -> PeopleResult:
    options.check()
    po = people_options or PeopleOptions()
    po.check()
    timings: dict[str, float] = {}
    fps = frame_rate(options, fps)
    cameras = capture.cameras.to(dtype=torch.float64)
    people = capture.people
    T, V, P, J, _ = people.shape
    # Detections of the model path already say who is who (slot p = box-file person p): no association.
    identified = isinstance(capture.detection, dict)
    with timed(timings, "associate"):
        present = (people[..., 2] > 0).any(axis=-1)  # (T, V, P)
        if identified:
            groups = np.where(present, np.arange(P)[None, None], -1).transpose(0, 2, 1)  # (T, P, V)
            unassigned = np.zeros((T, V), dtype=np.int64)
        else:
            assoc = associate_people(torch.from_numpy(people), cameras, max_people=po.people,
                                     min_confidence=options.min_confidence, threshold_px=options.person_threshold_px)
            groups = assoc.groups.numpy()  # (T, K, V)
            unassigned = assoc.unassigned.numpy()  # (T, V)
        K = groups.shape[1]
        kp = _gather(people, groups)  # (T, K, V, J, 3)
    with timed(timings, "triangulate"):
        stats: dict[str, Any] = {}
        X, used = triangulate_frames(torch.from_numpy(kp.reshape(T * K, V, J, 3)), cameras, options, stats)
        X, used = X.numpy().reshape(T, K, J, 3), used.numpy().reshape(T, K, V, J)
        unresolved = stats["unresolved"].numpy().reshape(T, K, J)
    with timed(timings, "track"):
        if identified:
            slot = np.where((groups >= 0).any(-1), np.arange(K)[None], -1)
            tracks = None
        else:
            tracks = track_people(X, max_distance_mm=po.max_distance_mm, max_age=po.max_age,
                                  min_frames=po.min_frames, max_people=po.people)
            slot = tracks.slot  # (T, M)
        M = slot.shape[1]
        t = np.arange(T)[:, None]
        seen = slot >= 0
        k = slot.clip(min=0)
        raw = np.where(seen[..., None, None], X[t, k], np.nan)  # (T, M, J, 3)
        kp_m = np.where(seen[..., None, None, None], kp[t, k], np.array([np.nan, np.nan, 0.0]))
        used_m = np.where(seen[..., None, None], used[t, k], False)
        unresolved_m = np.where(seen[..., None], unresolved[t, k], False)  # (T, M, J)
        det_m = np.where(seen[..., None], groups[t, k], -1)
    with timed(timings, "temporal"):
        points, filled = smooth(raw, options, fps)
        err = reprojection_error(torch.from_numpy(points.reshape(T * M, J, 3)),
                                 torch.from_numpy(kp_m.reshape(T * M, V, J, 3)[..., :2]), cameras)
        err = err.numpy().reshape(T, M, V, J)
    counts = np.bincount((groups >= 0).any(-1).sum(-1), minlength=1)
    association = {
        "detections": int(present.sum()),
        "unassigned_detections": int(unassigned.sum()),
        "per_camera": {n: {"detections": int(present[:, v].sum()), "unassigned": int(unassigned[:, v].sum())}
                       for v, n in enumerate(capture.names)},
        "people_per_frame": {str(c): int(n) for c, n in enumerate(counts) if n},
        "tracks_started": tracks.started if tracks else M, "tracks_dropped": tracks.dropped if tracks else 0,
        "dropped_people": tracks.dropped_people if tracks else 0, "tracks_joined": tracks.joined if tracks else 0,
        "identities_from": "box files" if identified else "tracking",
    }
    if M == 0:
        capture.issues.add(f"no person was found in two views of at least {po.min_frames} frames; nothing was "
                           "triangulated", kind="people")
    ids = _identity_names(list(capture.detection)) if identified else [f"person{m + 1}" for m in range(M)]
    result = PeopleResult(capture, ids, points, raw, kp_m, det_m, err, used_m, filled, fps, options, po, association,
                          timings=timings)
    with timed(timings, "check"):
        joint_names = get_skeleton(capture.joint_set).joints
        result.checks = {name: {**_check_person(capture, result, m), "unresolved_points": check_unresolved(
                             unresolved_m[:, m], raw[:, m], joint_names, options, _PersonIssues(capture.issues, name))}
                         for m, name in enumerate(ids) if np.isfinite(raw[:, m]).any()}
    return result


def detect_people(
    calibration: str | Path,
    detect: "DetectOptions",
    options: CaptureOptions,
    *,
    rig: str | None = None,
    videos: str | Path | None = None,
    images: str | Path | None = None,
    timings: dict[str, float] | None = None,
    issues: IssueLog | None = None,
) -> Capture:
    """The model path for several people: every person of the box files (their ``person`` column / key) is
    followed on its own by :func:`mvpose.capture.detect.detect_captures` (crops from its boxes, then from its
    reprojected 3D pose; never from the whole frame; every frame decoded once for all of them), and the results
    are stacked on the person axis.

    Returns:
        A :class:`~mvpose.capture.pipeline.Capture` with ``people (T, V, P, J, 3)``, detection ``p`` of every
        frame and view being box-file person ``identities[p]``, and ``detection`` a dict person -> its
        :class:`~mvpose.capture.detect.Detection`.

    Raises:
        CaptureError: no box folder, a box without a person id, or any error of ``detect_captures``.
    """
    from mvpose.capture.detect import box_file_people, detect_captures
    from mvpose.geometry.calibration import load_calibration

    if detect.boxes is None:
        raise CaptureError("several people with --checkpoint need --boxes: box files with a person id per box "
                           "('person' column / key) that say who is who")
    calibrated = load_calibration(calibration, rig=rig, units=options.calibration_units).names
    who = box_file_people(detect.boxes, calibrated, calibrated)
    if not who:
        raise CaptureError(f"boxes {detect.boxes}: no box in any file")
    timings = {} if timings is None else timings
    issues = IssueLog() if issues is None else issues
    captures = detect_captures(calibration, detect, options, who, rig=rig, videos=videos, images=images,
                               timings=timings, issues=issues)
    first = captures[0]
    people = np.stack([c.people[:, :, 0] for c in captures], axis=2)  # (T, V, P, J, 3)
    capture = Capture(first.cameras, first.names, first.frame_index, people, first.joint_set, issues, first.sources,
                      units=first.units)
    capture.detection = {p: c.detection for p, c in zip(who, captures)}
    return capture


def _identity_names(who: Sequence[str]) -> list[str]:
    return [f"person{p}" if p.isdigit() else p for p in who]


@dataclass
class _PeopleModel:
    """The model path for several people as a :class:`~mvpose.capture.types.KeypointSource`: :func:`detect_people`
    with these model options; writes :func:`write_people_detection` (ids as :func:`process_people` names them)."""

    detect: "DetectOptions"
    stage: ClassVar[str] = "detect"

    def load(self, calibration: str | Path, options: CaptureOptions, *, rig: str | None = None,
             videos: str | Path | None = None, images: str | Path | None = None,
             timings: dict[str, float] | None = None, issues: IssueLog | None = None) -> Capture:
        return detect_people(calibration, self.detect, options, rig=rig, videos=videos, images=images,
                             timings=timings, issues=issues)

    def write(self, capture: Capture, out_dir: str | Path) -> dict[str, Path]:
        if not isinstance(capture.detection, dict):
            return {}
        return write_people_detection(capture.detection, _identity_names(list(capture.detection)), out_dir)


# --------------------------------------------------------------------------------------------- outputs
def _people_summary(result: PeopleResult) -> dict[str, Any]:
    from mvpose.capture.report import build_summary, summary_head

    cap = result.capture
    shared = ("issues", "issue_counts", "calibration_units", "sources", "options", "timings_s", "cameras",
              "joint_set", "joints", "fps", "first_frame", "last_frame", "frames")
    persons = {}
    for m, name in enumerate(result.ids):
        s = build_summary(result.single(m))
        s["checks"] = result.checks.get(name, {})
        # Excluded views, large errors, joints never triangulated (a view without this person is no dropped view).
        check_quality(s, result.person[:, m], np.zeros(result.person.shape[::2], dtype=bool),
                      result.options.threshold_px, _PersonIssues(cap.issues, name))
        seen = (result.person[:, m] >= 0).any(axis=-1)
        persons[name] = {"frames_seen": int(seen.sum()),
                         "first_seen": int(cap.frame_index[seen.argmax()]) if seen.any() else None,
                         "last_seen": int(cap.frame_index[len(seen) - 1 - seen[::-1].argmax()]) if seen.any() else None,
                         **{k: v for k, v in s.items() if k not in shared}}
    return {
        **summary_head(result),
        "people": list(result.ids),
        "association": result.association,
        "persons": persons,
        "issues": cap.issues.as_dicts(),
        "issue_counts": cap.issues.counts(),
        "calibration_units": cap.units,
        "sources": dict(cap.sources),
        "options": asdict(result.options),
        "people_options": asdict(result.people_options),
        "timings_s": dict(result.timings),
    }


def _people_report(summary: dict[str, Any]) -> str:
    from mvpose.capture.report import format_report, issue_lines

    a = summary["association"]
    ppf = ", ".join(f"{c} in {n}" for c, n in sorted(a["people_per_frame"].items(), key=lambda x: int(x[0])))
    lines = [
        f"capture: {summary['frames']} frames ({summary['first_frame']}..{summary['last_frame']}), "
        f"{len(summary['cameras'])} cameras, joint set {summary['joint_set']}, {len(summary['people'])} people",
        f"detections: {a['detections']}, fitting no person: {a['unassigned_detections']} "
        "(" + ", ".join(f"{n} {c['unassigned']}" for n, c in a["per_camera"].items()) + ")",
        f"people per frame: {ppf or '-'} frames",
        f"tracks: {a['tracks_started']} started, {a['tracks_dropped']} dropped "
        f"({a['dropped_people']} per-frame people), "
        f"{a['tracks_joined']} joined",
    ]
    if summary["issues"]:
        lines += ["", *issue_lines(summary)]
    for name, p in summary["persons"].items():
        body = {**{k: summary[k] for k in ("frames", "first_frame", "last_frame", "cameras", "joint_set")},
                **p, "issues": [], "issue_counts": {}}
        lines += ["", f"=== {name}: seen in {p['frames_seen']} of {summary['frames']} frames "
                      f"({p['first_seen']}..{p['last_seen']})", format_report(body).rstrip("\n")]
    return "\n".join(lines) + "\n"


def write_people_outputs(result: PeopleResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``poses3d.h5`` (person axis), ``poses3d_<id>.trc`` per person, ``summary.json``, ``report.txt``.

    ``poses3d.h5`` holds the arrays of :class:`PeopleResult` under the names of the single-person file
    (``poses3d (T, M, J, 3)``, ``points2d (T, M, V, J, 2)``, ``confidence``, ``reprojection_error``, ``used``,
    ``filled``, ``person (T, M, V)``, ``frame_index``) and the attribute ``people`` (the M ids).
    """
    from mvpose.capture.io import write_h5, write_json, write_text, write_trc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cap = result.capture
    skeleton = get_skeleton(cap.joint_set)
    fps, arrays, attrs = h5_contents(result, people=list(result.ids), options=asdict(result.options),
                                     people_options=asdict(result.people_options))
    with timed(result.timings, "write"):
        paths = {"h5": write_h5(out / "poses3d.h5", arrays, attrs)}
        for m, name in enumerate(result.ids):
            paths[f"trc_{name}"] = write_trc(out / f"poses3d_{name}.trc", result.points3d[:, m], skeleton.joints, fps,
                                             cap.frame_index)
    result.summary = _people_summary(result)
    paths["summary"] = write_json(out / "summary.json", result.summary)
    paths["report"] = write_text(out / "report.txt", _people_report(result.summary))
    result.paths.update(paths)
    return paths


def write_people_detection(detections: dict, ids: Sequence[str], out_dir: str | Path) -> dict[str, Path]:
    """The model path's ``detection.json`` (``{id: info}``) and ``boxes/<camera>.csv`` with a ``person`` column
    (readable by ``--boxes``: a second run crops exactly the same)."""
    from mvpose.capture.detect import BOX_COLUMNS, BOX_SOURCES
    from mvpose.capture.io import write_json, write_text

    out = Path(out_dir)
    dets = list(detections.items())
    paths = {"detection": write_json(out / "detection.json", {i: d.info for i, (_, d) in zip(ids, dets)})}
    names = dets[0][1].names
    for v, name in enumerate(names):
        rows = [",".join([*BOX_COLUMNS, "person", "source"])]
        for who, d in dets:
            for t in np.flatnonzero(np.isin(d.box_source[:, v], (1, 2))):
                x0, y0, x1, y1 = d.boxes[t, v]
                rows.append(f"{int(d.camera_frames[t, v])},{x0:.2f},{y0:.2f},{x1:.2f},{y1:.2f},{who},"
                            f"{BOX_SOURCES[d.box_source[t, v]]}")
        paths[f"boxes_{name}"] = write_text(out / "boxes" / f"{name}.csv", "\n".join(rows) + "\n")
    return paths


def run_people_capture(
    calibration: str | Path,
    keypoints_dir: str | Path | None,
    out_dir: str | Path,
    options: CaptureOptions | None = None,
    people_options: PeopleOptions | None = None,
    *,
    detect: "DetectOptions | None" = None,
    rig: str | None = None,
    videos: str | Path | None = None,
    images: str | Path | None = None,
    render: bool = False,
    plot_frames: Sequence[int] | None = None,
    render_every: int = 1,
) -> PeopleResult:
    """The whole `mvpose triangulate --people N|auto` job; arguments as :func:`mvpose.capture.pipeline.run_capture`.

    Returns:
        The :class:`PeopleResult`, with ``summary``, ``timings`` and ``paths`` filled.
    """
    options = options or CaptureOptions()
    options.check()
    po = people_options or PeopleOptions()
    po.check()
    source = _PeopleModel(detect) if detect is not None else KeypointFiles(keypoints_dir)
    render_fn = None
    if render:
        from mvpose.capture.render import render_people as render_fn
    return run_job(source, calibration, out_dir, options, lambda capture, fps: process_people(capture, options, po, fps),
                   write_people_outputs, render_fn, rig=rig, videos=videos, images=images, plot_frames=plot_frames,
                   render_every=render_every)
