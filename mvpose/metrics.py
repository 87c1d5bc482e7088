"""Pose metrics: MPJPE (overall, per joint, per action), PA-MPJPE, JDR, PCKh, COCO keypoint AP/AR.

All functions accept numpy arrays or torch tensors (detached, moved to CPU, computed in
float64) and return Python floats or numpy arrays. Leading batch dimensions are free:
``(N, J, 3)`` and ``(N, V, J, 3)`` both work wherever ``(..., J, D)`` is written.

``valid`` / ``vis`` masks are boolean (or numeric, ``> 0`` counts) and broadcast against the
points without their coordinate axis, i.e. to ``(..., J)``.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any, Sequence

import numpy as np

from mvpose.skeletons import H36M_ACTIONS

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

__all__ = [
    "mpjpe",
    "per_joint_mpjpe",
    "mpjpe_per_action",
    "procrustes_align",
    "pa_mpjpe",
    "jdr",
    "pckh",
    "summarize_errors",
    "COCO_STATS",
    "coco_keypoint_ap",
]

logger = logging.getLogger(__name__)

_ACTION_IDS = {name: action_id for action_id, name in H36M_ACTIONS.items()}


def _to_numpy(x: Any) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(pred: Any, gt: Any, fn: str) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _to_numpy(pred), _to_numpy(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"{fn}: pred and gt must have the same shape, got {pred.shape} and {gt.shape}"
        )
    if pred.ndim < 2:
        raise ValueError(f"{fn}: points must have shape (..., J, D), got {pred.shape}")
    return pred, gt


def _mask(mask: Any, shape: tuple[int, ...], fn: str, name: str) -> np.ndarray:
    """Boolean mask broadcast to ``shape`` (the points' shape without the coordinate axis)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = _to_numpy(mask) > 0
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(
            f"{fn}: {name} of shape {mask.shape} does not broadcast to {shape}"
        ) from None


def _check_finite(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, fn: str) -> None:
    for name, arr in (("pred", pred), ("gt", gt)):
        bad = ~np.isfinite(arr).all(axis=-1) & valid
        if bad.any():
            raise ValueError(
                f"{fn}: {name} has {int(bad.sum())} non-finite (NaN/inf) joints among those "
                f"counted; pass valid=... to exclude missing joints"
            )


def _joint_errors(pred: Any, gt: Any, valid: Any, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean error per joint (..., J), zero where not valid, and the valid mask (..., J)."""
    pred, gt = _pair(pred, gt, fn)
    mask = _mask(valid, pred.shape[:-1], fn, "valid")
    _check_finite(pred, gt, mask, fn)
    err = np.linalg.norm(np.where(mask[..., None], pred - gt, 0.0), axis=-1)
    return err, mask


def mpjpe(pred: Any, gt: Any, valid: Any = None) -> float:
    """Mean per-joint position error over all valid joints of all samples.

    Args:
        pred, gt: (..., J, 3) in millimetres.
        valid: optional (..., J) mask; excluded joints may hold NaN.
    """
    err, mask = _joint_errors(pred, gt, valid, "mpjpe")
    count = int(mask.sum())
    if count == 0:
        raise ValueError("mpjpe: no valid joints to average")
    return float(err.sum() / count)


def per_joint_mpjpe(pred: Any, gt: Any, valid: Any = None) -> np.ndarray:
    """MPJPE of each joint, (J,); NaN for a joint that is valid in no sample.

    Args:
        pred, gt: (..., J, 3) in millimetres.
        valid: optional (..., J) mask.
    """
    err, mask = _joint_errors(pred, gt, valid, "per_joint_mpjpe")
    joints = err.shape[-1]
    total = err.reshape(-1, joints).sum(axis=0)
    count = mask.reshape(-1, joints).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _action_names(actions: Any, n: int) -> list[str]:
    if torch is not None and isinstance(actions, torch.Tensor):
        actions = actions.detach().cpu().reshape(-1).tolist()
    elif isinstance(actions, np.ndarray):
        actions = actions.reshape(-1).tolist()
    else:
        actions = list(actions)  # a mixed list must not be coerced to one dtype
    if len(actions) != n:
        raise ValueError(
            f"mpjpe_per_action: actions must have one entry per sample ({n}), got {len(actions)}"
        )
    names = []
    for a in actions:
        if isinstance(a, str) and a in _ACTION_IDS:
            names.append(a)
        elif (
            isinstance(a, numbers.Real) and not isinstance(a, bool)
            and float(a).is_integer() and int(a) in H36M_ACTIONS
        ):
            names.append(H36M_ACTIONS[int(a)])
        else:
            raise ValueError(
                f"mpjpe_per_action: unknown action {a!r}; expected ids 2..16 or names "
                f"{', '.join(H36M_ACTIONS.values())}"
            )
    return names


def mpjpe_per_action(pred: Any, gt: Any, actions: Any, valid: Any = None) -> dict[str, float]:
    """MPJPE of each Human3.6M action, in the dataset's action order (only actions present).

    Args:
        pred, gt: (N, ..., J, 3) in millimetres.
        actions: (N,) action ids 2..16 or action names.
        valid: optional (N, ..., J) mask.

    An action whose samples have no valid joint gets NaN (and a warning).
    """
    err, mask = _joint_errors(pred, gt, valid, "mpjpe_per_action")
    names = np.array(_action_names(actions, err.shape[0]))
    total = err.reshape(err.shape[0], -1).sum(axis=1)
    count = mask.reshape(mask.shape[0], -1).sum(axis=1)
    result: dict[str, float] = {}
    for name in H36M_ACTIONS.values():
        sel = names == name
        if not sel.any():
            continue
        n = int(count[sel].sum())
        if n == 0:
            logger.warning("mpjpe_per_action: action %s has no valid joints", name)
        result[name] = float(total[sel].sum() / n) if n else float("nan")
    return result


def procrustes_align(pred: Any, gt: Any, valid: Any = None) -> np.ndarray:
    """Similarity transform of each ``pred`` onto its ``gt`` (least squares, Umeyama 1991).

    Scale, proper rotation (a reflection is never used) and translation are fitted per sample
    on the valid joints, then applied to all joints.

    Args:
        pred, gt: (..., J, D), usually D = 3.
        valid: optional (..., J) mask of joints used for the fit.

    Returns:
        aligned: (..., J, D) float64.
    """
    pred, gt = _pair(pred, gt, "procrustes_align")
    mask = _mask(valid, pred.shape[:-1], "procrustes_align", "valid")
    _check_finite(pred, gt, mask, "procrustes_align")
    w = mask[..., None].astype(np.float64)
    x, y = np.where(mask[..., None], pred, 0.0), np.where(mask[..., None], gt, 0.0)
    n = np.maximum(w.sum(axis=-2, keepdims=True), 1.0)
    mu_x, mu_y = x.sum(axis=-2, keepdims=True) / n, y.sum(axis=-2, keepdims=True) / n
    xc, yc = (x - mu_x) * w, (y - mu_y) * w
    cov = np.swapaxes(yc, -1, -2) @ xc  # (..., D, D), proportional to Sigma_yx
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    # Flip the weakest singular direction when the best orthogonal map would be a reflection.
    signs = np.ones(s.shape)
    signs[..., -1] = d
    rot = (u * signs[..., None, :]) @ vt
    var_x = (xc**2).sum(axis=(-1, -2))
    scale = np.divide((s * signs).sum(axis=-1), var_x, out=np.zeros_like(var_x), where=var_x > 0)
    return scale[..., None, None] * (pred - mu_x) @ np.swapaxes(rot, -1, -2) + mu_y


def pa_mpjpe(pred: Any, gt: Any, valid: Any = None) -> float:
    """MPJPE after :func:`procrustes_align`; pred, gt (..., J, 3) mm, valid optional (..., J)."""
    pred, gt = _pair(pred, gt, "pa_mpjpe")
    _check_finite(pred, gt, _mask(valid, pred.shape[:-1], "pa_mpjpe", "valid"), "pa_mpjpe")
    return mpjpe(procrustes_align(pred, gt, valid), gt, valid)


def _rate(hit: np.ndarray, counted: np.ndarray) -> tuple[float, np.ndarray]:
    joints = hit.shape[-1]
    hits = (hit & counted).reshape(-1, joints).sum(axis=0)
    count = counted.reshape(-1, joints).sum(axis=0)
    overall = float(hits.sum() / count.sum()) if count.sum() else float("nan")
    per_joint = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    return overall, per_joint


def _points2d(
    pred2d: Any, gt2d: Any, vis: Any, fn: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, gt = _pair(pred2d, gt2d, fn)
    if pred.shape[-1] < 2:
        raise ValueError(f"{fn}: 2D points need at least 2 coordinates, got shape {pred.shape}")
    pred, gt = pred[..., :2], gt[..., :2]  # a trailing confidence channel is ignored
    if vis is not None:
        vis = _to_numpy(vis)
        if vis.ndim == pred.ndim:  # H36M-style joints_vis (..., J, 3): same flag per coordinate
            vis = vis[..., 0]
    counted = _mask(vis, pred.shape[:-1], fn, "vis")
    bad = ~np.isfinite(gt).all(axis=-1) & counted
    if bad.any():
        raise ValueError(f"{fn}: gt has {int(bad.sum())} non-finite joints among the visible ones")
    return pred, gt, counted


def jdr(
    pred2d: Any,
    gt2d: Any,
    vis: Any = None,
    threshold: float | None = None,
    head_size: float = 25.6,
    factor: float = 0.5,
) -> tuple[float, np.ndarray]:
    """Joint detection rate: share of joints within ``threshold`` pixels of the ground truth.

    The Cross-View-Fusion / PPT convention is ``threshold = factor * head_size`` with
    ``head_size = 256 / 10`` and ``factor = 0.5``, distance ``<=`` threshold counting as detected.
    A NaN prediction counts as a miss.

    Args:
        pred2d, gt2d: (..., [V,] J, 2) pixels (extra channels such as confidence are ignored).
        vis: optional (..., J) visibility (or (..., J, k), first channel used); only visible
            joints count.
        threshold: pixels; overrides ``factor * head_size``.

    Returns:
        overall: detected / counted over all joints.
        per_joint: (J,) rate per joint, NaN for a joint never counted.
    """
    pred, gt, counted = _points2d(pred2d, gt2d, vis, "jdr")
    if threshold is None:
        threshold = factor * head_size
    dist = np.linalg.norm(pred - gt, axis=-1)
    with np.errstate(invalid="ignore"):
        hit = dist <= threshold
    return _rate(hit, counted)


def pckh(
    pred2d: Any, gt2d: Any, head_sizes: Any, vis: Any = None, alpha: float = 0.5
) -> tuple[float, np.ndarray]:
    """PCKh (MPII style): a joint is correct when its error is ``<= alpha * head_size``.

    Args:
        pred2d, gt2d: (N, ..., J, 2) pixels.
        head_sizes: (N,) or (N, ...) head segment length per person, pixels, > 0.
        vis: optional (N, ..., J) visibility; only visible joints count.

    Returns:
        overall: correct / counted over all joints; per_joint: (J,), NaN where never counted.
    """
    pred, gt, counted = _points2d(pred2d, gt2d, vis, "pckh")
    heads = _to_numpy(head_sizes)
    batch = pred.shape[:-2]
    heads = heads.reshape(heads.shape + (1,) * (len(batch) - heads.ndim))
    try:
        heads = np.broadcast_to(heads, batch)
    except ValueError:
        raise ValueError(
            f"pckh: head_sizes of shape {heads.shape} does not match points {pred.shape}"
        ) from None
    if not (np.isfinite(heads) & (heads > 0)).all():
        raise ValueError(f"pckh: head_sizes must be finite and > 0, got min {np.nanmin(heads)}")
    dist = np.linalg.norm(pred - gt, axis=-1) / heads[..., None]
    with np.errstate(invalid="ignore"):
        hit = dist <= alpha
    return _rate(hit, counted)


def summarize_errors(values: Any | Sequence[float]) -> dict[str, float]:
    """Mean, median and 90th percentile (linear interpolation) of ``values``, NaN ignored.

    Returns ``{"mean", "median", "p90", "count"}``; statistics are NaN when ``count`` is 0.
    """
    arr = _to_numpy(values).reshape(-1)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "p90": float("nan"), "count": 0}
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "p90": float(np.percentile(arr, 90)),
        "count": int(arr.size),
    }


# The order of ``COCOeval.stats`` for ``iouType="keypoints"``.
COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def coco_keypoint_ap(coco_gt: Any, results: Sequence[dict], image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCO keypoint AP / AR (OKS) through pycocotools' ``COCOeval(iouType="keypoints")``.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` of the ground truth.
        results: COCO keypoint results, one dict per person: ``image_id``, ``category_id``,
            ``keypoints`` (51 numbers, x y score per joint, original pixels) and ``score``.
        image_ids: images to evaluate (default: every image of ``coco_gt``). Ground-truth people
            in these images without a result count as misses.

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` in [0, 1]
        (-1 where pycocotools has nothing to average, e.g. no medium-sized people).
    """
    import contextlib
    import copy
    import io

    from pycocotools.cocoeval import COCOeval

    if not results:
        raise ValueError("coco_keypoint_ap: no results to evaluate")
    known = set(coco_gt.getImgIds())
    unknown = sorted({int(r["image_id"]) for r in results} - known)
    if unknown:
        raise ValueError(f"coco_keypoint_ap: results name image ids not in the ground truth, e.g. {unknown[:5]}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # pycocotools reports its progress on stdout
        # loadRes adds fields to the dicts it gets; the caller's results stay as they were.
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        if image_ids is not None:
            ev.params.imgIds = sorted({int(i) for i in image_ids})
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    logger.debug("COCOeval:\n%s", buf.getvalue())
    return {name: float(v) for name, v in zip(COCO_STATS, ev.stats)}
