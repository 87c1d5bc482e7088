"""`mvpose triangulate` on inputs as other tools write them: placeholder people, unmet view counts, calibrations
in millimetres, keypoints in another joint order, and every warning in the report (issue #15)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mvpose.capture.checks import check_skeleton, skeleton_fit
from mvpose.capture.issues import IssueLog
from mvpose.capture.keypoints import parse_openpose, read_coco_results
from mvpose.capture.synthetic import make_synthetic_capture, project_keypoints, synthetic_motion, rig_floor_center
from mvpose.cli import main
from mvpose.geometry.calibration import (
    CalibrationError,
    load_calibration,
    params_from_cameras,
    read_calibration,
    write_mvpose_calibration,
)
from mvpose.metrics import mpjpe

REPO = Path(__file__).resolve().parents[2]
RIG = REPO / "mvpose" / "calibration" / "examples" / "rig4.json"


@pytest.fixture(scope="module")
def rig():
    return load_calibration(RIG)


def _sub_rig(tmp_path: Path, rig, n: int) -> tuple[Path, object]:
    """The first ``n`` cameras of rig4 as a calibration file."""
    path = tmp_path / f"rig{n}.json"
    write_mvpose_calibration(path, params_from_cameras(rig)[:n])
    return path, load_calibration(path)


def _invoke(args: list[str]):
    return CliRunner().invoke(main, ["triangulate", *args])


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _kinds(summary: dict) -> dict[str, int]:
    return summary["issue_counts"]


def _put_ahead(folder: Path, placeholder) -> int:
    """Insert ``placeholder`` ahead of the real person in every OpenPose file of ``folder``."""
    files = sorted(folder.glob("*.json"))
    for f in files:
        doc = json.loads(f.read_text())
        doc["people"].insert(0, placeholder)
        f.write_text(json.dumps(doc))
    return len(files)


# ------------------------------------------------------------------------------------------ 1. placeholders
def test_openpose_and_coco_placeholders_are_skipped_and_counted(tmp_path):
    real = [10, 20, 0.9, 30, 40, 0.8, 0, 0, 0]
    doc = {"people": [None, {"pose_keypoints_2d": None}, {"pose_keypoints_2d": [0] * 9},
                      {"pose_keypoints_2d": []}, {"pose_keypoints_2d": real}]}
    skipped: dict[str, int] = {}
    people = parse_openpose(json.dumps(doc), "f.json", skipped)
    assert len(people) == 1 and np.allclose(people[0][1], [30, 40, 0.8])
    assert skipped == {"null": 1, "null_keypoints": 1, "all_zero": 1, "empty": 1}
    recs = [None, {"image_id": 3, "keypoints": [0] * 9}, {"image_id": 3, "keypoints": None},
            {"image_id": 3, "keypoints": real}, {"image_id": 4, "keypoints": [0] * 9}]
    (tmp_path / "cam.json").write_text(json.dumps(recs))
    cam = read_coco_results(tmp_path / "cam.json")
    assert cam.frames.tolist() == [3, 4] and cam.issues == []
    assert cam.skipped == {"null": 1, "all_zero": 2, "null_keypoints": 1}
    assert np.allclose(cam.people[0, 0, 0], [10, 20, 0.9]) and (cam.people[1, :, :, 2] == 0).all()


@pytest.mark.parametrize("placeholder", [
    {"person_id": [-1], "pose_keypoints_2d": [0.0] * 75},  # all-zero slot
    None,  # null slot
    {"person_id": [-1], "pose_keypoints_2d": None},  # slot without keypoints
])
def test_placeholder_ahead_of_the_real_person_two_cameras(tmp_path, rig, placeholder):
    calib, cams = _sub_rig(tmp_path, rig, 2)
    gt = make_synthetic_capture(tmp_path / "kp", cams, frames=6, joint_set="body25", noise_px=0.5)
    n = sum(_put_ahead(tmp_path / "kp" / name, placeholder) for name in cams.names)
    r = _invoke(["--calibration", str(calib), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "o" / "poses3d.h5") as f:
        X = f["poses3d"][:]
    ok = np.isfinite(X).all(-1)
    assert ok.mean() > 0.9 and mpjpe(X[ok], gt.points3d[ok]) < 5.0  # the real person, not NaN
    s = _summary(tmp_path / "o")
    assert _kinds(s)["placeholders"] == n == 12
    assert "skipped placeholder people" in r.output and "skipped placeholder people" in (tmp_path / "o" / "report.txt").read_text()


def test_camera_without_usable_file_is_dropped_and_the_run_goes_on(tmp_path, rig):
    calib, cams = _sub_rig(tmp_path, rig, 4)
    gt = make_synthetic_capture(tmp_path / "kp", cams, frames=5, joint_set="body25", noise_px=0.5)
    _put_ahead(tmp_path / "kp" / "cam_2", None)  # every file of cam_2 has a null entry: still read
    for f in (tmp_path / "kp" / "cam_3").glob("*.json"):  # no file of cam_3 can be read at all
        f.write_text('{"people": [')
    r = _invoke(["--calibration", str(calib), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    s = _summary(tmp_path / "o")
    assert s["cameras"] == ["cam_1", "cam_2", "cam_4"]
    assert any(i["kind"] == "cameras" and "camera cam_3: no usable keypoints, camera dropped" in i["message"]
               for i in s["issues"])
    with h5py.File(tmp_path / "o" / "poses3d.h5") as f:
        assert f["used"][:, 1].any() and mpjpe(f["poses3d"][:], gt.points3d) < 5.0
    for f in [*(tmp_path / "kp" / "cam_1").glob("*.json"), *(tmp_path / "kp" / "cam_2").glob("*.json")]:
        f.write_text("[]")
    r = _invoke(["--calibration", str(calib), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o2")])
    # cam_4 alone is left: the message names the unusable cameras
    assert r.exit_code != 0 and "cam_3" in r.output and "at least 2" in r.output


# ------------------------------------------------------------------------------------------ 2. view counts
def test_min_views_that_cannot_be_met(tmp_path, rig):
    calib, cams = _sub_rig(tmp_path, rig, 3)
    make_synthetic_capture(tmp_path / "kp", cams, frames=8, joint_set="body25", noise_px=0.5)
    for f in sorted((tmp_path / "kp" / "cam_3").glob("*.json"))[4:]:  # cam_3 sees the person in frames 0-3 only
        f.write_text(json.dumps({"people": []}))
    base = ["--calibration", str(calib), "--keypoints", str(tmp_path / "kp"), "--min-views", "3"]
    r = _invoke([*base, "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    s = _summary(tmp_path / "o")
    views = s["checks"]["views"]
    assert views["max_views"] == 3
    # frames 4-7: every joint cam_1 and cam_2 both see is short of the third view
    assert s["frames_with_missing_joints"] >= 4 and sum(views["too_few_views"].values()) == _kinds(s)["views"] > 0
    report = (tmp_path / "o" / "report.txt").read_text()
    assert "VIEWS: --min-views 3" in report and "(4..7) had only 2..2 usable views" in report
    assert "lower --min-views" in report and views["too_few_views_frames"] == "4..7"
    for f in sorted((tmp_path / "kp" / "cam_3").glob("*.json")):  # now cam_3 sees nobody
        f.write_text(json.dumps({"people": []}))
    r = _invoke([*base, "--out", str(tmp_path / "o2")])
    assert r.exit_code != 0
    assert "nothing could be triangulated" in r.output and "--min-views 3, but at most 2 cameras" in r.output
    assert "lower --min-views to 2" in r.output and not (tmp_path / "o2" / "poses3d.h5").exists()
    r = _invoke(["--calibration", str(calib), "--keypoints", str(tmp_path / "kp"), "--min-confidence", "1.5",
                 "--out", str(tmp_path / "o3")])
    assert r.exit_code != 0 and "lower --min-confidence" in r.output


# ------------------------------------------------------------------------------------------ 3. units
def _anipose_toml(path: Path, cams, metadata: str = "") -> None:
    """An anipose calibration.toml of ``cams`` with translations in mm (board square size given in mm)."""
    text = "".join(
        f'[cam_{i}]\nname = "{p["name"]}"\nsize = [ {int(p["size"][0])}, {int(p["size"][1])},]\n'
        f"matrix = {np.asarray(p['K']).tolist()}\ndistortions = {p['dist'].tolist()}\n"
        f"rotation = {cv2.Rodrigues(p['R'])[0].ravel().tolist()}\ntranslation = {p['t'].tolist()}\n\n"
        for i, p in enumerate(params_from_cameras(cams))
    ) + f"[metadata]\nadjusted = false\nerror = 0.3\n{metadata}"
    path.write_text(text)


def test_calibration_in_millimetres_read_as_metres_is_loud_and_fixable(tmp_path, rig):
    gt = make_synthetic_capture(tmp_path / "kp", rig, frames=5, joint_set="body25", noise_px=0.5)
    toml = tmp_path / "calibration.toml"
    _anipose_toml(toml, rig)
    base = ["--calibration", str(toml), "--keypoints", str(tmp_path / "kp")]
    r = _invoke([*base, "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    s = _summary(tmp_path / "o")
    assert s["calibration_units"] == "m" and s["checks"]["skeleton"]["likely_units"] == "mm"
    assert 900 < s["checks"]["skeleton"]["scale"] < 1100
    assert _kinds(s)["units"] == 1 and _kinds(s)["calibration"] == 1  # bones and rig scale both say so
    report = (tmp_path / "o" / "report.txt").read_text()
    assert "UNITS:" in report and "rerun with --calibration-units mm" in report
    assert "the file is likely in mm" in report  # rig scale: 3.9 km read in m -> 3.9 m in mm
    with h5py.File(tmp_path / "o" / "poses3d.h5") as f:  # the h5 file says mm, and carries the issue
        assert f.attrs["units"] == "mm" and json.loads(f.attrs["issues"])["counts"]["units"] == 1
    for extra, out in ((["--calibration-units", "mm"], "o2"), ([], "o3")):
        if out == "o3":
            _anipose_toml(toml, rig, 'units = "mm"\n')  # the unit stated in the file
        r = _invoke([*base, *extra, "--out", str(tmp_path / out)])
        assert r.exit_code == 0, r.output
        s = _summary(tmp_path / out)
        assert "units" not in _kinds(s) and "calibration" not in _kinds(s) and "skeleton" not in _kinds(s)
        with h5py.File(tmp_path / out / "poses3d.h5") as f:
            assert mpjpe(f["poses3d"][:], gt.points3d) < 5.0
    r = _invoke([*base, "--calibration-units", "m", "--out", str(tmp_path / "o4")])
    assert r.exit_code != 0 and "states 'mm'" in r.output and "'m' were requested" in r.output


def test_mvpose_calibration_written_in_metres_gets_advice_it_can_follow(tmp_path, rig):
    """mvpose JSON is mm by definition (--calibration-units m and units: m are refused), so the advice for a file
    whose translations were written in metres is to convert them, not an option that would be refused."""
    make_synthetic_capture(tmp_path / "kp", rig, frames=5, joint_set="body25", noise_px=0.5)
    params = params_from_cameras(rig)
    for p in params:
        p["t"] = p["t"] / 1000.0
    write_mvpose_calibration(tmp_path / "rig_m.json", params)
    r = _invoke(["--calibration", str(tmp_path / "rig_m.json"), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    report = (tmp_path / "o" / "report.txt").read_text()
    assert "mvpose JSON/TOML and Qualisys files are in mm by definition: multiply their translations by 1000" in report
    assert "mvpose calibrations are in mm by definition: convert the file's translations to mm" in report
    assert "state the unit" not in report


def test_calibration_units_for_every_format(tmp_path, rig):
    write_mvpose_calibration(tmp_path / "rig.json", params_from_cameras(rig))
    with pytest.raises(CalibrationError, match="mvpose calibrations are in mm"):
        read_calibration(tmp_path / "rig.json", units="m")
    assert read_calibration(tmp_path / "rig.json", units="mm")
    _anipose_toml(tmp_path / "c.toml", rig)
    t_cm = read_calibration(tmp_path / "c.toml", units="cm")[""][0]["t"]
    assert np.allclose(t_cm, params_from_cameras(rig)[0]["t"] * 10)


def test_rig_scale_warning_names_the_likely_unit(tmp_path, rig, caplog):
    params = params_from_cameras(rig)
    for p in params:
        p["t"] = p["t"] / 1000.0  # a file in metres labelled mm: cameras a few mm apart
    write_mvpose_calibration(tmp_path / "tiny.json", params)
    with caplog.at_level(logging.WARNING):
        read_calibration(tmp_path / "tiny.json")
    assert any("read in 'm' they would lie" in r.message and "likely in m" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_calibration(RIG)
    assert not caplog.records


# ------------------------------------------------------------------------------------------ 4. joint order
def _coco_results(folder: Path, keypoints: np.ndarray, names) -> None:
    """(T, V, J, 3) keypoints as one COCO results JSON per camera."""
    folder.mkdir(parents=True)
    for v, name in enumerate(names):
        recs = [{"image_id": t, "category_id": 1, "score": 0.9,
                 "keypoints": np.nan_to_num(keypoints[t, v], nan=0.0).round(2).ravel().tolist()}
                for t in range(keypoints.shape[0])]
        (folder / f"{name}.json").write_text(json.dumps(recs))


def _triangulate_motion(tmp_path, rig, joint_set: str):
    """A motion of ``joint_set`` written as COCO results and triangulated without ``--joints`` into ``o``.

    Returns: the motion (T, J, 3), the CLI arguments naming the inputs, the summary."""
    X = synthetic_motion(6, 30.0, joint_set, center=rig_floor_center(rig), seed=0, radius=700.0)
    uv, inside = project_keypoints(X, rig)
    kp = np.concatenate([uv, np.where(inside, 0.9, 0.0)[..., None]], axis=-1)
    _coco_results(tmp_path / "kp", kp, rig.names)
    base = ["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp")]
    r = _invoke([*base, "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    return X, base, _summary(tmp_path / "o")


def test_h36m_order_read_as_coco_is_flagged_with_the_fitting_joint_set(tmp_path, rig):
    X, base, s = _triangulate_motion(tmp_path, rig, "h36m")
    sk = s["checks"]["skeleton"]
    assert s["joint_set"] == "coco" and sk["better_joint_set"] == "h36m" and _kinds(s)["skeleton"] == 1
    assert "units" not in _kinds(s)  # the wrong order does not pass for a wrong unit
    report = (tmp_path / "o" / "report.txt").read_text()
    assert "SKELETON: the bones do not fit joint set coco" in report and "rerun with --joints h36m" in report
    r = _invoke([*base, "--joints", "h36m", "--out", str(tmp_path / "o2")])
    s = _summary(tmp_path / "o2")
    assert r.exit_code == 0 and "skeleton" not in _kinds(s) and s["checks"]["skeleton"]["bone_error"] < 0.15
    with h5py.File(tmp_path / "o2" / "poses3d.h5") as f:
        assert mpjpe(f["poses3d"][:], X) < 1.0


def test_body25b_order_read_as_body25_is_flagged_with_body25b(tmp_path, rig):
    # OpenPose BODY_25B (Pose2Sim's demos) has 25 keypoints like BODY_25, in another order.
    X, base, s = _triangulate_motion(tmp_path, rig, "body25b")
    assert s["joint_set"] == "body25" and s["checks"]["skeleton"]["better_joint_set"] == "body25b"
    assert "rerun with --joints body25b" in (tmp_path / "o" / "report.txt").read_text()
    r = _invoke([*base, "--joints", "body25b", "--out", str(tmp_path / "o2")])
    s = _summary(tmp_path / "o2")
    assert r.exit_code == 0 and "skeleton" not in _kinds(s) and s["checks"]["skeleton"]["bone_error"] < 0.15
    with h5py.File(tmp_path / "o2" / "poses3d.h5") as f:
        assert mpjpe(f["poses3d"][:], X) < 1.0
        assert list(f.attrs["joints"])[17:19] == ["Neck", "Head"]


def test_skeleton_fit_values():
    X = synthetic_motion(4, 30.0, "coco", seed=0)
    fit = skeleton_fit(X, "coco")
    assert 0.8 < fit["scale"] < 1.25 and fit["bone_error"] < 0.1 and fit["asymmetry"] < 1e-6
    log = IssueLog()
    out = check_skeleton(X / 10.0, "coco", log, units="mm")  # a calibration in cm read as mm: 10x too small
    assert out["likely_units"] == "cm" and log.counts() == {"units": 1}
    assert check_skeleton(X * 10.0, "coco", log, units="mm")["likely_units"] is None  # no unit below mm
    out = check_skeleton(X, "h36m", log)  # COCO points read as Human3.6M
    assert out["better_joint_set"] == "coco" and log.counts()["skeleton"] == 1
    # Joints collapsed towards one point (a model that learned the average crop): small, but no skeleton, so
    # no unit advice (it would send the user after a calibration that is fine).
    pile = X.mean(axis=1, keepdims=True) + 0.05 * np.random.default_rng(0).normal(size=X.shape) * 100
    log = IssueLog()
    out = check_skeleton(pile, "coco", log, units="mm")
    units = [e.message for e in log.entries if e.kind == "units"]
    assert out["likely_units"] is None and len(units) == 1 and "rerun with" not in units[0]
    assert "do not fit a human skeleton either" in units[0] and log.counts()["skeleton"] == 1


# ------------------------------------------------------------------------------------------ 5. one issue log
def test_logged_warnings_are_issues_with_counts(tmp_path, rig):
    issues = IssueLog()
    other = logging.getLogger("mvpose.capture.detect")
    with issues.capture_logging(), issues.capture_logging():  # nested blocks listen once
        for f in range(3):
            other.warning("camera %s: cannot read image %s", "cam_1", f"{f}.jpg")
        issues.add("own issue", kind="input", count=2)
    assert [i.as_dict() for i in issues.entries] == [
        {"kind": "detect", "count": 3, "message": "camera cam_1: cannot read image 0.jpg [and 2 more like it]"},
        {"kind": "input", "count": 2, "message": "own issue"},
    ]
    # a warning of the temporal filter (too few frames for the low-pass) reaches report and summary
    make_synthetic_capture(tmp_path / "kp", rig, frames=5, joint_set="body25", noise_px=0.5)
    r = _invoke(["--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o"),
                 "--cutoff", "6", "--fps", "30"])
    assert r.exit_code == 0, r.output
    s = _summary(tmp_path / "o")
    assert _kinds(s) == {"temporal": 1}
    assert "too few for an order-4 filter" in (tmp_path / "o" / "report.txt").read_text()


def test_doubtful_results_are_issues(tmp_path, rig):
    calib, cams = _sub_rig(tmp_path, rig, 3)
    make_synthetic_capture(tmp_path / "kp", cams, frames=6, joint_set="body25", noise_px=0.5)
    for f in (tmp_path / "kp" / "cam_3").glob("*.json"):  # cam_3's keypoints 60 px off: calibration or detector
        doc = json.loads(f.read_text())
        kp = np.asarray(doc["people"][0]["pose_keypoints_2d"]).reshape(-1, 3)
        kp[:, 0] = np.where(kp[:, 2] > 0, kp[:, 0] + 60.0, 0.0)
        doc["people"][0]["pose_keypoints_2d"] = kp.ravel().tolist()
        f.write_text(json.dumps(doc))
    r = _invoke(["--calibration", str(calib), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o"),
                 "--fps", "30"])
    assert r.exit_code == 0, r.output
    s = _summary(tmp_path / "o")
    assert s["excluded_view_fraction"] > 0.3 and _kinds(s) == {"quality": 1}
    assert "QUALITY: 3" in (tmp_path / "o" / "report.txt").read_text()  # 33..34 % excluded


def test_frame_ranges():
    from mvpose.capture.checks import frame_ranges

    assert frame_ranges(np.array([0, 1, 2, 5, 7, 8])) == "0..2, 5, 7..8"
    assert frame_ranges(np.arange(0, 20, 2), limit=3) == "0, 2, 4, ..."
    assert frame_ranges(np.array([], dtype=int)) == "none"


def test_select_person_takes_the_only_detection_whatever_its_slot(rig):
    import torch

    from mvpose.capture.people import select_person

    people = torch.full((1, 4, 3, 2, 3), float("nan"), dtype=torch.float64)
    people[..., 2] = 0.0
    people[0, :, 2] = torch.tensor([[100.0, 200.0, 0.9], [110.0, 210.0, 0.8]], dtype=torch.float64)
    people[0, 1] = people[0, 1].roll(-2, dims=0)  # view 1: the detection in slot 0
    _, person = select_person(people, rig)
    assert person.tolist() == [[2, 0, 2, 2]]


def test_nan_or_negative_confidences_and_bad_positions_are_named(tmp_path, rig):
    """Values no detector should write are counted and named as such, not as placeholders or missing frames."""
    import json as _json

    calib, cams = _sub_rig(tmp_path, rig, 3)
    make_synthetic_capture(tmp_path / "kp", cams, frames=6, joint_set="body25", noise_px=0.5)
    for f in sorted((tmp_path / "kp" / "cam_1").glob("*.json")):  # every confidence of cam_1 NaN
        doc = _json.loads(f.read_text())
        for person in doc["people"]:
            kp = person["pose_keypoints_2d"]
            person["pose_keypoints_2d"] = [v if i % 3 != 2 else float("nan") for i, v in enumerate(kp)]
        f.write_text(_json.dumps(doc))
    f = sorted((tmp_path / "kp" / "cam_2").glob("*.json"))[0]  # cam_2, first frame: one null x, one negative confidence
    doc = _json.loads(f.read_text())
    kp = doc["people"][0]["pose_keypoints_2d"]
    kp[0], kp[5] = None, -0.5
    f.write_text(_json.dumps(doc))
    r = _invoke(["--calibration", str(calib), "--keypoints", str(tmp_path / "kp"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "o" / "report.txt").read_text()
    assert "camera cam_1: keypoints with values no detector writes were left out (6 people without a usable joint " \
           "(NaN or negative confidences, or no finite position); 150 joints with a NaN confidence)" in text
    assert "camera cam_2: keypoints with values no detector writes were left out (1 joints with a negative confidence; " \
           "1 joints with confidence > 0 but x or y null, NaN or infinite)" in text
    assert "cam_1: skipped placeholder people" not in text
