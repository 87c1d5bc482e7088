"""Identities over time: link the people triangulated in consecutive frames into tracks, one id per person.

Every frame's people (from :func:`mvpose.capture.association.associate_people`, triangulated) are matched to
the open tracks by 3D distance: the median distance over the joints both have between the person and the
track's pose predicted for that frame (its last pose moved on at its velocity, the median displacement of its
joints between its last two measured frames; the medians ignore a few badly triangulated joints). The
assignment minimises the total distance (Hungarian, ``scipy.optimize.linear_sum_assignment``); a pair further
apart than ``max_distance_mm`` is not linked. A
person linked to no track starts one (someone entering); a track not seen for ``max_age`` frames is closed
(someone leaving). Tracks seen in fewer than ``min_frames`` frames are dropped (a phantom from a wrong
association). With a known number of people, tracks beyond that number are joined to the one of the
``max_people`` longest tracks that does not overlap them in time and is nearest at the junction (a person who
left and came back), or dropped.

Pose2Sim (``Pose2Sim/triangulation.py``, ``sort_people``) orders the people of each frame by their 3D
distance to the previous frame's people in the same way, without prediction and without entering / leaving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["Tracks", "identity_switches", "track_people"]

log = logging.getLogger(__name__)

# Cost of an impossible link in the assignment (far above any gate).
_FAR = 1e12


@dataclass
class Tracks:
    """Identities found by :func:`track_people`.

    Attributes:
        slot: (T, M) int64, for every identity (ordered by first appearance) the index of its person in each
            frame (into the K axis of the per-frame people), -1 where it is not seen.
        started: tracks started (before dropping and joining).
        dropped: tracks dropped (too short, or past ``max_people`` with no identity to join).
        dropped_people: per-frame people in the dropped tracks.
        joined: tracks joined to an earlier identity (``max_people`` given).
    """

    slot: np.ndarray
    started: int
    dropped: int
    dropped_people: int
    joined: int

    @property
    def count(self) -> int:
        return self.slot.shape[1]


def _pose_distance(a: np.ndarray, b: np.ndarray, min_joints: int) -> np.ndarray:
    """Median joint distance between every pose of a (A, J, 3) and of b (B, J, 3): (A, B), inf with too few
    joints in common. The median ignores a few badly triangulated joints."""
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)  # (A, B, J)
    n = np.isfinite(d).sum(axis=-1, keepdims=True)
    s = np.sort(d, axis=-1)  # NaN last: the n finite distances first (np.nanmedian is slow on small rows)
    lo = np.take_along_axis(s, np.maximum(n - 1, 0) // 2, axis=-1)
    hi = np.take_along_axis(s, np.minimum(n // 2, d.shape[-1] - 1), axis=-1)
    return np.where(n >= min_joints, (lo + hi) / 2, np.inf)[..., 0]


class _Track:
    def __init__(self, t: int, k: int, pose: np.ndarray) -> None:
        self.frames, self.slots = [t], [k]
        self.pose, self.prev = pose, None  # last pose, (frame, centroid) before it
        self.last = t
        self.velocity = np.zeros(3)

    def predict(self, t: int) -> np.ndarray:
        return self.pose + self.velocity * (t - self.last)

    def add(self, t: int, k: int, pose: np.ndarray) -> None:
        # Velocity: median displacement of the joints seen in both poses (robust to a few bad joints).
        both = np.isfinite(pose).all(-1) & np.isfinite(self.pose).all(-1)
        moved = np.median(pose[both] - self.pose[both], axis=0) / (t - self.last) if both.any() else np.zeros(3)
        # Joints missing now keep their last position (moved on) so that the next match has them.
        self.pose = np.where(np.isfinite(pose), pose, self.pose + moved * (t - self.last))
        self.velocity = moved
        self.frames.append(t)
        self.slots.append(k)
        self.last = t


def track_people(
    poses: np.ndarray,
    *,
    max_distance_mm: float = 500.0,
    max_age: int = 30,
    min_frames: int = 5,
    max_people: int | None = None,
    min_joints: int = 3,
) -> Tracks:
    """Link per-frame people into identities (see the module doc).

    Args:
        poses: (T, K, J, 3) world mm of the people of each frame (any order within a frame), NaN where a joint
            or a whole slot is missing.
        max_distance_mm: largest median joint distance between a track's predicted pose and a person to link.
        max_age: frames a track may go unseen before it is closed.
        min_frames: tracks seen in fewer frames are dropped.
        max_people: most identities (None: as many as tracked).
        min_joints: joints a person needs to be tracked, and joints two poses need in common to be compared.

    Returns:
        :class:`Tracks`.

    Raises:
        ValueError: ``poses`` is not (T, K, J, 3), or a limit is out of range.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 4 or poses.shape[-1] != 3:
        raise ValueError(f"track_people: expected poses (T, K, J, 3), got shape {poses.shape}")
    if not max_distance_mm > 0 or max_age < 1 or min_frames < 1:
        raise ValueError(f"track_people: need max_distance_mm > 0, max_age >= 1, min_frames >= 1; got "
                         f"{max_distance_mm}, {max_age}, {min_frames}")
    if max_people is not None and max_people < 1:
        raise ValueError(f"track_people: max_people must be >= 1 or None, got {max_people}")
    T, K = poses.shape[:2]
    seen = np.isfinite(poses).all(axis=-1).sum(axis=-1) >= min_joints  # (T, K)
    open_tracks: list[_Track] = []
    closed: list[_Track] = []
    for t in range(T):
        ks = np.flatnonzero(seen[t])
        still = []
        for tr in open_tracks:
            (closed if t - tr.last > max_age else still).append(tr)
        open_tracks = still
        if not len(ks):
            continue
        linked = set()
        if open_tracks:
            pred = np.stack([tr.predict(t) for tr in open_tracks])
            cost = _pose_distance(pred, poses[t, ks], min_joints)
            rows, cols = linear_sum_assignment(np.where(cost <= max_distance_mm, cost, _FAR))
            for r, c in zip(rows, cols):
                if cost[r, c] <= max_distance_mm:
                    open_tracks[r].add(t, int(ks[c]), poses[t, ks[c]])
                    linked.add(c)
        for c, k in enumerate(ks):
            if c not in linked:
                open_tracks.append(_Track(t, int(k), poses[t, k]))
    tracks = closed + open_tracks
    started = len(tracks)
    long_enough = [tr for tr in tracks if len(tr.frames) >= min_frames]
    dropped = [tr for tr in tracks if len(tr.frames) < min_frames]
    joined = 0
    if max_people is not None and len(long_enough) > max_people:
        by_length = sorted(long_enough, key=lambda tr: -len(tr.frames))
        keep, rest = by_length[:max_people], sorted(by_length[max_people:], key=lambda tr: tr.frames[0])
        for tr in rest:
            best, best_d = None, np.inf
            span = set(tr.frames)
            for idn in keep:
                if span & set(idn.frames):
                    continue
                # Distance at the junction: the identity's observation nearest in time to the track.
                frames = np.asarray(idn.frames)
                near = int(np.argmin(np.minimum(np.abs(frames - tr.frames[0]), np.abs(frames - tr.frames[-1]))))
                end = 0 if abs(frames[near] - tr.frames[0]) <= abs(frames[near] - tr.frames[-1]) else -1
                d = _pose_distance(poses[frames[near], idn.slots[near]][None],
                                   poses[tr.frames[end], tr.slots[end]][None], min_joints)[0, 0]
                d = d if np.isfinite(d) else 1e9  # no common joint: still joinable, as a last resort
                if d < best_d:
                    best, best_d = idn, d
            if best is None:
                dropped.append(tr)
                continue
            pairs = sorted(zip(best.frames + tr.frames, best.slots + tr.slots))
            best.frames, best.slots = [f for f, _ in pairs], [k for _, k in pairs]
            joined += 1
        long_enough = keep
    long_enough.sort(key=lambda tr: tr.frames[0])
    slot = np.full((T, len(long_enough)), -1, dtype=np.int64)
    for m, tr in enumerate(long_enough):
        slot[tr.frames, m] = tr.slots
    dropped_people = sum(len(tr.frames) for tr in dropped)
    if dropped:
        log.info("tracking: dropped %d track(s) (%d per-frame people)", len(dropped), dropped_people)
    return Tracks(slot, started, len(dropped), dropped_people, joined)


def identity_switches(labels: np.ndarray) -> int:
    """Identity switches of tracks against ground truth: for every track, the number of times the true person
    it follows changes between two consecutive frames where it is seen (MOT-style count).

    Args:
        labels: (T, M) int, the true person of each track per frame, negative where unknown or unseen.
    """
    labels = np.asarray(labels)
    switches = 0
    for m in range(labels.shape[1]):
        seq = labels[:, m][labels[:, m] >= 0]
        switches += int((seq[1:] != seq[:-1]).sum())
    return switches
