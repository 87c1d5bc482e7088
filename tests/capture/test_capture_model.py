"""`mvpose triangulate --checkpoint`: 2D joints from an mvpose model run on videos / image folders.

The capture: a synthetic walking person (mvpose.data.synth motion) seen by a quarter-size copy of
``mvpose/calibration/examples/rig4.json`` (4 cameras, 480x270, with lens distortion), written as one video or image
folder per camera. Each camera frame is drawn on a grey background whose level encodes the camera's frame
number, so a stand-in model can tell from the pixels it is given which moment it sees.

The stand-in ("oracle") replaces the model forward: it reads the moment from the crop's pixels and returns
Gaussian heatmaps at the ground-truth joints of that moment, mapped into the crop through the crop's affine.
Then the 3D joints must come out exact, which they only do if frames are synchronised (offsets), boxes
are tracked and contain the person, crops, heatmap decoding and un-cropping are exact, and the result
reaches the triangulation. Real tiny models (randomly initialised) check the plumbing of real forwards.
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

from model_inputs import LEVEL0, LEVEL_STEP, heatmap_oracle, quarter_rig, tiny_checkpoint
from mvpose.capture import detect
from mvpose.capture.detect import read_box_file
from mvpose.capture.io import read_trc
from mvpose.capture.render import draw_overlay
from mvpose.capture.synthetic import project_keypoints, rig_floor_center, synthetic_motion
from mvpose.cli import main
from mvpose.data.transforms import box_to_center_scale, token_centers
from mvpose.metrics import mpjpe
from mvpose.skeletons import get_skeleton

REPO = Path(__file__).resolve().parents[2]
FPS = 30.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Quarter-size rig, the motion, and randomly initialised tiny single- and multi-view checkpoints."""
    tmp = tmp_path_factory.mktemp("capture_model")
    calib, cams = quarter_rig(tmp)
    X = synthetic_motion(12, FPS, "h36m", center=rig_floor_center(cams), radius=700.0, seed=3)
    uv, inside = project_keypoints(X, cams)
    assert inside.all()
    ckpts = {p: tiny_checkpoint(p, tmp / f"{p}.pt") for p in ("demo_sv_ppt", "demo_mv_ppt")}
    return {"calib": calib, "cams": cams, "X": X, "uv": uv, "ckpt": ckpts}


def _write_frames(folder: Path, setup, kind: str = "videos", lead: dict | None = None, frames: dict | None = None,
                  skip: tuple[str, ...] = ()) -> Path:
    """One video (``kind="videos"``) or PNG folder per camera; ``lead[cam]`` extra frames before the motion
    starts (the camera started early), ``frames[cam]`` frames written (the camera stopped early)."""
    cams, uv = setup["cams"], setup["uv"]
    limbs = get_skeleton("h36m").limbs
    root = folder / kind
    root.mkdir(parents=True)
    for v, name in enumerate(cams.names):
        if name in skip:
            continue
        W, H = cams.image_size[v].int().tolist()
        n_lead = (lead or {}).get(name, 0)
        count = (frames or {}).get(name, len(uv) + n_lead)
        writer = (cv2.VideoWriter(str(root / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
                  if kind == "videos" else None)
        for f in range(count):
            img = np.full((H, W, 3), LEVEL0 + LEVEL_STEP * f, np.uint8)
            t = f - n_lead
            if 0 <= t < len(uv):
                draw_overlay(img, uv[t, v], np.concatenate([uv[t, v], np.ones((17, 1))], -1), np.ones(17, bool), limbs)
            if writer is not None:
                writer.write(img)
            else:
                (root / name).mkdir(exist_ok=True)
                cv2.imwrite(str(root / name / f"{f:06d}.png"), img)
        if writer is not None:
            writer.release()
    return root


def _oracle(setup, lead: dict | None = None, names: list[str] | None = None, calls: list | None = None):
    """A forward that sees the moment in the crop's pixels and answers with exact Gaussian heatmaps."""
    cams = setup["cams"]
    names = names or list(cams.names)
    index = [list(cams.names).index(n) for n in names]
    uv = setup["uv"][:, index]  # (T, V, J, 2) of the cameras used
    shift = np.array([(lead or {}).get(n, 0) for n in names])

    def joints_at(t, v, affine, W, H):
        t = t - shift[v]
        return uv[t, v] if 0 <= t < len(uv) else None

    return heatmap_oracle(joints_at, calls)


def _run(args: list[str]) -> str:
    r = CliRunner().invoke(main, ["triangulate", *args])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


def _fail(args: list[str]) -> str:
    r = CliRunner().invoke(main, ["triangulate", *args])
    assert r.exit_code != 0
    return r.output


def _read(out: Path) -> dict:
    with h5py.File(out / "poses3d.h5") as f:
        res = {k: f[k][:] for k in ("poses3d", "points2d", "confidence", "used", "frame_index")}
        res["cameras"] = list(f.attrs["cameras"])
    res["detection"] = json.loads((out / "detection.json").read_text())
    res["summary"] = json.loads((out / "summary.json").read_text())
    return res


def _padded_region(box: np.ndarray, padding: float = 1.25) -> np.ndarray:
    """The square crop region (x0, y0, x1, y1) that a box becomes (the models here take 128x128)."""
    c, s = box_to_center_scale(np.r_[box[:2], box[2:] - box[:2]], 1.0, padding)
    return np.r_[c - s * 100, c + s * 100]


# --------------------------------------------------------------------------------------------- oracle
def test_oracle_model_recovers_ground_truth_with_tracked_boxes_and_offsets(tmp_path, setup, monkeypatch):
    lead = {"cam_2": 2}  # cam_2 started recording 2 frames early
    videos = _write_frames(tmp_path, setup, "videos", lead=lead)
    calls: list = []
    monkeypatch.setattr(detect, "forward_views", _oracle(setup, lead, calls=calls))
    out = tmp_path / "o"
    printed = _run(["--calibration", str(setup["calib"]), "--checkpoint", str(setup["ckpt"]["demo_mv_ppt"]),
                    "--videos", str(videos), "--out", str(out), "--offsets", "cam_2=2", "--batch-size", "4"])
    res = _read(out)
    # the capture spans every frame any camera has: cam_2's two early frames come first, seen by it alone
    assert res["frame_index"].tolist() == list(range(-2, 12)) and res["cameras"] == ["cam_1", "cam_2", "cam_3", "cam_4"]
    assert np.isnan(res["poses3d"][:2]).all() and not res["used"][:2].any()
    X, kp, conf = res["poses3d"][2:], res["points2d"][2:], res["confidence"][2:]
    assert np.isfinite(X).all() and mpjpe(X, setup["X"]) < 1.0
    assert (conf > 0.5).all() and res["used"][2:].all()
    assert np.abs(kp - setup["uv"]).max() < 0.05
    # one whole-frame pass starts the track; every crop after it comes from the reprojected pose
    det = res["detection"]
    assert det["whole_frame_passes"] == 1 and det["model"] == "mv_ppt_tiny" and det["multiview"]
    assert det["boxes"]["cam_2"] == {"file": 0, "track": 12, "frame": 2}  # nothing to triangulate before frame 0
    assert all(det["boxes"][n] == {"file": 0, "track": 12, "frame": 0} for n in ("cam_1", "cam_3", "cam_4"))
    assert "2D joints: mv_ppt_tiny on 14 frames" in printed
    assert "camera cam_1: frames for 12 of 14 capture frames" in printed
    # the tracked boxes fit the person where the frame shows it (lag of a batch, made up by the velocity)
    for v, name in enumerate(res["cameras"]):
        rows = np.loadtxt(out / "boxes" / f"{name}.csv", delimiter=",", skiprows=1, usecols=range(5))
        assert rows[:, 0].tolist() == [f + lead.get(name, 0) for f in range(12)]  # camera frame numbers
        uv = setup["uv"][:, v]
        lo, hi = uv.min(1), uv.max(1)  # (12, 2) the person's extent in the frame
        height = (hi - lo)[:, 1]
        centre_error = np.linalg.norm((rows[:, 1:3] + rows[:, 3:]) / 2 - (lo + hi) / 2, axis=-1)
        assert (centre_error < 0.12 * height).all(), (name, centre_error / height)
        assert (np.abs((rows[:, 4] - rows[:, 2]) / height - 1) < 0.15).all()
    # multi-view models get the world rays of the crop cameras through the token centres
    batch = calls[-1]
    tokens = token_centers((128, 128), (16, 16)).numpy()
    cams = setup["cams"]
    for v in range(4):
        A = batch["affine"][0, v].numpy()
        orig = (tokens - A[:, 2]) @ np.linalg.inv(A[:, :2]).T  # crop -> original pixels
        rays = cams[v:v + 1].pixel_rays(torch.from_numpy(orig)[None])[0].numpy()
        assert batch["rays"].shape == (len(batch["frame"]), 4, 256, 3)
        assert np.abs(batch["rays"][0, v].numpy() - rays).max() < 1e-5
    # without the offset cam_2 shows other moments: plain DLT then misses the truth by centimetres
    _run(["--calibration", str(setup["calib"]), "--checkpoint", str(setup["ckpt"]["demo_mv_ppt"]),
          "--videos", str(videos), "--out", str(tmp_path / "o2"), "--mode", "dlt"])
    wrong = _read(tmp_path / "o2")
    assert wrong["frame_index"].tolist() == list(range(14)) and mpjpe(wrong["poses3d"][:12], setup["X"]) > 10.0


def test_box_files_csv_json_and_fallback_to_tracking(tmp_path, setup, monkeypatch):
    images = _write_frames(tmp_path, setup, "images")
    monkeypatch.setattr(detect, "forward_views", _oracle(setup))
    uv = setup["uv"]
    truth = np.concatenate([uv.min(2) - 5, uv.max(2) + 5], -1)  # (T, V, 4) a detector's person boxes
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    for v, name in enumerate(["cam_1", "cam_3"]):
        rows = ["frame,score,x0,y0,x1,y1"] + [f"{t},0.9,{','.join(f'{x:.3f}' for x in truth[t, 2 * v])}" for t in range(12)]
        rows.append("4,0.1,0,0,50,50")  # a weaker second detection: the best score wins
        (boxes / f"{name}.csv").write_text("\n".join(rows) + "\n")
    for v, name in ((1, "cam_2"), (3, "cam_4")):
        recs = [{"frame": t, "box": truth[t, v].round(3).tolist()} for t in range(12)]
        (boxes / f"{name}.json").write_text(json.dumps(recs))
    base = ["--calibration", str(setup["calib"]), "--checkpoint", str(setup["ckpt"]["demo_sv_ppt"]),
            "--images", str(images), "--batch-size", "3"]
    _run([*base, "--boxes", str(boxes), "--out", str(tmp_path / "o")])
    res = _read(tmp_path / "o")
    assert mpjpe(res["poses3d"], setup["X"]) < 1.0 and (res["confidence"] > 0.5).all()
    det = res["detection"]
    assert det["whole_frame_passes"] == 0 and not det["multiview"]  # every view had a box: no search
    assert all(c == {"file": 12, "track": 0, "frame": 0} for c in det["boxes"].values())
    written = read_box_file(tmp_path / "o" / "boxes" / "cam_3.csv")
    assert np.allclose(np.stack([written[t] for t in range(12)]), truth[:, 2], atol=0.01)

    # cam_4 without a file and cam_2 with gaps: those views are tracked (one whole-frame pass starts it)
    (boxes / "cam_4.json").unlink()
    recs = [r for r in json.loads((boxes / "cam_2.json").read_text()) if not 5 <= r["frame"] <= 7]
    (boxes / "cam_2.json").write_text(json.dumps(recs))
    _run([*base, "--boxes", str(boxes), "--out", str(tmp_path / "o2")])
    res = _read(tmp_path / "o2")
    assert mpjpe(res["poses3d"], setup["X"]) < 1.0
    counts = res["detection"]["boxes"]
    assert counts["cam_4"] == {"file": 0, "track": 12, "frame": 0} and counts["cam_2"] == {"file": 9, "track": 3, "frame": 0}
    assert res["detection"]["whole_frame_passes"] == 1

    # the boxes written are a box folder: a second run with them crops exactly the same
    _run([*base, "--boxes", str(tmp_path / "o2" / "boxes"), "--out", str(tmp_path / "o3")])
    again = _read(tmp_path / "o3")
    assert again["detection"]["whole_frame_passes"] == 0
    assert np.abs(again["points2d"] - res["points2d"]).max() < 0.05

    (boxes / "cam_1.csv").write_text("frame,x0,y0,x1\n0,1,2,3\n")
    assert "cam_1.csv: box file needs a header with columns frame,x0,y0,x1,y1; missing y1" in _fail(
        [*base, "--boxes", str(boxes), "--out", str(tmp_path / "o4")])
    (boxes / "cam_1.csv").unlink()
    (boxes / "cam_9.json").write_text("[]")
    out = _fail([*base, "--boxes", str(boxes), "--out", str(tmp_path / "o4")])
    assert "cam_9 not in the calibration" in out and "calibration cameras: cam_1, cam_2, cam_3, cam_4" in out
    (boxes / "cam_9.json").unlink()
    (boxes / "cam_2.json").write_text(json.dumps([{"frame": 1, "box": [5, 5, 1]}]))
    assert "cam_2.json record 0: expected" in _fail([*base, "--boxes", str(boxes), "--out", str(tmp_path / "o4")])


# --------------------------------------------------------------------------------------------- real models
@pytest.mark.parametrize("pipeline, kind", [("demo_sv_ppt", "videos"), ("demo_mv_ppt", "images")])
def test_tiny_models_end_to_end(tmp_path, setup, pipeline, kind):
    folder = _write_frames(tmp_path, setup, kind, frames={n: 6 for n in setup["cams"].names})
    out = tmp_path / "o"
    _run(["--calibration", str(setup["calib"]), "--checkpoint", str(setup["ckpt"][pipeline]), f"--{kind}",
          str(folder), "--out", str(out), "--batch-size", "3", "--min-confidence", "0", "--fps", "30"])
    res = _read(out)
    T, V, J = 6, 4, 17
    assert res["poses3d"].shape == (T, J, 3) and res["points2d"].shape == (T, V, J, 2)
    assert res["summary"]["frames"] == T and res["summary"]["joint_set"] == "h36m"
    # Random weights give no true pose, but the rig is the ground truth of the geometry: the summary's
    # reprojection errors are those of the written 3D joints projected by the rig onto the used detections.
    X, used = res["poses3d"], res["used"].astype(bool)
    assert np.isfinite(X).all(-1).all() and used.sum() >= 2 * T * J  # every joint from two views or more
    proj = np.stack([setup["cams"].project(torch.as_tensor(X[t]).expand(V, J, 3)).numpy() for t in range(T)])
    dist = np.linalg.norm(proj - res["points2d"], axis=-1)  # (T, V, J) pixels
    rep = res["summary"]["reprojection_error_px"]
    assert rep["count"] == used.sum()
    assert rep["median"] == pytest.approx(float(np.median(dist[used])), rel=1e-6)
    assert rep["mean"] == pytest.approx(float(dist[used].mean()), rel=1e-6)
    for v, name in enumerate(res["cameras"]):
        assert rep["per_camera"][name]["count"] == used[:, v].sum()
    header, names, _, points = read_trc(out / "poses3d.trc")
    assert names == list(get_skeleton("h36m").joints) and points.shape == (T, J, 3)
    det = res["detection"]
    assert det["model"] == pipeline.replace("demo_sv_ppt", "ppt_tiny").replace("demo_mv_ppt", "mv_ppt_tiny")
    assert det["forward_samples"] == T and det["frames_per_s"] > 0
    # a model answers inside its crop: the un-cropped joints lie in the crop region of their box
    for v, name in enumerate(res["cameras"]):
        boxes = read_box_file(out / "boxes" / f"{name}.csv")
        for t, box in boxes.items():
            lo_hi = _padded_region(box)
            p = res["points2d"][t, v]
            ok = np.isfinite(p).all(-1)
            assert ((p[ok] >= lo_hi[:2] - 1) & (p[ok] <= lo_hi[2:] + 1)).all()


# --------------------------------------------------------------------------------------------- bad input
def test_missing_and_short_videos_still_process_the_rest(tmp_path, setup, monkeypatch):
    videos = _write_frames(tmp_path, setup, "videos", frames={"cam_1": 8}, skip=("cam_3",))
    monkeypatch.setattr(detect, "forward_views", _oracle(setup, names=["cam_1", "cam_2", "cam_4"]))
    out = _run(["--calibration", str(setup["calib"]), "--checkpoint", str(setup["ckpt"]["demo_sv_ppt"]),
                "--videos", str(videos), "--out", str(tmp_path / "o")])
    assert "no video for calibrated camera(s) cam_3; using cam_1, cam_2, cam_4" in out
    assert "camera cam_1: frames for 8 of 12 capture frames" in out
    res = _read(tmp_path / "o")
    assert res["cameras"] == ["cam_1", "cam_2", "cam_4"]
    assert not res["used"][8:, 0].any() and res["used"][:8].all()
    assert np.isfinite(res["poses3d"]).all() and mpjpe(res["poses3d"], setup["X"]) < 1.0
    assert res["detection"]["boxes"]["cam_1"] == {"file": 0, "track": 8, "frame": 0}


def test_usage_and_input_errors(tmp_path, setup):
    videos = _write_frames(tmp_path, setup, "videos", frames={n: 2 for n in setup["cams"].names})
    base = ["--calibration", str(setup["calib"]), "--out", str(tmp_path / "o")]
    ckpt = str(setup["ckpt"]["demo_sv_ppt"])
    assert "does not exist" in _fail([*base, "--checkpoint", str(tmp_path / "none.pt"), "--videos", str(videos)])
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "not a readable checkpoint" in _fail([*base, "--checkpoint", str(tmp_path / "empty.pt"), "--videos", str(videos)])
    assert "--checkpoint needs the frames" in _fail([*base, "--checkpoint", ckpt])
    assert "exactly one of --keypoints" in _fail([*base, "--checkpoint", ckpt, "--keypoints", str(videos)])
    assert "--boxes, --batch-size and --device go with --checkpoint" in _fail(
        [*base, "--keypoints", str(videos), "--batch-size", "2"])
    assert "'--batch-size': 0 is not in the range x>=1" in _fail([*base, "--checkpoint", ckpt, "--videos", str(videos), "--batch-size", "0"])
    (videos / "cam_4.mp4").rename(videos / "camera4.mp4")
    out = _fail([*base, "--checkpoint", ckpt, "--videos", str(videos)])
    assert "camera4 not in the calibration" in out and "calibration cameras: cam_1, cam_2, cam_3, cam_4" in out
    assert not (tmp_path / "o").exists()
    # One readable camera: refused before any model pass, naming the unreadable and the missing ones.
    (videos / "camera4.mp4").unlink()
    (videos / "cam_2.mp4").write_text("not a video")
    (videos / "cam_3.mp4").write_bytes((videos / "cam_1.mp4").read_bytes()[:200])  # cut short
    out = _fail([*base, "--checkpoint", ckpt, "--videos", str(videos)])
    assert "1 camera(s) with readable frames (cam_1); triangulation needs 2; no frame could be read from cam_2 (" in out
    assert "cam_3 (" in out and "no video / image folder for cam_4" in out
    assert not (tmp_path / "o").exists()


def test_converted_official_coco_model_runs_in_triangulate(tmp_path, setup):
    """A checkpoint of the official code, converted, is a COCO-17 detector for `triangulate --checkpoint`."""
    from mvpose.models.convert import convert_file

    fixture = torch.load(REPO / "tests" / "fixtures" / "official_ppt" / "ppt_s_reduced.pt", weights_only=True)
    src = tmp_path / "ppt_s_reduced.pth"
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in fixture["official_state_dict"].items()}, src)
    ckpt = tmp_path / "converted.pt"
    convert_file(src, ckpt)
    folder = _write_frames(tmp_path, setup, "videos", frames={n: 4 for n in setup["cams"].names})
    out = tmp_path / "o"
    _run(["--calibration", str(setup["calib"]), "--checkpoint", str(ckpt), "--videos", str(folder), "--out", str(out),
          "--min-confidence", "0", "--fps", "30"])
    res = _read(out)
    T, V, J = 4, 4, 17
    assert res["poses3d"].shape == (T, J, 3) and res["points2d"].shape == (T, V, J, 2)
    assert res["summary"]["joint_set"] == "coco" and res["detection"]["model"] == "ppt_s"
    header, names, _, points = read_trc(out / "poses3d.trc")
    assert names == list(get_skeleton("coco").joints) and points.shape == (T, J, 3)
    assert np.isfinite(res["points2d"]).all()
