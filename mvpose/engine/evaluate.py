"""Evaluation: heatmaps -> 2D joints (JDR on the original images) -> confidence-weighted DLT -> MPJPE.

The same path serves multi-view models (which fuse the views) and single-view models (run on every
view independently), so baselines and multi-view PPT are compared on identical data and metrics.

Data without 3D ground truth (COCO) stops after the 2D joints: no triangulation, no MPJPE in the
report; COCO data gets keypoint AP / AR through pycocotools instead (:func:`coco_results`,
:func:`evaluate_coco`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mvpose import metrics
from mvpose.data.dataset import sample_cameras
from mvpose.engine.checkpoint import atomic_write_text
from mvpose.engine.decode import crop_to_original
from mvpose.engine.distributed import unwrap
from mvpose.geometry.triangulation import triangulate
from mvpose.skeletons import H36M_ACTIONS, get_skeleton

log = logging.getLogger(__name__)


def is_multiview(model: torch.nn.Module) -> bool:
    """Multi-view models take (B, V, 3, H, W) images and world rays; single-view ones (B, 3, H, W)."""
    return unwrap(model).multiview


def forward_views(model: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Run a model on a multi-view batch; returns ``heatmaps (B, V, J, h, w)`` and ``kept_indices``.

    Single-view models see the B x V crops as one batch, so views never interact.
    """
    images = batch["image"].to(device, non_blocking=True)
    B, V = images.shape[:2]
    if is_multiview(model):
        view_mask = batch.get("view_mask")
        out = model(
            images,
            rays=batch["rays"].to(device, non_blocking=True).to(images.dtype),
            view_mask=None if view_mask is None else view_mask.to(device),
        )
        return out
    out = model(images.flatten(0, 1))
    # Every per-crop tensor output (heatmaps, SimCC vectors, keypoints, ...) gets its view axis back.
    return {
        k: v.unflatten(0, (B, V)) if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == B * V else v
        for k, v in out.items()
    }


def output_kind(model: torch.nn.Module) -> str:
    """``"heatmap"`` for heatmap models, ``"simcc"`` for SimCC models (HRPVT)."""
    return unwrap(model).output_kind


def flip_test_output(
    model: torch.nn.Module, batch: dict[str, Any], device: torch.device, out: dict[str, torch.Tensor], flip_index: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Average ``out["heatmaps"]`` with the heatmaps of the horizontally flipped crops (flip test).

    With the UDP pixel convention a crop flip is ``x -> (W - 1) - x`` and maps heatmap columns onto
    heatmap columns exactly, so the flipped maps need no one-pixel shift (HRNet's correction for
    the biased convention); only left and right joints swap channels (``flip_index``).
    """
    if is_multiview(model):
        raise ValueError("flip test: only for single-view models (a flipped crop no longer fits the views' rays)")
    if "heatmaps" not in out:
        raise ValueError(f"flip test: needs a heatmap model; this model gives {sorted(out)}")
    flipped = forward_views(model, {**batch, "image": batch["image"].flip(-1)}, device)["heatmaps"]
    index = torch.as_tensor(list(flip_index), device=flipped.device)
    return {**out, "heatmaps": 0.5 * (out["heatmaps"] + flipped.flip(-1).index_select(-3, index).to(out["heatmaps"].dtype))}


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    decode: str = "udp",
    min_confidence: float = 0.0,
    progress: bool = True,
    flip_index: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Run a model over a loader and collect 2D and 3D predictions with the ground truth.

    Args:
        flip_index: the skeleton's flip permutation to run the flip test with (heatmap models only);
            None: no flip test.

    Returns arrays: ``pred2d (N, V, J, 2)`` original pixels, ``conf (N, V, J)``, ``gt2d``, ``vis (N, V, J)``,
    ``action (N,)``, ``subaction (N,)`` (Ski-Pose: the sequence), ``subject (N,)``; with 3D ground truth ``pred3d (N, J, 3)`` world mm, ``gt3d``,
    ``reproj (N, V, J)``; the reader's ids ``image_id`` / ``annotation_id`` ``(N,)`` where given (COCO).
    """
    model.eval()
    keys = ["pred2d", "conf", "gt2d", "vis", "action", "subaction", "subject"]
    acc: dict[str, list] = {}
    has_3d = None
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        out = forward_views(model, batch, device)
        if flip_index is not None:
            out = flip_test_output(model, batch, device, out, flip_index)
        H, W = batch["image"].shape[-2:]
        crop_xy, conf = unwrap(model).predict(out, (H, W), decode)
        batch_3d = bool(batch["has_3d"].all()) if "has_3d" in batch else True
        if has_3d is None:
            has_3d = batch_3d
            keys += (["pred3d", "gt3d", "reproj"] if has_3d else []) + [k for k in ("image_id", "annotation_id") if k in batch]
            acc = {k: [] for k in keys}
        elif batch_3d != has_3d:
            raise ValueError("evaluation set mixes samples with and without 3D ground truth")
        acc["pred2d"].append(crop_to_original(crop_xy.double(), batch["affine"].double()).numpy())
        acc["conf"].append(conf.numpy())
        acc["gt2d"].append(batch["joints_2d"].double().numpy())
        acc["vis"].append(batch["joints_vis"].numpy().astype(bool))
        acc["action"].append(np.asarray(batch["action"]).reshape(-1))
        acc["subaction"].append(np.asarray(batch["subaction"]).reshape(-1))
        acc["subject"].append(np.asarray(batch["subject"]).reshape(-1))
        for key in ("image_id", "annotation_id"):
            if key in acc:
                acc[key].append(batch[key].numpy().reshape(-1))
        if has_3d:
            weights = torch.where(conf >= min_confidence, conf.clamp_min(0), torch.zeros_like(conf))
            tri = triangulate(crop_xy.double(), sample_cameras(batch).to(dtype=torch.float64), weights.double())
            acc["pred3d"].append(tri.points3d.numpy())
            acc["gt3d"].append(batch["joints_3d"].double().numpy())
            acc["reproj"].append(tri.reprojection_error.numpy())
    if not acc or not acc["pred2d"]:
        raise ValueError("evaluation set is empty: no samples to evaluate")
    return {k: np.concatenate(v) for k, v in acc.items()}


NO_3D_NOTE = "no 3D ground truth in this dataset: MPJPE / PA-MPJPE not computed (null); JDR counts labelled joints only"


BREAKDOWNS = ("action", "sequence", None)


def breakdown_of(dataset: Any) -> str | None:
    """How a dataset's MPJPE is broken down: ``"action"`` (Human3.6M), ``"sequence"`` (Ski-Pose) or None.

    Read from the reader's ``breakdown`` attribute (a single-view wrapper passes it through).
    """
    value = dataset.breakdown
    if value not in BREAKDOWNS:
        raise ValueError(f"dataset {type(dataset).__name__}: breakdown {value!r} is not one of {BREAKDOWNS}")
    return value


def mpjpe_breakdown(pred: dict[str, np.ndarray], valid: np.ndarray, breakdown: str | None) -> dict[str, dict[str, float]]:
    """``{"per_action": ...}`` (Human3.6M action names), ``{"per_sequence": ...}`` (``seq_NNN``) or ``{}``."""
    if breakdown is None:
        return {}
    if breakdown == "action":
        actions = [H36M_ACTIONS.get(int(a), str(a)) if str(a).lstrip("-").isdigit() else str(a) for a in pred["action"]]
        per = metrics.mpjpe_per_action(pred["pred3d"], pred["gt3d"], actions, valid=valid)
        return {"per_action": {k: float(v) for k, v in per.items()}}
    if breakdown == "sequence":
        seqs = np.asarray(pred["subaction"]).astype(int)
        out = {}
        for seq in sorted(set(seqs.tolist())):
            sel = seqs == seq
            out[f"seq_{seq:03d}"] = float(metrics.mpjpe(pred["pred3d"][sel], pred["gt3d"][sel], valid=valid[sel]))
        return {"per_sequence": out}
    raise ValueError(f"breakdown {breakdown!r}: expected one of {BREAKDOWNS}")


def build_report(pred: dict[str, np.ndarray], joint_names: list[str], jdr_head_size: float = 25.6, jdr_factor: float = 0.5,
                 breakdown: str | None = "action") -> dict[str, Any]:
    """Metrics from :func:`predict` arrays: JDR (overall, per joint, on the joints visible in their view,
    on the joints hidden in their view), MPJPE (overall, per joint, broken down), PA-MPJPE.

    ``jdr.hidden`` is None when no joint is hidden (or without 3D ground truth, where unlabelled
    joints have no position); ``jdr.visible`` counts the joints marked visible (``joints_vis``).

    ``breakdown`` (see :func:`breakdown_of`): ``"action"`` adds ``mpjpe_mm.per_action`` (Human3.6M
    action names), ``"sequence"`` adds ``mpjpe_mm.per_sequence`` (Ski-Pose ``seq_NNN``), None neither.
    ``mpjpe_mm.breakdown`` names which.

    Without 3D ground truth (no ``pred3d``, e.g. COCO) the 3D metrics are None, ``has_3d`` is False
    and ``note`` says so; the JDR then counts labelled joints only (COCO's ``v = 0`` means "not
    labelled" and its (0, 0) is no position).
    """
    has_3d = "pred3d" in pred
    vis = pred["vis"]
    # With motion capture all joints count, hidden ones too, as in the Cross-View-Fusion / PPT
    # evaluation code; the visible-only rate is reported beside it (hidden joints are where fusion
    # should help).
    jdr_all, jdr_joint = metrics.jdr(pred["pred2d"], pred["gt2d"], vis=None if has_3d else vis, head_size=jdr_head_size, factor=jdr_factor)
    jdr_vis, _ = metrics.jdr(pred["pred2d"], pred["gt2d"], vis=vis, head_size=jdr_head_size, factor=jdr_factor)
    jdr_hid = None
    if has_3d and (~vis).any():
        jdr_hid = float(metrics.jdr(pred["pred2d"], pred["gt2d"], vis=~vis, head_size=jdr_head_size, factor=jdr_factor)[0])
    report: dict[str, Any] = {
        "samples": int(len(pred["pred2d"])),
        "views": int(pred["pred2d"].shape[1]),
        "jdr": {
            "overall": float(jdr_all),
            "per_joint": {n: float(v) for n, v in zip(joint_names, jdr_joint)},
            "visible": float(jdr_vis),
            "hidden": jdr_hid,
            "threshold_px": float(jdr_head_size * jdr_factor),
        },
    }
    if not has_3d:
        report.update(mpjpe_mm=None, pa_mpjpe_mm=None, untriangulated_joints=None, reprojection_error_px=None,
                      has_3d=False, note=NO_3D_NOTE)
        return report
    valid3d = np.isfinite(pred["pred3d"]).all(-1)
    n_missing = int((~valid3d).sum())
    if n_missing:
        log.warning("%d of %d joints could not be triangulated (fewer than 2 usable views)", n_missing, valid3d.size)
    if not valid3d.any():
        note = (f"no joint could be triangulated ({n_missing} of {valid3d.size}: fewer than 2 usable views each, e.g. "
                f"confidences below eval.min_confidence or a model that does not fit the data): MPJPE / PA-MPJPE "
                f"not computed (null)")
        log.warning(note)
        report.update(mpjpe_mm=None, pa_mpjpe_mm=None, untriangulated_joints=n_missing, reprojection_error_px=None,
                      has_3d=True, note=note)
        report.setdefault("issues", []).append(note)
        return report
    report.update(
        mpjpe_mm={
            "overall": float(metrics.mpjpe(pred["pred3d"], pred["gt3d"], valid=valid3d)),
            "breakdown": breakdown,
            **mpjpe_breakdown(pred, valid3d, breakdown),
            "per_joint": {n: float(v) for n, v in zip(joint_names, metrics.per_joint_mpjpe(pred["pred3d"], pred["gt3d"], valid=valid3d))},
        },
        pa_mpjpe_mm=float(metrics.pa_mpjpe(np.nan_to_num(pred["pred3d"]), pred["gt3d"], valid=valid3d)),
        untriangulated_joints=n_missing,
        reprojection_error_px=metrics.summarize_errors(pred["reproj"][np.isfinite(pred["reproj"])]),
    )
    return report


def coco_results(pred: dict[str, np.ndarray], min_keypoint_score: float = 0.2, category_id: int = 1) -> list[dict[str, Any]]:
    """COCO keypoint results from :func:`predict` arrays of single-view COCO data.

    One result per person crop (ground-truth boxes, box score 1): ``image_id``, ``category_id``,
    ``keypoints`` (x, y, confidence per joint, original pixels) and ``score`` = the mean confidence
    of the joints above ``min_keypoint_score`` (0 if none), times the box score, the convention of
    the HRNet / TokenPose evaluation code. No OKS-NMS: with ground-truth boxes every crop is a
    different person.
    """
    if "image_id" not in pred:
        raise ValueError("COCO results: the predictions carry no image_id (not COCO data?)")
    if pred["pred2d"].shape[1] != 1:
        raise ValueError(f"COCO results: expected single-view predictions, found {pred['pred2d'].shape[1]} views")
    xy = pred["pred2d"][:, 0]  # (N, J, 2)
    conf = pred["conf"][:, 0].astype(np.float64)  # (N, J)
    confident = conf > min_keypoint_score
    kpt_score = np.where(confident, conf, 0.0).sum(-1) / np.maximum(confident.sum(-1), 1)
    keypoints = np.concatenate([xy, conf[..., None]], axis=-1).reshape(len(xy), -1)
    return [
        {"image_id": int(i), "category_id": int(category_id), "keypoints": [round(float(v), 3) for v in k], "score": float(sc)}
        for i, k, sc in zip(pred["image_id"], keypoints, kpt_score)
    ]


def evaluate_coco(pred: dict[str, np.ndarray], coco_gt: Any, results_path: str | Path) -> dict[str, float]:
    """Write the COCO results JSON to ``results_path`` and score it with pycocotools.

    Only the images with at least one evaluated crop are scored, so a ``frame_stride`` subset is
    scored on its own images (a person of those images left out by the stride counts as missed).

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` (see
        :func:`mvpose.metrics.coco_keypoint_ap`).
    """
    results = coco_results(pred)
    atomic_write_text(results_path, json.dumps(results) + "\n")
    return metrics.coco_keypoint_ap(coco_gt, results, image_ids=np.unique(pred["image_id"]).tolist())


def report_csv(report: dict[str, Any]) -> str:
    """Flat CSV (metric, key, value) of a report, for spreadsheets."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["metric", "key", "value"])
    w.writerow(["jdr", "overall", report["jdr"]["overall"]])
    for key in ("visible", "hidden"):  # joints visible / hidden in their view
        if report["jdr"].get(key) is not None:
            w.writerow(["jdr", key, report["jdr"][key]])
    for k, v in report["jdr"]["per_joint"].items():
        w.writerow(["jdr_per_joint", k, v])
    if report.get("mpjpe_mm") is not None:
        w.writerow(["mpjpe_mm", "overall", report["mpjpe_mm"]["overall"]])
        for group in ("per_action", "per_sequence"):
            for k, v in report["mpjpe_mm"].get(group, {}).items():
                w.writerow([f"mpjpe_{group}_mm", k, v])
        for k, v in report["mpjpe_mm"]["per_joint"].items():
            w.writerow(["mpjpe_per_joint_mm", k, v])
        w.writerow(["pa_mpjpe_mm", "overall", report["pa_mpjpe_mm"]])
    for k, v in (report.get("coco") or {}).items():
        w.writerow(["coco", k, v])
    return buf.getvalue()


def write_report(report: dict[str, Any], out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
    """Write ``stem.json`` and ``stem.csv`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    jpath, cpath = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    atomic_write_text(jpath, json.dumps(report, indent=1) + "\n")
    atomic_write_text(cpath, report_csv(report))
    return jpath, cpath


def dataset_joint_names(dataset_name: str) -> list[str] | None:
    """The joint names of a registered dataset's annotations (None for an unknown name)."""
    if dataset_name == "skipose":
        from mvpose.data.skipose import SKIPOSE_SKELETON

        return list(SKIPOSE_SKELETON.joints)
    try:
        return list(get_skeleton("h36m" if dataset_name in ("h36m", "synth") else dataset_name).joints)
    except KeyError:
        return None


def joint_set_issue(trained_on: str, dataset_name: str, data_joints: list[str]) -> str | None:
    """A sentence when a model trained on ``trained_on`` (a checkpoint's ``dataset.name``, e.g. ``coco`` for
    a converted COCO PPT) predicts other joints than ``dataset_name``'s ``data_joints``, else None: its
    joint k is then compared with another joint k of the data (JDR, MPJPE are not meaningful)."""
    model_joints = dataset_joint_names(trained_on)
    if model_joints is None or model_joints == list(data_joints):
        return None
    diff = [f"{m}/{d}" for m, d in zip(model_joints, data_joints) if m != d][:4]
    return (f"the model was trained on {trained_on} joints ({len(model_joints)}), the {dataset_name} data has other "
            f"joints ({len(data_joints)}; model/data: {', '.join(diff)}, ...): its joint k is compared with the data's "
            f"joint k, so JDR and MPJPE do not measure the model")


def joint_names_for(dataset_name: str, num_joints: int) -> list[str]:
    try:
        names = list(get_skeleton("h36m" if dataset_name in ("h36m", "synth") else dataset_name).joints)
    except KeyError:
        names = []
    return names if len(names) == num_joints else [f"j{i}" for i in range(num_joints)]
