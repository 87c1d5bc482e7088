"""Temporal processing of 3D joint trajectories: short-gap filling and a zero-phase Butterworth low-pass.

Both work on whole sequences ``(T, ...)`` at once (vectorised over every joint and coordinate).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from scipy.signal import butter, sosfiltfilt

if TYPE_CHECKING:
    from mvpose.capture.types import CaptureOptions

__all__ = ["fill_gaps", "lowpass", "smooth"]

log = logging.getLogger(__name__)


def _neighbours(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every frame, the index of the last valid frame at or before it (-1: none) and the first at or
    after it (T: none). ``valid``: (T, ...) bool."""
    T = valid.shape[0]
    idx = np.arange(T).reshape(T, *(1,) * (valid.ndim - 1))
    prev = np.maximum.accumulate(np.where(valid, idx, -1), axis=0)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(valid, idx, T), axis=0), axis=0), axis=0)
    return prev, nxt


def _interpolate(points: np.ndarray, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Linear interpolation between the neighbours (held constant where only one side exists)."""
    T = points.shape[0]
    idx = np.arange(T).reshape(T, *(1,) * (prev.ndim - 1))
    lo = np.where(prev >= 0, prev, nxt).clip(0, T - 1)
    hi = np.where(nxt < T, nxt, prev).clip(0, T - 1)
    span = np.maximum(hi - lo, 1)
    w = np.clip((idx - lo) / span, 0.0, 1.0)[..., None]
    a = np.take_along_axis(points, lo[..., None], axis=0)
    b = np.take_along_axis(points, hi[..., None], axis=0)
    return a * (1.0 - w) + b * w


def fill_gaps(points: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill runs of at most ``max_gap`` missing frames by linear interpolation between their neighbours.

    Gaps at the start or end of the sequence (no neighbour on one side) and longer gaps stay missing: an
    interpolation over a long gap would be a guess, not a measurement.

    Args:
        points: (T, ..., D) trajectories; a point is missing when any coordinate is NaN.
        max_gap: longest run of missing frames to fill (0 fills nothing).

    Returns:
        filled: (T, ..., D) copy with the short gaps filled.
        was_filled: (T, ...) bool, the points that were filled.
    """
    points = np.asarray(points, dtype=np.float64)
    valid = np.isfinite(points).all(axis=-1)
    if max_gap <= 0 or points.shape[0] < 3:
        return points.copy(), np.zeros_like(valid)
    prev, nxt = _neighbours(valid)
    T = points.shape[0]
    fill = ~valid & (prev >= 0) & (nxt < T) & (nxt - prev - 1 <= max_gap)
    out = points.copy()
    interp = _interpolate(points, prev, nxt)
    out[fill] = interp[fill]
    return out, fill


def lowpass(points: np.ndarray, fps: float, cutoff_hz: float, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth low-pass along time (``scipy.signal.sosfiltfilt``), like Pose2Sim.

    ``order`` is the order of the zero-phase result: a Butterworth of order ``order / 2`` runs forwards and
    backwards, so the response at ``cutoff_hz`` is -6 dB (0.5). Missing points are bridged by linear
    interpolation (held at the ends) for the filter only and are missing again in the output; joints missing
    in every frame stay missing.

    Args:
        points: (T, ..., D) trajectories, NaN where missing.
        fps: frame rate (Hz).
        cutoff_hz: cut-off frequency, below the Nyquist frequency ``fps / 2``.
        order: even, >= 2.

    Returns:
        (T, ..., D) filtered trajectories.
    """
    if order < 2 or order % 2:
        raise ValueError(f"lowpass: order must be even and >= 2 (zero-phase filtering doubles it), got {order}")
    if not 0 < cutoff_hz < fps / 2:
        raise ValueError(f"lowpass: cut-off {cutoff_hz} Hz must be between 0 and the Nyquist frequency {fps / 2} Hz")
    points = np.asarray(points, dtype=np.float64)
    shape = points.shape
    T = shape[0]
    sos = butter(order // 2, cutoff_hz, btype="low", fs=fps, output="sos")
    padlen = 3 * (2 * len(sos) + 1)
    if T < 2 * order + 1:
        log.warning("lowpass: %d frames are too few for an order-%d filter; left unfiltered", T, order)
        return points.copy()
    flat = points.reshape(T, -1, shape[-1])
    valid = np.isfinite(flat).all(axis=-1)  # (T, N)
    prev, nxt = _neighbours(valid)
    bridged = np.where(valid[..., None], flat, _interpolate(np.nan_to_num(flat), prev, nxt))
    some = valid.any(axis=0)  # (N,) points seen at least once
    out = np.full_like(flat, np.nan)
    out[:, some] = sosfiltfilt(sos, bridged[:, some], axis=0, padlen=min(padlen, T - 1))
    out[~valid] = np.nan
    return out.reshape(shape)


def smooth(raw: np.ndarray, options: "CaptureOptions", fps: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The temporal step of the capture pipelines: fill gaps of at most ``options.max_gap`` frames,
    then low-pass at ``options.cutoff_hz`` when that is set.

    Args:
        raw: (T, ..., J, 3) per-frame points, frames on axis 0, NaN where missing.
        fps: frame rate (Hz); only used by the low-pass filter (see :func:`mvpose.capture.stages.frame_rate`).

    Returns:
        points: like ``raw``; filled: (T, ..., J) bool, the joints filled by interpolation.
    """
    points, filled = fill_gaps(raw, options.max_gap)
    if options.cutoff_hz is not None:
        points = lowpass(points, fps, options.cutoff_hz, options.filter_order)
    return points, filled
