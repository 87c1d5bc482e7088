"""Pick, in every frame, the one detected person whose 2D keypoints agree across views.

Detectors report bystanders, reflections and false positives. For single-person captures the subject is the
person whose detections in the different views triangulate to one consistent 3D skeleton: every pair of
detections in two views is a hypothesis, triangulated and reprojected into every view, and each view keeps
the detection nearest to that reprojection. The hypothesis with the smallest total (capped) disagreement
wins (the scores are :func:`mvpose.capture.association.hypothesis_scores`, which the several-people path
matches greedily instead). This is not multi-person tracking: with two real people in the scene the choice may
change between frames; see :mod:`mvpose.capture.multi`.
"""

from __future__ import annotations

import math

import torch

from mvpose.capture.association import hypothesis_scores
from mvpose.geometry.camera import Cameras

__all__ = ["select_person"]


def _select_chunk(
    people: torch.Tensor, cameras: Cameras, min_confidence: float, threshold_px: float
) -> torch.Tensor:
    """(N, V, P, J, 3) detections -> (N, V) chosen person per view, -1 where none agrees."""
    N = people.shape[0]
    score, usable, _ = hypothesis_scores(people, cameras, min_confidence)  # (N, H, V, P), (N, H)
    best_score, best_person = score.min(dim=-1)  # (N, H, V)
    cost = best_score.clamp(max=threshold_px).sum(dim=-1)  # views without an agreeing person cost the cap
    # A hypothesis must rest on two real detections.
    cost = torch.where(usable, cost, torch.full((), math.inf, dtype=cost.dtype))
    h = cost.argmin(dim=1)  # (N,)
    rows = torch.arange(N, device=people.device)
    chosen = best_person[rows, h]  # (N, V)
    agrees = best_score[rows, h] <= threshold_px
    return torch.where(agrees & cost[rows, h].isfinite().unsqueeze(-1), chosen, torch.full_like(chosen, -1))


def select_person(
    people: torch.Tensor,
    cameras: Cameras,
    *,
    min_confidence: float = 0.3,
    threshold_px: float = 50.0,
    chunk: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One person per frame and view out of several detections.

    Frames where no view has more than one detection keep that detection untouched (the robust triangulation
    deals with a wrong one); the others go through the hypothesis test of the module doc, in chunks.

    Args:
        people: (T, V, P, J, 3) detections ``(x, y, confidence)``, NaN / confidence 0 where missing.
        cameras: rig with batch shape ``(V,)``.
        min_confidence: joints below it are not compared.
        threshold_px: median joint distance above which a view's detection disagrees (the view is dropped for
            that frame when all of its detections disagree).
        chunk: frames per batch.

    Returns:
        keypoints: (T, V, J, 3) the chosen detections (missing where no detection agreed).
        person: (T, V) int64 index of the chosen detection, -1 where none.
    """
    T, V, P, J, _ = people.shape
    present = (people[..., 2] > 0).any(dim=-1)  # (T, V, P)
    # The one detection of a view need not sit in slot 0 (a reader may leave empty slots ahead of it).
    person = torch.where(present.any(dim=-1), present.to(torch.uint8).argmax(dim=-1), -1).to(torch.long)
    crowded = (present.sum(dim=-1) > 1).any(dim=-1).nonzero().squeeze(-1)
    cams = cameras.to(dtype=people.dtype)
    # The largest intermediate is (chunk, hypotheses, V, P, J): keep it near 2M elements.
    hypotheses = V * (V - 1) // 2 * P * P
    chunk = max(1, min(chunk, 2_000_000 // (hypotheses * V * P * J)))
    for start in range(0, crowded.numel(), chunk):
        idx = crowded[start:start + chunk]
        person[idx] = _select_chunk(people[idx], cams, min_confidence, threshold_px)
    gathered = people.gather(2, person.clamp(min=0)[:, :, None, None, None].expand(T, V, 1, J, 3)).squeeze(2)
    missing = torch.tensor([math.nan, math.nan, 0.0], dtype=people.dtype)
    keypoints = torch.where((person >= 0)[:, :, None, None], gathered, missing)
    return keypoints, person
