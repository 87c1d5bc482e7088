"""`mvpose triangulate --checkpoint --people`: two people followed by a model from box files with a person id.

As in tests/test_capture_model.py, each camera frame is a grey image whose level encodes the frame number, and
a stand-in forward answers with exact Gaussian heatmaps; here it answers for the person whose true 2D centre is
nearest to the crop's centre, so a crop around the wrong person gives that person's joints.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mvpose.capture import detect
from mvpose.capture.detect import box_file_people, read_box_file
from mvpose.capture.pipeline import CaptureError
from mvpose.capture.synthetic import project_keypoints, rig_floor_center, synthetic_motion
from mvpose.cli import main
from mvpose.data.transforms import IMAGENET_MEAN, IMAGENET_STD, affine_points
from mvpose.engine.checkpoint import atomic_save
from mvpose.engine.config import load_pipeline
from mvpose.engine.train import build_model_from_config
from mvpose.geometry.calibration import load_calibration, params_from_cameras, write_mvpose_calibration
from mvpose.metrics import mpjpe

REPO = Path(__file__).resolve().parents[2]
RIG = REPO / "mvpose" / "calibration" / "examples" / "rig4.json"
T = 10
LEVEL0, LEVEL_STEP = 20, 14


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("people_model")
    params = params_from_cameras(load_calibration(RIG))
    for p in params:
        p["K"] = np.diag([0.25, 0.25, 1.0]) @ p["K"]
        p["size"] = p["size"] / 4
    calib = tmp / "rig.json"
    write_mvpose_calibration(calib, params)
    cams = load_calibration(calib)
    c = rig_floor_center(cams)
    X = np.stack([synthetic_motion(T, 30.0, "h36m", center=c + [-600.0, 0, 0], radius=300.0, seed=3),
                  synthetic_motion(T, 30.0, "h36m", center=c + [600.0, 0, 0], radius=300.0, seed=4)], axis=1)
    uv, inside = project_keypoints(X.reshape(T, -1, 3), cams)
    assert inside.all()
    uv = uv.reshape(T, 4, 2, 17, 2)  # (T, V, person, J, 2)
    images = tmp / "images"
    for v, name in enumerate(cams.names):
        W, H = cams.image_size[v].int().tolist()
        (images / name).mkdir(parents=True)
        for f in range(T):
            cv2.imwrite(str(images / name / f"{f:06d}.png"), np.full((H, W, 3), LEVEL0 + LEVEL_STEP * f, np.uint8))
    cfg = load_pipeline("demo_sv_ppt")
    torch.manual_seed(0)
    ckpt = tmp / "sv.pt"
    atomic_save({"model": build_model_from_config(cfg, load_pretrained=False).state_dict(), "config": cfg}, ckpt)
    return {"calib": calib, "cams": cams, "X": X, "uv": uv, "images": images, "ckpt": ckpt}


def _oracle(uv: np.ndarray):
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    h, w = 32, 32
    centres = (uv.min(3) + uv.max(3)) / 2  # (T, V, person, 2)

    def forward(model, batch, device):
        images = batch["image"]
        N, V, _, H, W = images.shape
        pixels = ((images * std + mean) * 255).mean(dim=2)
        heatmaps = np.zeros((N, V, 17, h, w), np.float32)
        ys, xs = np.mgrid[0:h, 0:w]
        for n in range(N):
            for v in range(V):
                lit = pixels[n, v][pixels[n, v] > LEVEL0 / 2]
                if not batch["view_mask"][n, v] or lit.numel() == 0:
                    continue
                t = int(round((float(lit.median()) - LEVEL0) / LEVEL_STEP))
                A = batch["affine"][n, v].numpy()
                middle = np.linalg.solve(A[:, :2], np.array([(W - 1) / 2, (H - 1) / 2]) - A[:, 2])  # original px
                who = int(np.linalg.norm(centres[t, v] - middle, axis=-1).argmin())
                crop = affine_points(uv[t, v, who], A)
                inside = (crop >= 0).all(-1) & (crop[:, 0] <= W - 1) & (crop[:, 1] <= H - 1)
                hm = crop * [(w - 1) / (W - 1), (h - 1) / (H - 1)]
                g = np.exp(-((xs - hm[:, :1, None]) ** 2 + (ys - hm[:, 1:, None]) ** 2) / (2 * 2.0 ** 2))
                heatmaps[n, v] = g * inside[:, None, None]
        return {"heatmaps": torch.from_numpy(heatmaps)}

    return forward


def test_two_people_from_box_files_with_person_ids_then_tracked(tmp_path, setup, monkeypatch):
    monkeypatch.setattr(detect, "forward_views", _oracle(setup["uv"]))
    uv = setup["uv"]
    truth = np.concatenate([uv.min(3) - 5, uv.max(3) + 5], -1)  # (T, V, person, 4)
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    for v, name in enumerate(setup["cams"].names):
        # Boxes for the first 3 frames only (a detector run every few frames); person ids 7 and 3, listed in
        # either order; the reprojected track of each person takes over.
        rows = ["frame,x0,y0,x1,y1,person"]
        for t in range(3):
            for p, pid in ((1, 3), (0, 7)):
                rows.append(f"{t},{','.join(f'{x:.3f}' for x in truth[t, v, p])},{pid}")
        (boxes / f"{name}.csv").write_text("\n".join(rows) + "\n")
    assert box_file_people(boxes, setup["cams"].names, setup["cams"].names) == ["3", "7"]
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["triangulate", "--calibration", str(setup["calib"]), "--checkpoint",
                                  str(setup["ckpt"]), "--images", str(setup["images"]), "--boxes", str(boxes),
                                  "--people", "2", "--batch-size", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    with h5py.File(out / "poses3d.h5") as f:
        X = f["poses3d"][:]
        assert list(f.attrs["people"]) == ["person3", "person7"]
    assert X.shape == (T, 2, 17, 3)
    assert mpjpe(X[:, 0], setup["X"][:, 1]) < 1.0 and mpjpe(X[:, 1], setup["X"][:, 0]) < 1.0
    det = json.loads((out / "detection.json").read_text())
    for pid in ("person3", "person7"):
        assert det[pid]["whole_frame_passes"] == 0
        assert all(c == {"file": 3, "track": T - 3, "frame": 0} for c in det[pid]["boxes"].values())
    # The boxes written back carry the person column: a second run reads them per person.
    written = (out / "boxes" / "cam_2.csv").read_text().splitlines()
    assert written[0] == "frame,x0,y0,x1,y1,person,source" and len(written) == 1 + 2 * T
    again = read_box_file(out / "boxes" / "cam_2.csv", person="7")
    assert sorted(again) == list(range(T)) and np.allclose(again[1], truth[1, 1, 0], atol=0.01)
    assert (out / "poses3d_person3.trc").exists() and "=== person7" in r.output


def test_several_people_with_a_model_need_person_ids(tmp_path, setup):
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    (boxes / "cam_1.json").write_text(json.dumps([{"frame": 0, "box": [1, 2, 30, 40]}]))
    with pytest.raises(CaptureError, match="person id per box"):
        box_file_people(boxes, setup["cams"].names, setup["cams"].names)
    r = CliRunner().invoke(main, ["triangulate", "--calibration", str(setup["calib"]), "--checkpoint",
                                  str(setup["ckpt"]), "--images", str(setup["images"]), "--people", "auto",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "need --boxes" in r.output
