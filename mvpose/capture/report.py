"""Capture diagnostics: the ``summary.json`` numbers and the printed / saved ``report.txt``.

Reprojection errors are those of the final 3D points (after any filtering) against the 2D keypoints of the
views that were used to triangulate them; excluded views and gap-filled joints do not count.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from mvpose.capture.checks import usable_keypoints
from mvpose.skeletons import get_skeleton

if TYPE_CHECKING:
    from mvpose.capture.types import CaptureResult

__all__ = ["bone_lengths", "build_summary", "error_stats", "format_report", "issue_lines", "summary_head"]


def _nan_stat(fn, values: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, reported as null
        return fn(values, axis=axis)


def error_stats(errors: np.ndarray, mask: np.ndarray, axis: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Mean, median and 90th percentile of ``errors`` where ``mask``, reduced over ``axis`` (None: all).

    Returns:
        ``{"mean", "median", "p90", "count"}``; arrays when ``axis`` leaves dimensions, NaN where empty.
    """
    e = np.where(mask, errors, np.nan)
    if axis is None:
        e, mask, axis = e.reshape(-1), np.reshape(mask, -1), 0
    return {
        "mean": _nan_stat(np.nanmean, e, axis),
        "median": _nan_stat(np.nanmedian, e, axis),
        "p90": _nan_stat(lambda a, axis: np.nanpercentile(a, 90, axis=axis), e, axis),
        "count": np.sum(mask, axis=axis),
    }


def bone_lengths(points: np.ndarray, limbs: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bone length statistics over frames.

    Args:
        points: (T, J, 3) joints.
        limbs: (parent, child) index pairs, B of them.

    Returns:
        mean (B,), std (B,), frames (B,) where both ends exist.
    """
    a, b = np.array(limbs).T
    length = np.linalg.norm(points[:, a] - points[:, b], axis=-1)  # (T, B)
    ok = np.isfinite(length)
    return _nan_stat(np.nanmean, length, 0), _nan_stat(np.nanstd, length, 0), ok.sum(axis=0)


def _pick(stats: dict[str, Any], i) -> dict[str, Any]:
    return {k: v[i] for k, v in stats.items()}


def summary_head(result: Any) -> dict[str, Any]:
    """The first keys of ``summary.json``, the same for one and for several people: ``frames``, ``first_frame``,
    ``last_frame`` (capture frame numbers, None without frames), ``fps``, ``cameras``, ``joint_set``, ``joints``."""
    cap = result.capture
    T = len(cap.frame_index)
    return {
        "frames": T,
        "first_frame": int(cap.frame_index[0]) if T else None,
        "last_frame": int(cap.frame_index[-1]) if T else None,
        "fps": result.fps,
        "cameras": list(cap.names),
        "joint_set": cap.joint_set,
        "joints": list(get_skeleton(cap.joint_set).joints),
    }


def build_summary(result: "CaptureResult") -> dict[str, Any]:
    """Numbers of ``summary.json`` (see :func:`format_report` for their meaning)."""
    from dataclasses import asdict

    cap = result.capture
    skeleton = get_skeleton(cap.joint_set)
    err, used = result.reprojection_error, result.used
    kp = result.keypoints
    ok_final = np.isfinite(result.points3d).all(axis=-1)  # (T, J)
    ok_raw = np.isfinite(result.raw3d).all(axis=-1)
    used = used & ok_raw[:, None, :] & np.isfinite(err)
    usable = usable_keypoints(kp, result.options)
    candidates = usable & ok_raw[:, None, :]  # views that could have entered a triangulated joint
    excluded = candidates & ~used
    overall = error_stats(err, used)
    per_cam = error_stats(err, used, axis=(0, 2))
    per_joint = error_stats(err, used, axis=(0, 1))
    cam_excluded = excluded.sum(axis=(0, 2)) / np.maximum(candidates.sum(axis=(0, 2)), 1)
    mean, std, frames = bone_lengths(result.points3d, skeleton.limbs)
    names = skeleton.joints
    return {
        **summary_head(result),
        "reprojection_error_px": {
            **{k: overall[k] for k in ("median", "mean", "p90")},
            "count": int(overall["count"]),
            "per_camera": {n: {**_pick(per_cam, v), "excluded_view_fraction": cam_excluded[v]} for v, n in enumerate(cap.names)},
            "per_joint": {n: _pick(per_joint, j) for j, n in enumerate(names)},
        },
        "excluded_view_fraction": float(excluded.sum() / max(candidates.sum(), 1)),
        "frames_with_missing_joints": int((~ok_final).any(axis=1).sum()),
        "frames_with_missing_joints_before_filling": int((~ok_raw).any(axis=1).sum()),
        "missing_frames_per_joint": {n: int(c) for n, c in zip(names, (~ok_final).sum(axis=0))},
        "filled_points": int(result.filled.sum()),
        "bone_length_mm": {
            f"{names[a]}-{names[b]}": {"mean": m, "std": s, "frames": int(f)}
            for (a, b), m, s, f in zip(skeleton.limbs, mean, std, frames)
        },
        "issues": cap.issues.as_dicts(),
        "issue_counts": cap.issues.counts(),
        "checks": dict(cap.checks),
        "calibration_units": cap.units,
        "sources": dict(cap.sources),
        "options": asdict(result.options),
        "timings_s": dict(result.timings),
    }


def _num(x: Any, fmt: str = "6.1f") -> str:
    return "-".rjust(len(format(0.0, fmt))) if x is None or not np.isfinite(x) else format(float(x), fmt)


def issue_lines(summary: dict[str, Any]) -> list[str]:
    """The issues of a summary as report lines: a heading with the counts by kind, then one line each
    (nothing when there is no issue)."""
    if not summary["issues"]:
        return []
    counts = ", ".join(f"{k} {n}" for k, n in summary["issue_counts"].items())
    return [f"issues ({len(summary['issues'])}; counts by kind: {counts}):",
            *(f"  - [{i['kind']}, {i['count']}] {i['message']}" for i in summary["issues"])]


def format_report(summary: dict[str, Any]) -> str:
    """A plain-text report of a summary: errors per camera and joint, exclusions, missing joints, bones."""
    rep = summary["reprojection_error_px"]
    lines = [
        f"capture: {summary['frames']} frames ({summary['first_frame']}..{summary['last_frame']}), "
        f"{len(summary['cameras'])} cameras, joint set {summary['joint_set']}",
    ]
    if summary["issues"]:
        lines += [*issue_lines(summary), ""]
    lines += [
        f"reprojection error (px, used views): mean {_num(rep['mean'], '.2f')}  median {_num(rep['median'], '.2f')}  "
        f"p90 {_num(rep['p90'], '.2f')}  over {rep['count']} observations",
        f"excluded views: {100 * summary['excluded_view_fraction']:.1f}% of the usable 2D keypoints",
        f"frames with missing joints: {summary['frames_with_missing_joints']} of {summary['frames']}"
        f" ({summary['frames_with_missing_joints_before_filling']} before gap filling; {summary['filled_points']} points filled)",
        "",
        "per camera            mean  median     p90  excluded",
    ]
    for name, s in rep["per_camera"].items():
        lines.append(f"  {name:<16}{_num(s['mean'], '8.2f')}{_num(s['median'], '8.2f')}{_num(s['p90'], '8.2f')}"
                     f"{100 * s['excluded_view_fraction']:9.1f}%")
    lines += ["", "per joint             mean  median     p90  missing frames"]
    for name, s in rep["per_joint"].items():
        lines.append(f"  {name:<16}{_num(s['mean'], '8.2f')}{_num(s['median'], '8.2f')}{_num(s['p90'], '8.2f')}"
                     f"{summary['missing_frames_per_joint'][name]:9d}")
    lines += ["", "bone lengths (mm)              mean     std"]
    for name, s in summary["bone_length_mm"].items():
        lines.append(f"  {name:<26}{_num(s['mean'], '8.1f')}{_num(s['std'], '8.1f')}")
    return "\n".join(lines) + "\n"
