"""Inputs of the model-path capture tests (test_capture_model.py, test_capture_people_model.py): a small rig
and randomly initialised tiny checkpoints. Imported as ``model_inputs`` (pytest puts this folder on the path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

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
