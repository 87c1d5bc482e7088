"""`mvpose triangulate --checkpoint --people`: two people followed by a model from box files with a person id.

As in tests/capture/test_capture_model.py, each camera frame is a grey image whose level encodes the frame number, and
a stand-in forward answers with exact Gaussian heatmaps; here it answers for the person whose true 2D centre is
nearest to the crop's centre, so a crop around the wrong person gives that person's joints.
"""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from model_inputs import LEVEL0, LEVEL_STEP, heatmap_oracle, quarter_rig, tiny_checkpoint
from mvpose.capture import detect
from mvpose.capture.detect import box_file_people, read_box_file
from mvpose.capture.pipeline import CaptureError
from mvpose.capture.synthetic import project_keypoints, rig_floor_center, synthetic_motion
from mvpose.cli import main
from mvpose.metrics import mpjpe

T = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("people_model")
    calib, cams = quarter_rig(tmp)
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
    return {"calib": calib, "cams": cams, "X": X, "uv": uv, "images": images, "ckpt": tiny_checkpoint("demo_sv_ppt", tmp / "sv.pt")}


def _oracle(uv: np.ndarray):
    """Heatmaps of the person whose true 2D centre is nearest to the crop's centre."""
    centres = (uv.min(3) + uv.max(3)) / 2  # (T, V, person, 2)

    def joints_at(t, v, A, W, H):
        middle = np.linalg.solve(A[:, :2], np.array([(W - 1) / 2, (H - 1) / 2]) - A[:, 2])  # original px
        who = int(np.linalg.norm(centres[t, v] - middle, axis=-1).argmin())
        return uv[t, v, who]

    return heatmap_oracle(joints_at)


def test_two_people_from_box_files_with_person_ids_then_tracked(tmp_path, setup, monkeypatch):
    monkeypatch.setattr(detect, "forward_views", _oracle(setup["uv"]))
    decoded = []
    opener = detect.open_frame_source

    def counting(name, path):
        src = opener(name, path)
        read = src.read

        def read_counting(frames):
            for img in read(frames):
                decoded.append((name, img is not None))
                yield img

        src.read = read_counting
        return src

    monkeypatch.setattr(detect, "open_frame_source", counting)
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
    # Both people were followed from one decoding of every frame of every camera.
    assert len(decoded) == T * 4 and all(ok for _, ok in decoded)
    assert det["person3"]["people_followed_together"] == 2


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
