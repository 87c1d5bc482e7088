"""Inputs of the model-path capture tests (test_capture_model.py, test_capture_people_model.py): a small rig,
randomly initialised tiny checkpoints and a stand-in forward that answers with exact heatmaps. Imported as ``model_inputs`` (pytest puts this folder on the path)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mvpose.data.transforms import IMAGENET_MEAN, IMAGENET_STD, affine_points
from mvpose.engine.checkpoint import atomic_save
from mvpose.engine.config import load_pipeline
from mvpose.engine.train import build_model_from_config
from mvpose.geometry.calibration import load_calibration, params_from_cameras, write_mvpose_calibration
from mvpose.geometry.camera import Cameras

RIG4 = Path(__file__).resolve().parents[2] / "mvpose" / "calibration" / "examples" / "rig4.json"


def quarter_rig(folder: Path) -> tuple[Path, Cameras]:
    """A quarter-size copy of ``rig4.json`` (4 cameras, 480x270, lens distortion kept) written to
    ``folder/rig.json``: its path and cameras."""
    params = params_from_cameras(load_calibration(RIG4))
    for p in params:
        p["K"] = np.diag([0.25, 0.25, 1.0]) @ p["K"]
        p["size"] = p["size"] / 4
    calib = folder / "rig.json"
    write_mvpose_calibration(calib, params)
    return calib, load_calibration(calib)


def tiny_checkpoint(pipeline: str, path: Path) -> Path:
    """A checkpoint of a tiny demo pipeline's model, randomly initialised with seed 0, at ``path``."""
    cfg = load_pipeline(pipeline)
    torch.manual_seed(0)
    model = build_model_from_config(cfg, load_pretrained=False)
    atomic_save({"model": model.state_dict(), "config": cfg}, path)
    return path


# Background grey of camera frame f: LEVEL0 + LEVEL_STEP * f (mp4 keeps +-5), so a stand-in model can tell
# from a crop's pixels which moment it sees.
LEVEL0, LEVEL_STEP = 20, 14


def heatmap_oracle(joints_at: Callable[[int, int, np.ndarray, int, int], np.ndarray | None],
                   calls: list | None = None):
    """A stand-in for ``detect.forward_views``: reads each crop's frame number from its grey level and answers
    with exact Gaussian heatmaps (32x32, sigma 2) at the joints ``joints_at(frame, view, affine, W, H)`` gives
    ((J, 2) original pixels; None: nothing, zero heatmaps), mapped into the crop by the crop's affine.
    ``calls`` collects the batches it is given."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    h, w = 32, 32

    def forward(model, batch, device):
        if calls is not None:
            calls.append(batch)
        images = batch["image"]
        N, V, _, H, W = images.shape
        pixels = ((images * std + mean) * 255).mean(dim=2)  # (N, V, H, W) grey level
        heatmaps = np.zeros((N, V, 17, h, w), np.float32)
        ys, xs = np.mgrid[0:h, 0:w]
        for n in range(N):
            for v in range(V):
                lit = pixels[n, v][pixels[n, v] > LEVEL0 / 2]  # the crop's black border is no frame content
                if not batch["view_mask"][n, v] or lit.numel() == 0:
                    continue
                t = int(round((float(lit.median()) - LEVEL0) / LEVEL_STEP))
                A = batch["affine"][n, v].numpy()
                joints = joints_at(t, v, A, W, H)
                if joints is None:
                    continue
                crop = affine_points(joints, A)  # (J, 2) crop pixels
                inside = (crop >= 0).all(-1) & (crop[:, 0] <= W - 1) & (crop[:, 1] <= H - 1)
                hm = crop * [(w - 1) / (W - 1), (h - 1) / (H - 1)]
                g = np.exp(-((xs - hm[:, :1, None]) ** 2 + (ys - hm[:, 1:, None]) ** 2) / (2 * 2.0 ** 2))
                heatmaps[n, v] = g * inside[:, None, None]
        return {"heatmaps": torch.from_numpy(heatmaps)}

    return forward
