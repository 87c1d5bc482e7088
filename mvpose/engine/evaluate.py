"""Evaluation: heatmaps -> 2D joints (JDR on the original images) -> confidence-weighted DLT -> MPJPE.

The same path serves multi-view models (which fuse the views) and single-view models (run on every
view independently), so baselines and multi-view PPT are compared on identical data and metrics.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mvpose import metrics
from mvpose.data.dataset import sample_cameras
from mvpose.engine.checkpoint import atomic_write_text
from mvpose.engine.decode import crop_to_original, decode_heatmaps
from mvpose.geometry.triangulation import triangulate
from mvpose.skeletons import H36M_ACTIONS, get_skeleton

log = logging.getLogger(__name__)


def is_multiview(model: torch.nn.Module) -> bool:
    """Multi-view models take (B, V, 3, H, W) images and world rays; single-view ones (B, 3, H, W)."""
    model = getattr(model, "module", model)  # unwrap DDP
    return bool(getattr(model, "multiview", False))


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
    return getattr(getattr(model, "module", model), "output_kind", "heatmap")


def keypoints_from_output(out: dict[str, torch.Tensor], input_hw: tuple[int, int], decode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V, J, 2) crop-pixel joints and (B, V, J) confidences from any model's output."""
    if "heatmaps" in out:
        return decode_heatmaps(out["heatmaps"].float().cpu(), input_hw, method=decode)
    if "keypoints" in out and "confidence" in out:
        return out["keypoints"].float().cpu(), out["confidence"].float().cpu()
    raise ValueError(f"model output has neither heatmaps nor keypoints+confidence (keys: {sorted(out)})")


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    decode: str = "udp",
    min_confidence: float = 0.0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Run a model over a loader and collect 2D and 3D predictions with the ground truth.

    Returns arrays: ``pred2d (N, V, J, 2)`` original pixels, ``conf (N, V, J)``, ``gt2d``, ``vis (N, V, J)``,
    ``pred3d (N, J, 3)`` world mm, ``gt3d``, ``reproj (N, V, J)``, ``action (N,)``, ``subject (N,)``.
    """
    model.eval()
    keys = ("pred2d", "conf", "gt2d", "vis", "pred3d", "gt3d", "reproj", "action", "subject")
    acc: dict[str, list] = {k: [] for k in keys}
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        out = forward_views(model, batch, device)
        H, W = batch["image"].shape[-2:]
        crop_xy, conf = keypoints_from_output(out, (H, W), decode)
        weights = torch.where(conf >= min_confidence, conf.clamp_min(0), torch.zeros_like(conf))
        tri = triangulate(crop_xy.double(), sample_cameras(batch).to(dtype=torch.float64), weights.double())
        acc["pred2d"].append(crop_to_original(crop_xy.double(), batch["affine"].double()).numpy())
        acc["conf"].append(conf.numpy())
        acc["gt2d"].append(batch["joints_2d"].double().numpy())
        acc["vis"].append(batch["joints_vis"].numpy().astype(bool))
        acc["pred3d"].append(tri.points3d.numpy())
        acc["gt3d"].append(batch["joints_3d"].double().numpy())
        acc["reproj"].append(tri.reprojection_error.numpy())
        acc["action"].append(np.asarray(batch["action"]).reshape(-1))
        acc["subject"].append(np.asarray(batch["subject"]).reshape(-1))
    if not acc["pred2d"]:
        raise ValueError("evaluation set is empty: no samples to evaluate")
    return {k: np.concatenate(v) for k, v in acc.items()}


def build_report(pred: dict[str, np.ndarray], joint_names: list[str], jdr_head_size: float = 25.6, jdr_factor: float = 0.5) -> dict[str, Any]:
    """Metrics from :func:`predict` arrays: JDR (overall, per joint), MPJPE (overall, per action, per joint), PA-MPJPE."""
    # All joints count, hidden ones too, as in the Cross-View-Fusion / PPT evaluation code; the
    # visible-only rate is reported beside it (hidden joints are where fusion should help).
    jdr_all, jdr_joint = metrics.jdr(pred["pred2d"], pred["gt2d"], head_size=jdr_head_size, factor=jdr_factor)
    jdr_vis, _ = metrics.jdr(pred["pred2d"], pred["gt2d"], vis=pred["vis"], head_size=jdr_head_size, factor=jdr_factor)
    jdr_hid, _ = metrics.jdr(pred["pred2d"], pred["gt2d"], vis=~pred["vis"], head_size=jdr_head_size, factor=jdr_factor) if (~pred["vis"]).any() else (None, None)
    valid3d = np.isfinite(pred["pred3d"]).all(-1)
    n_missing = int((~valid3d).sum())
    if n_missing:
        log.warning("%d of %d joints could not be triangulated (fewer than 2 usable views)", n_missing, valid3d.size)
    actions = [H36M_ACTIONS.get(int(a), str(a)) if str(a).lstrip("-").isdigit() else str(a) for a in pred["action"]]
    per_action = metrics.mpjpe_per_action(pred["pred3d"], pred["gt3d"], actions, valid=valid3d)
    return {
        "samples": int(len(pred["pred3d"])),
        "views": int(pred["pred2d"].shape[1]),
        "jdr": {
            "overall": float(jdr_all),
            "per_joint": {n: float(v) for n, v in zip(joint_names, jdr_joint)},
            "visible": float(jdr_vis),
            "hidden": None if jdr_hid is None else float(jdr_hid),
            "threshold_px": float(jdr_head_size * jdr_factor),
        },
        "mpjpe_mm": {
            "overall": float(metrics.mpjpe(pred["pred3d"], pred["gt3d"], valid=valid3d)),
            "per_action": {k: float(v) for k, v in per_action.items()},
            "per_joint": {n: float(v) for n, v in zip(joint_names, metrics.per_joint_mpjpe(pred["pred3d"], pred["gt3d"], valid=valid3d))},
        },
        "pa_mpjpe_mm": float(metrics.pa_mpjpe(np.nan_to_num(pred["pred3d"]), pred["gt3d"], valid=valid3d)),
        "untriangulated_joints": n_missing,
        "reprojection_error_px": metrics.summarize_errors(pred["reproj"][np.isfinite(pred["reproj"])]),
    }


def report_csv(report: dict[str, Any]) -> str:
    """Flat CSV (metric, key, value) of a report, for spreadsheets."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["metric", "key", "value"])
    w.writerow(["jdr", "overall", report["jdr"]["overall"]])
    for k, v in report["jdr"]["per_joint"].items():
        w.writerow(["jdr_per_joint", k, v])
    w.writerow(["mpjpe_mm", "overall", report["mpjpe_mm"]["overall"]])
    for k, v in report["mpjpe_mm"]["per_action"].items():
        w.writerow(["mpjpe_per_action_mm", k, v])
    for k, v in report["mpjpe_mm"]["per_joint"].items():
        w.writerow(["mpjpe_per_joint_mm", k, v])
    w.writerow(["pa_mpjpe_mm", "overall", report["pa_mpjpe_mm"]])
    return buf.getvalue()


def write_report(report: dict[str, Any], out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
    """Write ``stem.json`` and ``stem.csv`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    jpath, cpath = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    atomic_write_text(jpath, json.dumps(report, indent=1) + "\n")
    atomic_write_text(cpath, report_csv(report))
    return jpath, cpath


def joint_names_for(dataset_name: str, num_joints: int) -> list[str]:
    try:
        names = list(get_skeleton("h36m" if dataset_name in ("h36m", "synth") else dataset_name).joints)
    except KeyError:
        names = []
    return names if len(names) == num_joints else [f"j{i}" for i in range(num_joints)]
