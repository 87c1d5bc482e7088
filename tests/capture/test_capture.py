"""`mvpose triangulate --keypoints` on synthetic captures: a moving skeleton (mvpose.data.synth motion)
projected through a calibration file and written as OpenPose JSON, with noise, outliers and broken inputs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mvpose.capture.io import atomic_path, read_trc, zup_to_yup
from mvpose.capture.keypoints import (
    KeypointError,
    parse_openpose,
    read_camera_keypoints,
    read_coco_results,
    read_openpose_folder,
    resolve_joint_set,
)
from mvpose.capture.people import select_person
from mvpose.capture.issues import IssueLog
from mvpose.capture.pipeline import (CaptureError, CaptureOptions, check_image_bounds, load_capture, parse_offsets,
                                     run_capture)
from mvpose.capture.synthetic import make_synthetic_capture, write_openpose_frames
from mvpose.capture.temporal import fill_gaps, lowpass
from mvpose.cli import main
from mvpose.geometry.calibration import load_calibration, params_from_cameras, write_mvpose_calibration
from mvpose.metrics import mpjpe
from mvpose.skeletons import BODY25

REPO = Path(__file__).resolve().parents[2]
RIG = REPO / "mvpose" / "calibration" / "examples" / "rig4.json"  # 4 cameras, 1920x1080, with distortion


@pytest.fixture(scope="module")
def rig():
    return load_calibration(RIG)


def _capture(tmp_path: Path, rig, **kw):
    kw.setdefault("frames", 60)
    kw.setdefault("fps", 30.0)
    kw.setdefault("joint_set", "body25")
    return make_synthetic_capture(tmp_path / "kp", rig, **kw)


def _run(args: list[str]) -> str:
    r = CliRunner().invoke(main, ["triangulate", *args])
    assert r.exit_code == 0, r.output
    return r.output


def _fail(args: list[str]) -> str:
    r = CliRunner().invoke(main, ["triangulate", *args])
    assert r.exit_code != 0
    return r.output


# --------------------------------------------------------------------------------------------- readers
def test_openpose_document_missing_joints_and_several_people():
    doc = {"people": [{"pose_keypoints_2d": [10, 20, 0.9, 0, 0, 0, 30, 40, 0.5]},
                      {"pose_keypoints_2d": [1, 2, 0.3, 3, 4, 0.4, 5, 6, 0.0]},
                      {"pose_keypoints_2d": []}]}
    people = parse_openpose(json.dumps(doc), "f.json")
    assert len(people) == 2
    assert np.allclose(people[0][0], [10, 20, 0.9]) and np.isnan(people[0][1, :2]).all() and people[0][1, 2] == 0
    assert np.isnan(people[1][2, :2]).all()  # confidence 0 means missing even with coordinates
    with pytest.raises(ValueError, match=r"f.json people\[0\].*pose_keypoints_2d.*triples"):
        parse_openpose(json.dumps({"people": [{"pose_keypoints_2d": [1, 2]}]}), "f.json")
    with pytest.raises(ValueError, match="f.json: expected an OpenPose object"):
        parse_openpose("[1, 2]", "f.json")


def test_openpose_folder_frames_from_names_and_unreadable_files(tmp_path):
    people = np.random.default_rng(0).uniform(10, 100, (5, 1, 25, 3))
    write_openpose_frames(tmp_path / "cam", people, prefix="cam")
    (tmp_path / "cam" / "cam_000000000002_keypoints.json").write_text('{"people": [')  # truncated write
    for f in (tmp_path / "cam").glob("cam_00000000000[34]_keypoints.json"):  # frames 3, 4 -> 13, 14
        f.rename(f.with_name(f.name.replace("00000000000", "0000000001")))
    cam = read_openpose_folder(tmp_path / "cam", workers=0)
    assert cam.frames.tolist() == [0, 1, 13, 14]
    assert np.allclose(cam.people[2, 0], people[3, 0], atol=1e-3)
    assert len(cam.issues) == 1 and "cam_000000000002_keypoints.json: not valid JSON" in cam.issues[0]
    assert np.allclose(read_openpose_folder(tmp_path / "cam", workers=2).people, cam.people, equal_nan=True)
    # A stray file without a frame number among numbered frames is left out, not the camera.
    (tmp_path / "cam" / "keypoints.json").write_text('{"version": 1.3}')
    cam2 = read_openpose_folder(tmp_path / "cam", workers=0)
    assert cam2.frames.tolist() == [0, 1, 13, 14] and np.array_equal(cam2.people, cam.people, equal_nan=True)
    assert any(i.endswith("keypoints.json: no frame number in the file name; not read as a frame") for i in cam2.issues)
    (tmp_path / "cam" / "extra_000000000001.json").write_text('{"people": []}')
    with pytest.raises(KeypointError, match="both hold frame 1"):
        read_openpose_folder(tmp_path / "cam")
    # Mostly unnumbered with a few numbered ones: which order is meant is unclear, so refused.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("a.json", "b.json", "c_000000000001.json"):
        (mixed / name).write_text('{"people": []}')
    with pytest.raises(KeypointError, match="some file names carry no frame number"):
        read_openpose_folder(mixed)


def test_coco_results_json(tmp_path):
    kps = np.random.default_rng(1).uniform(0, 500, (3, 17, 3))
    kps[..., 2] = 0.8
    recs = [{"image_id": 7, "category_id": 1, "keypoints": kps[0].ravel().tolist(), "score": 0.9},
            {"image_id": 7, "category_id": 1, "keypoints": kps[1].ravel().tolist(), "score": 0.5},
            {"image_id": 9, "category_id": 1, "keypoints": kps[2].ravel().tolist(), "score": 0.9},
            {"image_id": 10, "category_id": 1, "keypoints": [1, 2, 3]},
            {"image_id": 11, "category_id": 1, "keypoints": [1, 2]}]
    (tmp_path / "cam.json").write_text(json.dumps(recs))
    cam = read_coco_results(tmp_path / "cam.json")
    assert cam.name == "cam" and cam.frames.tolist() == [7, 9, 10]
    assert cam.people.shape == (3, 2, 17, 3)
    assert np.allclose(cam.people[0, 1], kps[1]) and np.isnan(cam.people[1, 1, :, :2]).all()
    assert np.isnan(cam.people[2, :, :, :2]).all()  # the one-joint detection is dropped, its frame stays
    assert len(cam.issues) == 2
    assert "frame 10: 1 keypoints per person where the other frames have 17" in cam.issues[1]
    assert "cam.json [4]: field 'keypoints' must hold x, y, confidence triples" in cam.issues[0]
    (tmp_path / "folder").mkdir()
    shutil.copy(tmp_path / "cam.json", tmp_path / "folder" / "results.json")
    assert read_camera_keypoints(tmp_path / "folder").name == "folder"


def test_joint_set_from_count_or_name():
    assert [resolve_joint_set(n, None, "x") for n in (25, 26, 17)] == ["body25", "halpe26", "coco"]
    assert resolve_joint_set(17, "h36m", "x") == "h36m"
    with pytest.raises(KeypointError, match="x: 25 keypoints per person, but joint set 'coco' has 17"):
        resolve_joint_set(25, "coco", "x")
    with pytest.raises(KeypointError, match="18 keypoints per person matches no joint set"):
        resolve_joint_set(18, None, "x")


def test_offsets_parsing():
    assert parse_offsets("cam_1=3, cam_2=-1") == {"cam_1": 3, "cam_2": -1}
    assert parse_offsets(None) == {}
    with pytest.raises(CaptureError, match="CAMERA=INTEGER.*'cam_1:3'"):
        parse_offsets("cam_1:3")


# --------------------------------------------------------------------------------------------- temporal
def test_fill_gaps_only_short_inner_gaps():
    t = np.arange(30, dtype=float)
    x = np.stack([t, 2 * t, -t], -1)[:, None, :].repeat(2, axis=1)  # (T, 2, 3) linear motion
    x[5:8, 0] = np.nan  # 3 frames: filled
    x[12:20, 0] = np.nan  # 8 frames: kept missing
    x[:2, 1] = np.nan  # at the start: kept missing
    out, filled = fill_gaps(x, max_gap=4)
    assert np.allclose(out[5:8, 0], np.stack([t, 2 * t, -t], -1)[5:8])
    assert filled[5:8, 0].all() and filled.sum() == 3
    assert np.isnan(out[12:20, 0]).all() and np.isnan(out[:2, 1]).all()
    assert not fill_gaps(x, 0)[1].any()


def test_lowpass_zero_phase_and_cutoff():
    fps, T = 60.0, 600
    t = np.arange(T) / fps
    slow, fast = np.sin(2 * np.pi * 1.0 * t), np.sin(2 * np.pi * 15.0 * t)
    x = np.stack([slow + 0.5 * fast, slow, slow], -1)[:, None, :]
    x[300:303] = np.nan
    y = lowpass(x, fps, cutoff_hz=6.0, order=4)
    inner = slice(60, 280)
    assert np.abs(y[inner, 0, 0] - slow[inner]).max() < 0.02  # 15 Hz gone, 1 Hz kept without lag
    assert np.isnan(y[300:303]).all() and np.isfinite(y[303:]).all()
    # at the cut-off the zero-phase response is 0.5 (-6 dB)
    cut = np.sin(2 * np.pi * 6.0 * t)[:, None, None].repeat(3, -1)
    assert np.abs(lowpass(cut, fps, 6.0)[inner]).max() == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="Nyquist"):
        lowpass(x, fps, cutoff_hz=40.0)
    with pytest.raises(ValueError, match="even"):
        lowpass(x, fps, cutoff_hz=6.0, order=3)


# --------------------------------------------------------------------------------------------- people
def test_select_person_prefers_the_person_all_views_agree_on(tmp_path, rig):
    gt = _capture(tmp_path, rig, frames=20, bystander=True, noise_px=1.0)
    people = torch.from_numpy(load_capture(RIG, tmp_path / "kp", progress=False).people)
    assert people.shape[2] == 2  # cam_1 and cam_2 also see the bystander, listed first
    kp, person = select_person(people, rig)
    assert (person[:, :2] == 1).all() and (person[:, 2:] == 0).all()
    assert np.allclose(kp[..., :2].numpy(), gt.keypoints[..., :2], atol=0.01, equal_nan=True)


# --------------------------------------------------------------------------------------------- end to end
def test_end_to_end_outputs_and_accuracy(tmp_path, rig):
    gt = _capture(tmp_path, rig, noise_px=1.0)
    out = _run(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "out"),
                "--fps", "30"])
    assert "reprojection error (px, used views)" in out and "per camera" in out and "cam_3" in out
    with h5py.File(tmp_path / "out" / "poses3d.h5") as f:
        X = f["poses3d"][:]
        assert X.shape == (60, 25, 3)
        assert f["points2d"].shape == (60, 4, 25, 2) and f["reprojection_error"].shape == (60, 4, 25)
        assert f["used"].dtype == bool and f["confidence"].shape == (60, 4, 25)
        assert list(f.attrs["joints"]) == list(BODY25.joints) and list(f.attrs["cameras"]) == rig.names
        assert f["frame_index"][:].tolist() == list(range(60))
        err, used = f["reprojection_error"][:], f["used"][:]
    assert mpjpe(X, gt.points3d) < 5.0
    header, names, time, trc = read_trc(tmp_path / "out" / "poses3d.trc")
    assert header["Units"] == "m" and header["NumFrames"] == "60" and header["DataRate"] == "30"
    assert names == list(BODY25.joints)
    assert np.allclose(time, np.arange(60) / 30.0, atol=1e-6)
    assert np.allclose(trc, zup_to_yup(X) / 1000.0, atol=1e-5)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rep = summary["reprojection_error_px"]
    assert summary["frames"] == 60 and rep["median"] == pytest.approx(np.median(err[used]), rel=1e-6)
    assert rep["p90"] == pytest.approx(np.percentile(err[used], 90), rel=1e-6)
    assert 0.5 < rep["median"] < 2.0  # 1 px noise per coordinate
    bones = summary["bone_length_mm"]
    assert set(bones) == {f"{BODY25.joints[a]}-{BODY25.joints[b]}" for a, b in BODY25.limbs}
    true_len = np.linalg.norm(gt.points3d[:, 9] - gt.points3d[:, 10], axis=-1).mean()  # RHip-RKnee
    assert bones["RHip-RKnee"]["mean"] == pytest.approx(true_len, abs=5.0) and bones["RHip-RKnee"]["std"] < 5.0
    assert summary["excluded_view_fraction"] < 0.02 and summary["frames_with_missing_joints"] == 0
    assert (tmp_path / "out" / "report.txt").read_text() in out
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_robust_modes_beat_plain_dlt_on_outliers(tmp_path, rig):
    gt = _capture(tmp_path, rig, frames=90, noise_px=2.0, outlier_rate=0.08, seed=3)
    errs, excluded = {}, {}
    for mode in ("dlt", "drop_worst", "ransac"):
        res = run_capture(RIG, tmp_path / "kp", tmp_path / mode, CaptureOptions(mode=mode, progress=False, fps=30))
        errs[mode] = mpjpe(res.points3d, gt.points3d)
        excluded[mode] = res.summary["excluded_view_fraction"]
    assert errs["drop_worst"] < 0.4 * errs["dlt"] and errs["ransac"] < 0.4 * errs["dlt"]
    assert errs["drop_worst"] < 10.0 and errs["ransac"] < 10.0
    assert excluded["dlt"] == 0.0
    assert excluded["drop_worst"] == pytest.approx(gt.outliers.mean(), abs=0.03)


def test_unresolved_points_counted_kept_or_rejected(tmp_path, rig):
    """With many outliers some joints keep disagreeing views after drop_worst reaches --min-views: they are
    counted (the largest kept-view error above the threshold), kept by default, left missing on request."""
    gt = _capture(tmp_path, rig, frames=40, noise_px=2.0, outlier_rate=0.35, seed=7)
    kept = run_capture(RIG, tmp_path / "kp", tmp_path / "kept", CaptureOptions(progress=False, fps=30))
    info = kept.summary["checks"]["unresolved_points"]
    worst = np.where(kept.used, kept.reprojection_error, -np.inf).max(axis=1)  # (T, J), points = raw here
    expected = (worst > 20.0) & np.isfinite(kept.points3d).all(-1)
    assert info["count"] == int(expected.sum()) > 10 and not info["rejected"]
    assert sum(info["per_joint"].values()) == info["count"]
    assert any("kept (--reject-unresolved" in i["message"] for i in kept.summary["issues"])
    out = tmp_path / "rejected"
    r = CliRunner().invoke(main, ["triangulate", "--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"),
                                  "--out", str(out), "--fps", "30", "--reject-unresolved"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    info_r = summary["checks"]["unresolved_points"]
    assert info_r["count"] == info["count"] and info_r["rejected"] and info_r["of"] == info["of"]
    with h5py.File(out / "poses3d.h5") as f:
        X = f["poses3d"][:]
    finite_kept, finite_rej = np.isfinite(kept.points3d).all(-1), np.isfinite(X).all(-1)
    assert (finite_kept & ~finite_rej).sum() == info["count"] and not (finite_rej & ~finite_kept).any()
    assert np.array_equal(finite_kept & ~finite_rej, expected)
    # what is left is better than what was kept
    assert mpjpe(X[finite_rej], gt.points3d[finite_rej]) < mpjpe(kept.points3d[finite_kept], gt.points3d[finite_kept])
    assert "left missing (--reject-unresolved)" in (out / "report.txt").read_text()
    assert "--reject-unresolved goes with" in _fail(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"),
                                                     "--out", str(tmp_path / "x"), "--mode", "dlt", "--reject-unresolved"])


def test_refinement_on_a_short_capture(tmp_path, rig):
    gt = _capture(tmp_path, rig, frames=12, noise_px=2.0, outlier_rate=0.05, seed=5)
    plain = run_capture(RIG, tmp_path / "kp", tmp_path / "a", CaptureOptions(progress=False, fps=30))
    refined = run_capture(RIG, tmp_path / "kp", tmp_path / "b", CaptureOptions(refine=True, progress=False, fps=30))
    assert mpjpe(refined.points3d, gt.points3d) < mpjpe(plain.points3d, gt.points3d) + 0.5
    e_plain = plain.reprojection_error[plain.used].mean()
    assert refined.reprojection_error[refined.used].mean() <= e_plain + 1e-6


def test_gap_filling_and_low_pass_filter(tmp_path, rig):
    gt = _capture(tmp_path, rig, frames=120, fps=60.0, noise_px=4.0, seed=7)
    for name in rig.names:  # the right wrist is missing in every view for frames 50..53
        for f in range(50, 54):
            path = tmp_path / "kp" / name / f"{name}_{f:012d}_keypoints.json"
            doc = json.loads(path.read_text())
            doc["people"][0]["pose_keypoints_2d"][3 * 4:3 * 4 + 3] = [0, 0, 0]
            path.write_text(json.dumps(doc))
    base = ["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--fps", "60"]
    _run([*base, "--out", str(tmp_path / "raw")])
    _run([*base, "--out", str(tmp_path / "smooth"), "--max-gap", "5", "--cutoff", "8"])
    with h5py.File(tmp_path / "raw" / "poses3d.h5") as f:
        raw = f["poses3d"][:]
    with h5py.File(tmp_path / "smooth" / "poses3d.h5") as f:
        smooth, filled = f["poses3d"][:], f["filled"][:]
    assert np.isnan(raw[50:54, 4]).all() and np.isfinite(smooth[50:54, 4]).all()
    assert filled[50:54, 4].all() and filled.sum() == 4
    assert np.linalg.norm(smooth[50:54, 4] - gt.points3d[50:54, 4], axis=-1).max() < 30.0
    ok = np.isfinite(raw).all(-1)
    assert mpjpe(smooth[ok], gt.points3d[ok]) < 0.8 * mpjpe(raw[ok], gt.points3d[ok])
    summary = json.loads((tmp_path / "smooth" / "summary.json").read_text())
    assert summary["frames_with_missing_joints"] == 0 and summary["frames_with_missing_joints_before_filling"] == 4


def test_several_people_per_frame(tmp_path, rig):
    gt = _capture(tmp_path, rig, bystander=True, noise_px=1.0)
    _run(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "out")])
    with h5py.File(tmp_path / "out" / "poses3d.h5") as f:
        assert mpjpe(f["poses3d"][:], gt.points3d) < 5.0
        assert (f["person"][:, :2] == 1).all()


def test_coco_results_input_and_h36m_joints(tmp_path, rig):
    gt = make_synthetic_capture(tmp_path / "op", rig, frames=20, joint_set="h36m", noise_px=1.0)
    (tmp_path / "coco").mkdir()
    for v, name in enumerate(rig.names):
        recs = [{"image_id": f, "category_id": 1, "score": 0.9,
                 "keypoints": np.nan_to_num(gt.keypoints[f, v]).ravel().tolist()} for f in range(20)]
        (tmp_path / "coco" / f"{name}.json").write_text(json.dumps(recs))
    _run(["--calibration", str(RIG), "--keypoints", str(tmp_path / "coco"), "--joints", "h36m",
          "--out", str(tmp_path / "out")])
    with h5py.File(tmp_path / "out" / "poses3d.h5") as f:
        assert f.attrs["joint_set"] == "h36m" and mpjpe(f["poses3d"][:], gt.points3d) < 5.0


# --------------------------------------------------------------------------------------------- bad input
def test_camera_names_must_match(tmp_path, rig):
    _capture(tmp_path, rig, frames=5)
    (tmp_path / "kp" / "cam_4").rename(tmp_path / "kp" / "camera4")
    out = _fail(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o")])
    assert "camera4 not in the calibration" in out
    assert "calibration cameras: cam_1, cam_2, cam_3, cam_4" in out and "camera4" in out


def test_missing_camera_is_a_warning(tmp_path, rig):
    gt = _capture(tmp_path, rig, frames=30)
    shutil.rmtree(tmp_path / "kp" / "cam_2")
    out = _run(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o")])
    assert "no keypoints for calibrated camera(s) cam_2" in out
    with h5py.File(tmp_path / "o" / "poses3d.h5") as f:
        assert list(f.attrs["cameras"]) == ["cam_1", "cam_3", "cam_4"]
        assert mpjpe(f["poses3d"][:], gt.points3d) < 6.0


def test_short_camera_empty_camera_and_corrupt_file(tmp_path, rig):
    gt = _capture(tmp_path, rig, frames=40)
    for f in range(30, 40):  # cam_1 stopped recording early
        (tmp_path / "kp" / "cam_1" / f"cam_1_{f:012d}_keypoints.json").unlink()
    for path in (tmp_path / "kp" / "cam_3").iterdir():  # cam_3 never detected anyone
        path.write_text(json.dumps({"version": 1.3, "people": []}))
    (tmp_path / "kp" / "cam_4" / "cam_4_000000000005_keypoints.json").write_text("{not json")
    out = _run(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o")])
    assert "camera cam_1: keypoints for 30 of 40 frames" in out
    assert "camera cam_3: no keypoint in any frame" in out
    assert "cam_4_000000000005_keypoints.json: not valid JSON" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["frames"] == 40 and sum("cam_3" in i["message"] for i in summary["issues"]) == 1
    assert summary["issue_counts"]["frames"] == 11  # cam_1 misses 10 frames, cam_4 one
    with h5py.File(tmp_path / "o" / "poses3d.h5") as f:
        X, used = f["poses3d"][:], f["used"][:]
    assert not used[:, 2].any() and not used[30:, 0].any() and not used[5, 3].any()
    # frame 5 has two views left (cam_1, cam_2), frames 30..39 too (cam_2, cam_4): still triangulated
    assert np.isfinite(X).all() and mpjpe(X, gt.points3d) < 8.0


def test_no_detection_anywhere_is_an_error(tmp_path, rig):
    _capture(tmp_path, rig, frames=3)
    for path in (tmp_path / "kp").glob("*/*.json"):
        path.write_text(json.dumps({"people": []}))
    out = _fail(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o")])
    assert "no camera has a single detected keypoint" in out
    assert not (tmp_path / "o").exists()


def test_calibration_for_another_image_size_warns(tmp_path, rig):
    _capture(tmp_path, rig, frames=5)
    params = params_from_cameras(rig)
    for p in params:
        p["size"] = p["size"] / 2
    write_mvpose_calibration(tmp_path / "half.json", params)
    out = _run(["--calibration", str(tmp_path / "half.json"), "--keypoints", str(tmp_path / "kp"),
                "--out", str(tmp_path / "o")])
    assert "fall outside the calibrated image 960x540" in out and "another resolution" in out


def test_image_bounds_message_gives_the_span_of_the_keypoints(rig):
    # Keypoints inside the far edges but some extrapolated past the left border (as OpenPose does for a person
    # cut by it): the message must show where they are, not only the largest coordinates.
    size = rig.image_size[0].numpy()
    people = np.zeros((10, len(rig.names), 1, 5, 3))
    people[..., 0], people[..., 1], people[..., 2] = 0.5 * size[0], 0.25 * size[1], 0.9
    people[:, 0, 0, 0, 0] = -49.0  # 20 % of camera 0's keypoints at x = -49
    issues = IssueLog()
    check_image_bounds(people, rig, rig.names, issues)
    [entry] = issues.entries
    assert entry.kind == "calibration" and entry.count == 10 and rig.names[0] in entry.message
    assert "20% of keypoints" in entry.message and f"x -49..{0.5 * size[0]:.0f}" in entry.message
    assert f"y {0.25 * size[1]:.0f}..{0.25 * size[1]:.0f}" in entry.message


def test_offsets_synchronise_cameras(tmp_path, rig):
    gt = _capture(tmp_path, rig, frames=30)
    folder = tmp_path / "kp" / "cam_2"
    for path in sorted(folder.iterdir(), reverse=True):  # cam_2 started 3 frames early
        f = int(path.name.split("_")[2])
        path.rename(folder / f"cam_2_{f + 3:012d}_keypoints.json")
    _run(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o"),
          "--offsets", "cam_2=3"])
    with h5py.File(tmp_path / "o" / "poses3d.h5") as f:
        assert f["frame_index"][:].tolist() == list(range(30)) and mpjpe(f["poses3d"][:], gt.points3d) < 5.0
    out = _fail(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o2"),
                 "--offsets", "cam_9=3"])
    assert "cam_9" in out


def test_usage_errors(tmp_path, rig):
    _capture(tmp_path, rig, frames=3)
    base = ["--calibration", str(RIG), "--out", str(tmp_path / "o")]
    assert "exactly one of --keypoints" in _fail(base)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"")
    assert "--checkpoint needs the frames" in _fail([*base, "--checkpoint", str(ckpt)])
    assert "needs the frame rate" in _fail([*base, "--keypoints", str(tmp_path / "kp"), "--cutoff", "6"])
    assert "25 keypoints per person, but joint set 'coco' has 17" in _fail([*base, "--keypoints", str(tmp_path / "kp"),
                                                                          "--joints", "coco"])
    # Option values are checked by the CLI, naming the option, before anything is read.
    kp = [*base, "--keypoints", str(tmp_path / "kp")]
    for args, message in ((["--threshold", "0"], "'--threshold': 0.0 is not in the range x>0"),
                          (["--min-views", "1"], "'--min-views': 1 is not in the range x>=2"),
                          (["--max-gap", "-1"], "'--max-gap': -1 is not in the range x>=0"),
                          (["--order", "3"], "'--order': must be even"),
                          (["--fps", "0"], "'--fps': 0.0 is not in the range x>0"),
                          (["--render-every", "0"], "'--render-every': 0 is not in the range x>=1"),
                          (["--plot-frames", "a,b"], "'--plot-frames': expected comma-separated frame numbers, found 'a,b'")):
        assert message in _fail([*kp, *args]), args
    out = _fail(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "kp" / "res")])
    assert f"--out {tmp_path / 'kp' / 'res'} is inside --keypoints {tmp_path / 'kp'}" in out
    # Plot frames outside the capture: refused once the capture is read, before triangulating or rendering.
    out = _fail([*kp, "--render", "--plot-frames", "1,99"])
    assert "--plot-frames: frames [99] are not in the capture (its frames are 0..2)" in out
    assert not (tmp_path / "o").exists()


def test_cutoff_checked_against_the_frame_rate_up_front(tmp_path, rig, monkeypatch):
    from mvpose.capture import pipeline
    from mvpose.capture.issues import CaptureError
    from mvpose.capture.stages import frame_rate
    from mvpose.capture.types import CaptureOptions

    _capture(tmp_path, rig, frames=3)
    called = []
    monkeypatch.setattr(pipeline, "process_capture", lambda *a, **k: called.append(1))
    out = _fail(["--calibration", str(RIG), "--out", str(tmp_path / "o"), "--keypoints", str(tmp_path / "kp"),
                 "--fps", "30", "--cutoff", "100"])
    assert "Error: --cutoff 100: must be below the Nyquist frequency 15 Hz of the frame rate 30 (--fps)" in out
    assert not called and not (tmp_path / "o").exists()
    with pytest.raises(CaptureError, match="must be > 0 Hz"):
        CaptureOptions(cutoff_hz=0.0).check()
    CaptureOptions(cutoff_hz=14.9, fps=30.0).check()
    with pytest.raises(CaptureError, match="Nyquist frequency 12.5 Hz of the frame rate 25 \\(read from the videos\\)"):
        frame_rate(CaptureOptions(cutoff_hz=20.0), 25.0)
    assert frame_rate(CaptureOptions(cutoff_hz=6.0), 25.0) == 25.0


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


# --------------------------------------------------------------------------------------------- pictures
def test_render_overlays_and_3d_plot(tmp_path, rig):
    small = params_from_cameras(rig)
    for p in small:  # a quarter-size rig keeps the pictures small
        p["K"] = np.diag([0.25, 0.25, 1.0]) @ p["K"]
        p["size"] = p["size"] / 4
    write_mvpose_calibration(tmp_path / "small.json", small)
    cams = load_calibration(tmp_path / "small.json")
    gt = _capture(tmp_path, cams, frames=10, noise_px=0.3)
    (tmp_path / "videos").mkdir()
    writer = cv2.VideoWriter(str(tmp_path / "videos" / "cam_1.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (480, 270))
    for _ in range(10):
        writer.write(np.full((270, 480, 3), 200, np.uint8))
    writer.release()
    _run(["--calibration", str(tmp_path / "small.json"), "--keypoints", str(tmp_path / "kp"), "--out",
          str(tmp_path / "o"), "--videos", str(tmp_path / "videos"), "--render", "--plot-frames", "0,9",
          "--workers", "2"])
    render = tmp_path / "o" / "render"
    video = cv2.VideoCapture(str(render / "cam_1.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 10
    ok, first = video.read()
    assert ok and first.shape == (270, 480, 3)
    images = sorted((render / "cam_2").glob("*.jpg"))
    assert [p.name for p in images] == [f"{f:06d}.jpg" for f in range(10)]
    # the skeleton is drawn where the true 3D bone projects: middle of the right thigh in cam_2, frame 3
    mid = (gt.points3d[3, 9] + gt.points3d[3, 10]) / 2
    u, v = cams[1:2].project(torch.tensor(mid)[None, None])[0, 0].round().int().tolist()
    img = cv2.imread(str(images[3]))
    patch = img[v - 2:v + 3, u - 2:u + 3].reshape(-1, 3).astype(int)
    assert (np.abs(patch - [60, 220, 60]).sum(-1) < 90).any()
    assert cv2.imread(str(render / "skeleton3d.png")) is not None
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["fps"] == 30.0  # read from the video


def test_progress_and_logging_do_not_break_without_tty(tmp_path, rig, caplog):
    _capture(tmp_path, rig, frames=4)
    with caplog.at_level(logging.WARNING):
        res = run_capture(RIG, tmp_path / "kp", tmp_path / "o", CaptureOptions(progress=True))
    assert any("frame rate unknown" in r.message for r in caplog.records)
    assert res.summary["fps"] is None and (tmp_path / "o" / "poses3d.trc").exists()
