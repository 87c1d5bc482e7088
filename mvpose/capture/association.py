"""Group the detections of all views into people, frame by frame (several people in one capture).

This generalises the single-subject choice of :mod:`mvpose.capture.people` to a matching. Every pair of
detections in two different views is a hypothesis: its joints are triangulated (confidence-weighted DLT on the
two views) and reprojected into every view, and each view's detections are scored by their median joint
distance (pixels, after undistortion) to that reprojection. People are then taken greedily: the hypothesis
with the smallest total capped disagreement (every view costs at most ``threshold_px``, so a hypothesis that
more views agree with wins) becomes a person, with, in every view, the nearest still-free detection that
agrees with it (median distance at most ``threshold_px``); its detections are removed and the next person is
taken from the remaining ones, until ``max_people`` are found or no hypothesis is left with two agreeing
views. Detections that end up in no person (a bystander seen in one view only, a false positive, a person
past ``max_people``) are left out and counted.

The affinity is a reprojection distance in pixels, the quantity the robust triangulation thresholds later.
Pose2Sim (``Pose2Sim/personAssociation.py``) measures the distance between the 3D rays of the keypoints and
matches with EasyMocap's low-rank ``matchSVT``; the greedy choice here needs no iteration and is vectorised
over frames, and the per-frame people are linked over time by :mod:`mvpose.capture.tracking`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from mvpose.geometry.camera import Cameras
from mvpose.geometry.triangulation import triangulate

__all__ = ["Association", "associate_people", "hypothesis_scores"]

# A detection needs this many confident joints to be compared with a hypothesis.
MIN_JOINTS = 3


def _pair_hypotheses(V: int, P: int, device) -> tuple[torch.Tensor, ...]:
    """All (view a, person p, view b, person q) with a < b, as four (H,) index tensors."""
    rows = [(a, p, b, q) for a, b in itertools.combinations(range(V), 2) for p in range(P) for q in range(P)]
    if not rows:
        return tuple(torch.zeros(0, dtype=torch.long, device=device) for _ in range(4))
    return tuple(torch.tensor(c, dtype=torch.long, device=device) for c in zip(*rows))


def _fundamental_matrices(cameras: Cameras, va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) fundamental matrices ``F`` with ``x_b^T F x_a = 0`` for ideal pinhole pixels of views va, vb."""
    R_ab = cameras.R[vb] @ cameras.R[va].transpose(-1, -2)
    t_ab = cameras.t[vb] - (R_ab @ cameras.t[va].unsqueeze(-1)).squeeze(-1)
    zero = torch.zeros_like(t_ab[..., 0])
    tx = torch.stack([zero, -t_ab[..., 2], t_ab[..., 1], t_ab[..., 2], zero, -t_ab[..., 0],
                      -t_ab[..., 1], t_ab[..., 0], zero], dim=-1).reshape(-1, 3, 3)
    return torch.linalg.inv(cameras.K[vb]).transpose(-1, -2) @ tx @ R_ab @ torch.linalg.inv(cameras.K[va])


def _epipolar_distances(xy: torch.Tensor, ok: torch.Tensor, cameras: Cameras, va: torch.Tensor,
                        vb: torch.Tensor) -> torch.Tensor:
    """Median symmetric point-to-epipolar-line distance (px) of every detection pair of views ``va[i], vb[i]``.

    ``xy`` (N, V, P, J, 2) ideal pinhole pixels, ``ok`` (N, V, P, J). Returns (N, n, P, P), ``inf`` where fewer
    than :data:`MIN_JOINTS` joints are seen in both.
    """
    F = _fundamental_matrices(cameras, va, vb)  # (n, 3, 3)
    h = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)  # (N, V, P, J, 3)
    xa, xb = h[:, va], h[:, vb]  # (N, n, P, J, 3)
    line_b = torch.einsum("kij,nkpcj->nkpci", F, xa)  # epipolar lines in view b of view a's points
    line_a = torch.einsum("kji,nkpcj->nkpci", F, xb)  # and in view a of view b's points
    num = torch.einsum("nkpci,nkqci->nkpqc", line_b, xb).abs()  # (N, n, P, P, J) = |x_b^T F x_a|
    d = 0.5 * (num / line_b[..., :2].norm(dim=-1).unsqueeze(3) + num / line_a[..., :2].norm(dim=-1).unsqueeze(2))
    both = ok[:, va].unsqueeze(3) & ok[:, vb].unsqueeze(2) & d.isfinite()
    med = torch.where(both, d, torch.full((), math.nan, dtype=d.dtype)).nanmedian(dim=-1).values
    return torch.where(both.sum(dim=-1) >= MIN_JOINTS, med, torch.full((), math.inf, dtype=d.dtype))


def hypothesis_scores(
    people: torch.Tensor, cameras: Cameras, min_confidence: float, prefilter_px: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Score every detection of a frame against every two-view hypothesis of that frame.

    Args:
        people: (N, V, P, J, 3) detections ``(x, y, confidence)`` of N frames (raw, distorted pixels), NaN or
            confidence 0 where missing.
        cameras: rig ``(V,)`` in the dtype of ``people``.
        min_confidence: joints below it are neither triangulated nor compared.
        prefilter_px: only pairs whose median symmetric epipolar distance is at most this are triangulated
            (a pair of one person's detections is near its epipolar lines whatever the depth); None: all.

    Returns:
        score: (N, H, V, P) median pixel distance between detection ``(v, p)`` and hypothesis ``h`` reprojected
            into view ``v`` (undistorted pixels); ``inf`` where fewer than 3 joints can be compared or the pair
            was filtered out.
        usable: (N, H) bool, hypotheses that triangulate at least 3 joints from two real detections.
        pairs: the four (H,) index tensors ``(view a, detection p, view b, detection q)``, ``a < b``, ordered
            by view pair, then ``p``, then ``q``.
    """
    N, V, P, J, _ = people.shape
    conf = people[..., 2]
    # Undistort every detection once; hypotheses are then solved and compared in ideal pinhole pixels.
    xy = cameras.undistort_pixels(people[..., :2].transpose(1, 0).reshape(V, N * P * J, 2))
    xy = xy.reshape(V, N, P, J, 2).transpose(1, 0)
    ok = (conf >= min_confidence) & xy.isfinite().all(dim=-1)  # (N, V, P, J)
    va, pa, vb, pb = pairs = _pair_hypotheses(V, P, people.device)
    H = va.numel()
    keep = ok[:, va, pa].any(dim=-1) & ok[:, vb, pb].any(dim=-1)  # (N, H)
    if prefilter_px is not None and H:
        views = torch.tensor(list(itertools.combinations(range(V), 2)), dtype=torch.long, device=people.device)
        epi = _epipolar_distances(xy, ok, cameras, views[:, 0], views[:, 1])  # (N, V(V-1)/2, P, P)
        keep &= epi.reshape(N, H) <= prefilter_px
    n, h = keep.nonzero(as_tuple=True)
    ha, hb = va[h], vb[h]
    # Points (M, V, J, 2): only views a and b carry the hypothesis' two detections.
    onehot_a = torch.nn.functional.one_hot(ha, V).to(torch.bool)  # (M, V)
    onehot_b = torch.nn.functional.one_hot(hb, V).to(torch.bool)
    sel_a, sel_b = xy[n, ha, pa[h]], xy[n, hb, pb[h]]  # (M, J, 2)
    pts = torch.where(onehot_a[:, :, None, None], sel_a.unsqueeze(1), sel_b.unsqueeze(1))
    cw = conf * ok
    w_a, w_b = cw[n, ha, pa[h]], cw[n, hb, pb[h]]  # (M, J)
    w = torch.where(onehot_a[:, :, None], w_a.unsqueeze(1), w_b.unsqueeze(1)) * (onehot_a | onehot_b)[:, :, None]
    pts = torch.where(w.unsqueeze(-1) > 0, pts, torch.full((), math.nan, dtype=pts.dtype))
    X = triangulate(pts, cameras, w, undistort=False, reweight=False).points3d  # (M, J, 3)
    proj = cameras.project(X.unsqueeze(-3), distort=False)  # (M, V, J, 2)
    dist = (proj.unsqueeze(2) - xy[n]).norm(dim=-1)  # (M, V, P, J)
    valid = ok[n] & dist.isfinite()
    med = torch.where(valid, dist, torch.full((), math.nan, dtype=dist.dtype)).nanmedian(dim=-1).values
    med = torch.where(valid.sum(dim=-1) >= MIN_JOINTS, med, torch.full((), math.inf, dtype=dist.dtype))
    score = torch.full((N, H, V, P), math.inf, dtype=xy.dtype, device=people.device)
    score[n, h] = med
    usable = torch.zeros((N, H), dtype=torch.bool, device=people.device)
    usable[n, h] = X.isfinite().all(dim=-1).sum(dim=-1) >= MIN_JOINTS
    return score, usable, pairs


def _undistorted(people: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """(T, V, P, J, 3) detections with the lens distortion removed from the finite keypoints of each view."""
    out = people.clone()
    for v in range(people.shape[1]):
        xy = people[:, v, ..., :2]
        seen = xy.isfinite().all(dim=-1)
        if seen.any():
            out[:, v, ..., :2][seen] = cameras[v].undistort_pixels(xy[seen])
    return out


def _associate_chunk(
    people: torch.Tensor, cameras: Cameras, max_people: int, min_confidence: float, threshold_px: float
) -> torch.Tensor:
    """(N, V, P, J, 3) detections -> (N, max_people, V) detection index per person and view, -1 where none."""
    N, V, P, J, _ = people.shape
    score, usable, (va, pa, vb, pb) = hypothesis_scores(people, cameras, min_confidence, threshold_px)
    free = (people[..., 2] > 0).any(dim=-1)  # (N, V, P) detections not yet given to a person
    rows = torch.arange(N, device=people.device)
    inf = torch.full((), math.inf, dtype=score.dtype)
    groups = torch.full((N, max_people, V), -1, dtype=torch.long, device=people.device)
    for k in range(max_people):
        s = torch.where(free.unsqueeze(1), score, inf)  # (N, H, V, P)
        best_score, best = s.min(dim=-1)  # (N, H, V)
        agrees = best_score <= threshold_px
        # A hypothesis rests on two free detections, both agreeing with it, and two agreeing views at least.
        alive = usable & free[:, va, pa] & free[:, vb, pb] & (agrees.sum(dim=-1) >= 2)
        alive &= agrees.gather(2, va.expand(N, -1).unsqueeze(-1)).squeeze(-1)
        alive &= agrees.gather(2, vb.expand(N, -1).unsqueeze(-1)).squeeze(-1)
        cost = torch.where(alive, best_score.clamp(max=threshold_px).sum(dim=-1), inf)  # (N, H)
        c, h = cost.min(dim=1)
        found = c.isfinite()
        if not found.any():
            break
        chosen = torch.where(agrees[rows, h] & found.unsqueeze(-1), best[rows, h], torch.full_like(best[rows, h], -1))
        groups[:, k] = chosen
        taken = torch.nn.functional.one_hot(chosen.clamp(min=0), P).to(torch.bool) & (chosen >= 0).unsqueeze(-1)
        free &= ~taken
    return groups


@dataclass
class Association:
    """People found in every frame.

    Attributes:
        groups: (T, K, V) int64 index of each person's detection per view (into the P axis of the input),
            -1 where that view has none; K is the largest number of people found in a frame, people fill the
            K slots from the first, best-agreeing first, and carry no identity from frame to frame.
        unassigned: (T, V) int64 detections of each frame and view that fit no person.
    """

    groups: torch.Tensor
    unassigned: torch.Tensor

    @property
    def people_per_frame(self) -> torch.Tensor:
        """(T,) number of people found in each frame."""
        return (self.groups >= 0).any(dim=-1).sum(dim=-1)


def associate_people(
    people: torch.Tensor,
    cameras: Cameras,
    *,
    max_people: int | None = None,
    min_confidence: float = 0.3,
    threshold_px: float = 50.0,
    chunk: int = 512,
) -> Association:
    """Group each frame's detections of all views into people (see the module doc).

    Args:
        people: (T, V, P, J, 3) detections ``(x, y, confidence)`` in any order, NaN / confidence 0 where
            missing.
        cameras: rig with batch shape ``(V,)``.
        max_people: most people per frame; None: as many as the detections support.
        min_confidence: joints below it are not compared.
        threshold_px: median joint distance (pixels) above which a detection does not agree with a person.
        chunk: most frames per batch (smaller when there are many hypotheses).

    Returns:
        :class:`Association` (on the device of ``people``; scores are computed in float32).

    Raises:
        ValueError: ``people`` is not (T, V, P, J, 3), or ``max_people`` < 1.
    """
    if people.ndim != 5 or people.shape[-1] != 3:
        raise ValueError(f"associate_people: expected detections (T, V, P, J, 3), got shape {tuple(people.shape)}")
    if max_people is not None and max_people < 1:
        raise ValueError(f"associate_people: max_people must be >= 1 or None (automatic), got {max_people}")
    T, V, P, J, _ = people.shape
    bound = V * P // 2 if max_people is None else max_people
    bound = max(1, min(bound, V * P // 2 if V * P >= 2 else 1))
    # Scores are computed in float32: an affinity needs pixel precision, and it halves the time.
    people = people.to(torch.float32)
    cams = cameras.to(dtype=torch.float32)
    present = (people[..., 2] > 0).any(dim=-1)  # (T, V, P)
    # Undistort the seen keypoints once; the chunks then work on an ideal pinhole rig (no distortion to remove).
    people = _undistorted(people, cams)
    cams = Cameras(cams.K, cams.R, cams.t, torch.zeros_like(cams.dist), cams.image_size, list(cams.names))
    groups = torch.full((T, bound, V), -1, dtype=torch.long, device=people.device)
    # Pairs far from each other's epipolar lines are dropped before triangulating, so the largest
    # intermediates are the (chunk, hypotheses, V, P) scores and the (chunk, V(V-1)/2, P, P, J) distances.
    hypotheses = max(1, V * (V - 1) // 2 * P * P)
    chunk = max(1, min(chunk, 4_000_000 // (hypotheses * V * P * J)))
    # Frames with detections in at least two views can hold a person.
    busy = ((present.any(dim=-1)).sum(dim=-1) >= 2).nonzero().squeeze(-1)
    for start in range(0, busy.numel(), chunk):
        idx = busy[start:start + chunk]
        groups[idx] = _associate_chunk(people[idx], cams, bound, min_confidence, threshold_px)
    K = int((groups >= 0).any(dim=-1).any(dim=0).sum()) if T else 0
    K = max(K, 1)
    groups = groups[:, :K]
    assigned = torch.zeros_like(present)
    t, k, v = (groups >= 0).nonzero(as_tuple=True)
    assigned[t, v, groups[t, k, v]] = True
    unassigned = (present & ~assigned).sum(dim=-1)
    return Association(groups, unassigned)
