"""Checks of a triangulated capture that make its result doubtful: unmet view counts, scale, joint order.

- **Views** (:func:`check_views`): joints that had fewer than ``min_views`` usable views (confidence at least
  ``min_confidence`` after the person choice) are counted per joint, with the largest number of cameras that
  saw any joint at once; when no joint of any frame could be triangulated, :class:`CaptureError` names the
  first cause found (no confident keypoint, too few cameras for ``min_views``, every view excluded) and the
  option to change.
- **Skeleton** (:func:`check_skeleton`): the median length of every bone over the frames is compared with a
  typical adult's (:data:`TYPICAL_BONE_MM`, by canonical joint names of :mod:`mvpose.skeletons`). The median
  ratio is the skeleton's scale: far from 1 it names the length unit that would make it 1 (a calibration
  in mm read as metres gives 1000). After dividing by that scale, the median absolute log ratio of the bones
  and of left/right bone pairs measure how well the points fit the joint set; another joint set with the
  same joint count (:data:`mvpose.skeletons.SKELETONS`) that fits clearly better is named.

Typical lengths are rounded segment lengths of a 1.75 m adult (Drillis & Contini's segment proportions of
stature, as tabulated in Winter, *Biomechanics and Motor Control of Human Movement*, fig. 4.1), with
keypoint-to-keypoint distances of the face and feet of the synthetic capture generator
(:mod:`mvpose.capture.synthetic`). Detectors place joints differently from anatomy, so the thresholds are
loose: they catch units and joint orders, not individual body shapes.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mvpose.capture.issues import CaptureError, IssueLog
from mvpose.geometry.calibration import UNITS_MM
from mvpose.skeletons import SKELETONS, get_skeleton

if TYPE_CHECKING:
    from mvpose.capture.types import Capture, CaptureOptions

__all__ = ["SKELETON_FIT_MAX", "TYPICAL_BONE_MM", "check_person", "check_quality", "check_skeleton", "check_unresolved",
           "check_views", "frame_ranges",
           "likely_unit", "skeleton_fit"]

# Typical adult keypoint distances (mm) by canonical joint names; the order of a pair does not matter.
_SIDES = {
    ("shoulder", "elbow"): 300.0, ("elbow", "wrist"): 255.0, ("hip", "knee"): 430.0, ("knee", "ankle"): 420.0,
    ("shoulder", "hip"): 500.0, ("eye", "ear"): 100.0, ("nose", "eye"): 45.0, ("ear", "shoulder"): 200.0,
    ("pelvis", "hip"): 115.0, ("neck", "shoulder"): 180.0, ("ankle", "heel"): 80.0, ("ankle", "big_toe"): 150.0,
    ("big_toe", "heel"): 210.0, ("small_toe", "heel"): 185.0, ("big_toe", "small_toe"): 45.0,
}
TYPICAL_BONE_MM: dict[frozenset, float] = {
    **{frozenset((f"{s}_{a}" if a not in ("pelvis", "neck", "nose") else a,
                  f"{s}_{b}" if b not in ("pelvis", "neck", "nose") else b)): mm
       for (a, b), mm in _SIDES.items() for s in ("left", "right")},
    frozenset(("left_hip", "right_hip")): 230.0, frozenset(("left_shoulder", "right_shoulder")): 370.0,
    frozenset(("left_eye", "right_eye")): 65.0, frozenset(("left_ear", "right_ear")): 150.0,
    frozenset(("pelvis", "spine")): 230.0, frozenset(("spine", "neck")): 260.0,
    frozenset(("pelvis", "neck")): 500.0, frozenset(("neck", "nose")): 180.0,
    frozenset(("nose", "head_top")): 120.0, frozenset(("neck", "head_top")): 250.0,
}
# Median |log(bone / typical)| after scaling, and median |log(left / right)|, above which a skeleton is implausible.
SKELETON_FIT_MAX = (0.35, 0.25)
# Scale (median bone / typical) outside this range names another unit.
SCALE_RANGE = (0.35, 3.0)


def _median_lengths(points: np.ndarray, limbs) -> np.ndarray:
    a, b = np.array(limbs).T
    length = np.linalg.norm(points[:, a] - points[:, b], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bones never seen: NaN
        return np.nanmedian(length, axis=0) if len(points) else np.full(len(a), np.nan)


def skeleton_fit(points: np.ndarray, joint_set: str) -> dict[str, Any]:
    """How well (T, J, 3) points fit the bones of ``joint_set``.

    Returns:
        ``scale`` (median bone / typical), ``bone_error`` (median ``|log(bone / (scale * typical))|``),
        ``asymmetry`` (median ``|log(left / right)|`` over mirrored bone pairs), ``worst`` (up to three
        ``(bone name, median mm, typical mm)`` furthest from typical, scale removed), ``bones`` (bones
        compared). NaN figures when no bone with a typical length was seen.
    """
    sk = get_skeleton(joint_set)
    lengths = _median_lengths(points, sk.limbs)
    rows = []
    for (a, b), length in zip(sk.limbs, lengths):
        typical = TYPICAL_BONE_MM.get(frozenset((sk.canonical[a], sk.canonical[b])))
        if typical is not None and np.isfinite(length) and length > 0:
            rows.append((f"{sk.joints[a]}-{sk.joints[b]}", float(length), typical))
    out: dict[str, Any] = {"joint_set": sk.name, "scale": math.nan, "bone_error": math.nan, "asymmetry": math.nan,
                           "worst": [], "bones": len(rows)}
    if not rows:
        return out
    logr = np.log([length / typical for _, length, typical in rows])
    scale = float(np.exp(np.median(logr)))
    dev = np.abs(logr - math.log(scale))
    out.update(scale=scale, bone_error=float(np.median(dev)),
               worst=[rows[i] for i in np.argsort(-dev)[:3]])
    flip = sk.flip_index
    index = {frozenset(limb): i for i, limb in enumerate(sk.limbs)}
    asym = []
    for i, (a, b) in enumerate(sk.limbs):
        j = index.get(frozenset((int(flip[a]), int(flip[b]))))
        if j is not None and j > i and np.isfinite(lengths[[i, j]]).all() and (lengths[[i, j]] > 0).all():
            asym.append(abs(math.log(lengths[i] / lengths[j])))
    if asym:
        out["asymmetry"] = float(np.median(asym))
    return out


def _implausible(fit: dict[str, Any]) -> bool:
    return fit["bone_error"] > SKELETON_FIT_MAX[0] or fit["asymmetry"] > SKELETON_FIT_MAX[1]


def _badness(fit: dict[str, Any]) -> float:
    return float(np.nansum([fit["bone_error"], fit["asymmetry"]]))


def likely_unit(scale: float, units: str) -> str | None:
    """The unit among m, cm, mm that brings a skeleton of ``scale`` (read in ``units``) into :data:`SCALE_RANGE`."""
    for u in UNITS_MM:
        if u != units and SCALE_RANGE[0] <= scale * UNITS_MM[u] / UNITS_MM[units] <= SCALE_RANGE[1]:
            return u
    return None


def check_skeleton(points: np.ndarray, joint_set: str, issues: IssueLog, *, units: str = "mm") -> dict[str, Any]:
    """Scale (unit) and joint-order checks of triangulated points; issues added to ``issues``.

    Args:
        points: (T, J, 3) triangulated joints, mm as computed.
        joint_set: the joint set the keypoints were read as.
        units: the unit the calibration's translations were read in.

    Returns:
        ``{"scale", "bone_error", "asymmetry", "likely_units", "better_joint_set", "alternatives"}`` for
        ``summary.json`` (``scale`` from the best-fitting joint set: a wrong joint order distorts it).
    """
    fit = skeleton_fit(points, joint_set)
    out = {k: fit[k] for k in ("scale", "bone_error", "asymmetry")}
    out.update(likely_units=None, better_joint_set=None, alternatives={})
    if not fit["bones"]:
        return out
    sk = get_skeleton(joint_set)
    alts = {s.name: skeleton_fit(points, s.name) for s in SKELETONS.values()
            if s.num_joints == sk.num_joints and s.name != sk.name}
    out["alternatives"] = {n: {k: f[k] for k in ("scale", "bone_error", "asymmetry")} for n, f in alts.items()}
    better = [n for n, f in alts.items() if not _implausible(f) and _badness(f) < 0.5 * _badness(fit)]
    best = min(better, key=lambda n: _badness(alts[n])) if _implausible(fit) and better else None
    scale = out["scale"] = alts[best]["scale"] if best else fit["scale"]
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        u = likely_unit(scale, units)
        text = (f"UNITS: the triangulated skeleton is {scale:.3g}x the size of a typical adult with the "
                f"calibration's translations read in {units}, so the outputs (labelled mm) are not in mm")
        if _implausible(fit) and not best:
            # A pile of joints is no ruler: unit advice would send the user after the wrong file.
            text += (": the bones do not fit a human skeleton either (SKELETON below), so the size says little about "
                     "the unit; check the keypoints first")
        elif u is not None:
            out["likely_units"] = u
            factor = UNITS_MM[u] / UNITS_MM[units]
            text += (f": the calibration is likely in {u}. Pose2Sim / anipose TOML or OpenCV without 'units': rerun with "
                     f"--calibration-units {u} (or state units: {u} in the file); mvpose JSON/TOML and Qualisys files are "
                     f"in mm by definition: multiply their translations by {factor:g}")
        else:
            text += ": check the calibration's translations and the keypoints"
        issues.add(text, kind="units")
    if not _implausible(fit):
        return out
    worst = ", ".join(f"{name} {length:.0f} mm (typical {typical:.0f})" for name, length, typical in fit["worst"])
    text = (f"SKELETON: the bones do not fit joint set {fit['joint_set']} (median deviation from typical "
            f"proportions {100 * (math.exp(fit['bone_error']) - 1):.0f}%, left/right difference "
            f"{100 * (math.exp(fit['asymmetry']) - 1) if np.isfinite(fit['asymmetry']) else float('nan'):.0f}%; "
            f"worst: {worst})")
    if best:
        out["better_joint_set"] = best
        text += (f"; the points fit joint set {best} (deviation {100 * (math.exp(alts[best]['bone_error']) - 1):.0f}%): "
                 f"the keypoints are likely in {best} order, rerun with --joints {best}")
    elif alts:
        text += f"; no other {sk.num_joints}-joint set fits better ({', '.join(alts)})"
    else:
        text += "; check the joint order of the keypoints and the calibration"
    issues.add(text, kind="skeleton")
    return out


def frame_ranges(frames: np.ndarray, limit: int = 6) -> str:
    """Sorted frame numbers as ``"0..3, 7, 9..12"`` (the first ``limit`` runs, then ``...``)."""
    frames = np.asarray(frames, dtype=np.int64)
    if not frames.size:
        return "none"
    breaks = np.flatnonzero(np.diff(frames) != 1)
    starts, ends = np.r_[frames[0], frames[breaks + 1]], np.r_[frames[breaks], frames[-1]]
    runs = [f"{a}" if a == b else f"{a}..{b}" for a, b in zip(starts, ends)]
    return ", ".join(runs[:limit]) + (", ..." if len(runs) > limit else "")


def check_views(usable: np.ndarray, points: np.ndarray, names, joints, min_views: int, min_confidence: float,
                detected: np.ndarray, chosen: np.ndarray, issues: IssueLog,
                frame_index: np.ndarray | None = None) -> dict[str, Any]:
    """Joints that could not reach ``min_views`` views; :class:`CaptureError` when nothing was triangulated.

    Args:
        usable: (T, V, J) bool, the view's keypoint is confident enough (after the person choice).
        points: (T, J, 3) triangulated joints (NaN where none).
        names: V camera names; joints: J joint names.
        min_views, min_confidence: the options used.
        detected: (T, V, J) bool, some person has the keypoint with confidence > 0 (before the person choice).
        chosen: (T, V, J) bool, the chosen person has it with confidence > 0 (before the minimum confidence).
        issues: where the findings go.
        frame_index: (T,) capture frame numbers (default ``0..T-1``), to name the frames concerned.

    Returns:
        ``{"max_views": int, "too_few_views": {joint: frames}, "too_few_views_frames": str}`` for ``summary.json``.

    Raises:
        CaptureError: no point of any frame could be triangulated; the message names the cause and the option.
    """
    views = usable.sum(axis=1)  # (T, J)
    ok = np.isfinite(points).all(axis=-1)
    max_views = int(views.max()) if views.size else 0
    seen_by = [n for v, n in enumerate(names) if usable[:, v].any()]
    short = (views < min_views) & (views >= 2)
    too_few = {j: int(c) for j, c in zip(joints, short.sum(axis=0)) if c}
    frame_index = np.arange(len(points)) if frame_index is None else np.asarray(frame_index)
    frames = frame_index[short.any(axis=1)]
    if too_few:
        issues.add(
            f"VIEWS: --min-views {min_views}: {int(short.sum())} joint positions in {len(frames)} frames "
            f"({frame_ranges(frames)}) had only "
            f"2..{min_views - 1} usable views and were not triangulated (joints: "
            + ", ".join(f"{j} {c}" for j, c in list(too_few.items())[:8]) + ("..." if len(too_few) > 8 else "")
            + f"); at most {max_views} cameras see a joint at once (cameras with confident keypoints: "
            f"{', '.join(seen_by) or 'none'}); lower --min-views to use them",
            kind="views", count=int(short.sum()))
    if not ok.any():
        if not (detected.sum(axis=1) >= 2).any():
            cause = "no joint was detected in two views of the same frame"
            fix = "check the keypoint files and that the cameras are synchronised (--offsets)"
        elif not (chosen.sum(axis=1) >= 2).any():
            cause = "in no frame do the detections of two views agree on one person"
            fix = "check the calibration and --offsets"
        elif max_views < 2:
            n_multi = int((chosen.sum(axis=1) >= 2).sum())
            cause = (f"no joint has two views with confidence >= {min_confidence} ({n_multi} joint positions have "
                     "two detected views below it)")
            fix = "lower --min-confidence"
        elif max_views < min_views:
            cause = (f"--min-views {min_views}, but at most {max_views} cameras see a joint at once (cameras with "
                     f"confident keypoints: {', '.join(seen_by)})")
            fix = f"lower --min-views to {max_views} or add cameras"
        else:
            cause = "every view was excluded on its reprojection error (views disagree: calibration or synchronisation?)"
            fix = "check the calibration and --offsets, or raise --threshold"
        raise CaptureError(f"nothing could be triangulated: {cause}; {fix}")
    return {"max_views": max_views, "too_few_views": too_few, "too_few_views_frames": frame_ranges(frames, 50)}


# Above these, the result is doubtful enough for an issue.
UNRESOLVED_MAX = 0.05  # share of triangulated points whose kept views still disagree
EXCLUDED_MAX = 0.15  # share of usable keypoints excluded on reprojection error
DROPPED_VIEWS_MAX = 0.05  # share of views with a detection where no person agreed with the other views


def check_quality(summary: dict[str, Any], person: np.ndarray, detected: np.ndarray, threshold_px: float,
                  issues: IssueLog) -> None:
    """Issues for a doubtful result: many excluded views, large reprojection errors, dropped detections,
    joints never triangulated.

    Args:
        summary: the numbers of :func:`mvpose.capture.report.build_summary`.
        person: (T, V) chosen detection per frame and view, -1 where none.
        detected: (T, V) the view has some detection in the frame.
        threshold_px: the reprojection error threshold used.
    """
    excluded = summary["excluded_view_fraction"]
    if excluded > EXCLUDED_MAX:
        issues.add(f"QUALITY: {100 * excluded:.0f}% of the usable 2D keypoints were excluded for disagreeing with "
                   f"the other views (reprojection error above {threshold_px:g} px): check the calibration, "
                   "--offsets and the detector", kind="quality")
    median = summary["reprojection_error_px"]["median"]
    if median is not None and np.isfinite(median) and median > threshold_px / 2:
        issues.add(f"QUALITY: median reprojection error {median:.1f} px of the views used (threshold "
                   f"{threshold_px:g} px): check the calibration and --offsets", kind="quality")
    dropped = (person < 0) & detected
    if dropped.sum() > DROPPED_VIEWS_MAX * max(int(detected.sum()), 1):
        per_cam = ", ".join(f"{n} {int(c)}" for n, c in zip(summary["cameras"], dropped.sum(axis=0)) if c)
        issues.add(f"QUALITY: in {int(dropped.sum())} of {int(detected.sum())} views with a detection no person "
                   f"agreed with the other views, so the view was not used ({per_cam})", kind="quality",
                   count=int(dropped.sum()))
    never = [j for j, c in summary["missing_frames_per_joint"].items() if c == summary["frames"]]
    if never:
        issues.add(f"QUALITY: {len(never)} joint(s) never triangulated: {', '.join(never)}", kind="quality",
                   count=len(never))


def usable_keypoints(keypoints: np.ndarray, options: "CaptureOptions") -> np.ndarray:
    """(..., J) bool: keypoints ``(..., J, 3)`` with a finite position and confidence >= ``options.min_confidence``
    (those triangulation may use)."""
    return (keypoints[..., 2] >= options.min_confidence) & np.isfinite(keypoints[..., :2]).all(axis=-1)


def check_person(capture: "Capture", keypoints: np.ndarray, points: np.ndarray, options: "CaptureOptions",
                 detected: np.ndarray, issues: Any) -> dict[str, Any]:
    """The views and skeleton checks (:func:`check_views`, :func:`check_skeleton`) of one person's triangulation.

    Args:
        keypoints: (T, V, J, 3) the person's detections; points: (T, J, 3) its per-frame 3D joints (mm).
        detected: (T, V, J) bool, keypoints with confidence > 0 of anyone (single person: before the person
            choice) or of this person (several people), as :func:`check_views` takes it.
        issues: where the findings go (an :class:`~mvpose.capture.issues.IssueLog` or one with its ``add``).

    Returns:
        ``{"views": ..., "skeleton": ...}``.
    """
    joints = get_skeleton(capture.joint_set).joints
    views = check_views(usable_keypoints(keypoints, options), points, capture.names, joints, options.min_views,
                        options.min_confidence, detected, keypoints[..., 2] > 0, issues, capture.frame_index)
    return {"views": views, "skeleton": check_skeleton(points, capture.joint_set, issues, units=capture.units)}


def check_unresolved(unresolved: np.ndarray, points: np.ndarray, joints: Sequence[str], options: "CaptureOptions",
                     issues: Any) -> dict[str, Any]:
    """Points the robust triangulation could not bring under the threshold.

    ``drop_worst`` stops dropping views at ``min_views`` and ``ransac`` keeps its best minimal subset, so
    a joint whose remaining views still disagree keeps a point with a large reprojection error (Pose2Sim
    leaves it missing instead: ``options.reject_unresolved``). Either way they are counted; an issue names
    them when there are any (kind ``quality`` above :data:`UNRESOLVED_MAX` of the points, else ``views``).

    Args:
        unresolved: (T, J) bool, from :func:`mvpose.capture.stages.triangulate_frames` (``stats``).
        points: (T, J, 3) the triangulated points (NaN where missing, rejected ones included).
        joints: joint names.
        issues: where the finding goes (an :class:`~mvpose.capture.issues.IssueLog` or one with its ``add``).

    Returns:
        ``{"count", "of" (points triangulated before any rejection), "rejected" (bool), "per_joint" (the joints
        concerned, most first)}``.
    """
    n = int(unresolved.sum())
    finite = int(np.isfinite(points).all(axis=-1).sum())
    rejected = bool(options.reject_unresolved)
    total = finite + (n if rejected else 0)
    per = unresolved.sum(axis=0)
    order = [j for j in np.argsort(-per, kind="stable") if per[j]]
    out = {"count": n, "of": total, "rejected": rejected, "per_joint": {joints[j]: int(per[j]) for j in order}}
    if n and options.mode != "dlt":
        share = n / max(total, 1)
        most = ", ".join(f"{joints[j]} {int(per[j])}" for j in order[:4])
        what = (f"left missing (--reject-unresolved){'; --max-gap fills short runs' if not options.max_gap else ''}"
                if rejected else "kept (--reject-unresolved leaves them missing, as Pose2Sim does)")
        how = (f"after drop_worst went down to {options.min_views} views" if options.mode == "drop_worst"
               else "in RANSAC's best consensus")
        issues.add(f"{n} of {total} triangulated points ({100 * share:.1f}%) still had a view more than "
                   f"{options.threshold_px:g} px off {how} (most: {most}); {what}",
                   kind="quality" if share > UNRESOLVED_MAX else "views", count=n)
    return out
