"""Several people in one capture (`mvpose triangulate --people`): cross-view association, identities over time,
per-person outputs, on synthetic captures of 2-4 people walking across each other (mvpose.capture.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import colour_pixels
from mvpose.capture.association import associate_people
from mvpose.capture.io import read_trc, zup_to_yup
from mvpose.capture.multi import PeopleOptions, parse_people, run_people_capture
from mvpose.capture.pipeline import CaptureError, CaptureOptions, load_capture, run_capture
from mvpose.capture.render import PERSON_BGR
from mvpose.capture.synthetic import make_multi_person_capture, write_openpose_frames
from mvpose.capture.tracking import identity_switches, track_people
from mvpose.cli import main
from mvpose.geometry.calibration import load_calibration
from mvpose.metrics import mpjpe
from mvpose.skeletons import BODY25

REPO = Path(__file__).resolve().parents[2]
RIG = REPO / "mvpose" / "calibration" / "examples" / "rig4.json"  # 4 cameras, 1920x1080, with distortion


@pytest.fixture(scope="module")
def rig():
    return load_calibration(RIG)


def _truth_labels(person: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(T, M, V) detection index per identity + (T, V, P) true person per detection -> (T, M) true person
    followed by each identity (majority of its views), -1 where unseen, -3 where the views disagree."""
    T, M, V = person.shape
    out = np.full((T, M), -1)
    for t in range(T):
        for m in range(M):
            ids = {int(truth[t, v, person[t, m, v]]) for v in range(V) if person[t, m, v] >= 0}
            if ids:
                out[t, m] = ids.pop() if len(ids) == 1 else -3
    return out


def _single_person_mpjpe(tmp: Path, gt, n: int, options: CaptureOptions) -> float:
    """MPJPE of the single-person path on person n's own detections (the same noisy keypoints)."""
    folder = tmp / f"single{n}"
    for v, name in enumerate(gt.names):
        write_openpose_frames(folder / name, gt.keypoints[:, v, n][:, None], prefix=name)
    res = run_capture(RIG, folder, tmp / f"single_out{n}", options)
    ok = np.isfinite(res.points3d).all(-1)
    return mpjpe(res.points3d[ok], gt.points3d[:, n][ok])


# --------------------------------------------------------------------------------------------- association
def test_association_groups_shuffled_detections_and_leaves_the_bystander_out(tmp_path, rig):
    gt = make_multi_person_capture(tmp_path / "kp", rig, people=3, frames=30, joint_set="body25", noise_px=2.0,
                                   miss_rate=0.1, seed=4)
    cap = load_capture(RIG, tmp_path / "kp", progress=False)
    assert cap.people.shape[2] == 4  # three people and the bystander in cam_1
    assert not (gt.truth[:, 0, 0] == -1).all()  # shuffled: the bystander is not always listed first
    assoc = associate_people(torch.from_numpy(cap.people), rig)
    groups = assoc.groups.numpy()
    labels = np.array([[{int(gt.truth[t, v, groups[t, k, v]]) for v in range(4) if groups[t, k, v] >= 0}
                        for k in range(groups.shape[1])] for t in range(30)], dtype=object)
    assert all(len(s) <= 1 for s in labels.ravel())  # no person mixes detections of two people
    assert not any(-1 in s for s in labels.ravel())  # the bystander joins no one
    # Every person seen in two views or more is found.
    seen_views = (gt.keypoints[..., 2] > 0).any(-1).sum(axis=1)  # (T, N)
    assert (assoc.people_per_frame.numpy() == (seen_views >= 2).sum(-1)).all()
    # Left out and counted: the bystander plus people seen in one view only.
    expected = (gt.truth == -1).sum() + (seen_views == 1).sum()
    assert int(assoc.unassigned.sum()) == expected and int(assoc.unassigned[:, 0].sum()) >= (gt.truth == -1).sum()


def test_association_bounded_number_of_people(tmp_path, rig):
    make_multi_person_capture(tmp_path / "kp", rig, people=3, frames=10, joint_set="body25", seed=2, bystander=False)
    people = torch.from_numpy(load_capture(RIG, tmp_path / "kp", progress=False).people)
    two = associate_people(people, rig, max_people=2)
    assert two.groups.shape[1] == 2 and (two.people_per_frame == 2).all()
    assert (two.unassigned.sum(-1) == 4).all()  # the third person's detection in each of the 4 views
    with pytest.raises(ValueError, match="max_people"):
        associate_people(people, rig, max_people=0)
    with pytest.raises(ValueError, match=r"\(T, V, P, J, 3\)"):
        associate_people(people[0], rig)


# --------------------------------------------------------------------------------------------- tracking
def _walker(T: int, start, velocity, J: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 200, (J, 3))
    return np.asarray(start)[None, None] + np.arange(T)[:, None, None] * np.asarray(velocity)[None, None] + offsets


def test_tracking_keeps_ids_through_shuffles_entering_leaving_and_drops_phantoms():
    T, J = 80, 5
    a = _walker(T, (0, 0, 900), (20, 0, 0), J, 0)  # walks +x through the whole capture
    b = _walker(T, (1600, 100, 900), (-20, 0, 0), J, 1)  # walks -x, passes a 100 mm to the side at frame 40
    poses = np.full((T, 3, J, 3), np.nan)
    rng = np.random.default_rng(0)
    for t in range(T):
        people = [a[t]] + ([b[t]] if 10 <= t < 60 else [])  # b enters at 10, leaves at 60
        if t == 30:
            people.append(a[t] + 5000.0)  # a one-frame phantom far away
        for k, i in enumerate(rng.permutation(len(people))):
            poses[t, k] = people[i]
    tracks = track_people(poses, max_distance_mm=300.0, min_frames=3)
    assert tracks.count == 2 and tracks.started == 3 and tracks.dropped == 1 and tracks.dropped_people == 1
    picked = np.take_along_axis(poses, tracks.slot.clip(0)[..., None, None], 1)[..., 0, 0]
    got = np.where(tracks.slot >= 0, picked, np.nan)
    assert np.allclose(got[:, 0], a[:, 0, 0])  # identity 0 (seen first) is a in every frame
    assert np.isnan(got[:10, 1]).all() and np.isnan(got[60:, 1]).all() and np.allclose(got[10:60, 1], b[10:60, 0, 0])


def test_tracking_with_a_known_number_of_people_joins_a_return():
    T, J = 120, 5
    a = _walker(T, (0, 0, 900), (5, 0, 0), J, 0)
    b = _walker(T, (0, 2000, 900), (5, 0, 0), J, 1)
    poses = np.full((T, 2, J, 3), np.nan)
    poses[:, 0] = a
    poses[:40, 1], poses[90:, 1] = b[:40], b[90:]  # b away for 50 frames, longer than max_age
    assert track_people(poses, max_age=30).count == 3
    joined = track_people(poses, max_age=30, max_people=2)
    assert joined.count == 2 and joined.joined == 1
    assert (joined.slot[:, 1] >= 0).sum() == 70 and (joined.slot[:, 0] == 0).all()
    with pytest.raises(ValueError, match="max_people"):
        track_people(poses, max_people=0)


def test_identity_switches_counts_changes_of_the_followed_person():
    labels = np.array([[0, 1], [0, 1], [-1, 0], [1, 0], [1, -1], [0, 0]])
    assert identity_switches(labels) == 3  # track 0: 0->1->0, track 1: 1->0


# --------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("n", [2, 3, 4])
def test_crossing_people_keep_their_ids_and_match_the_single_person_path(tmp_path, rig, n):
    gt = make_multi_person_capture(tmp_path / "kp", rig, people=n, frames=90, fps=30.0, joint_set="body25",
                                   noise_px=2.0, outlier_rate=0.05, miss_rate=0.05, seed=n)
    pelvis = gt.points3d[:, :, 8]
    closest = min(np.linalg.norm(pelvis[:, i] - pelvis[:, j], axis=-1).min() for i in range(n) for j in range(i))
    assert closest < 600.0  # people do pass each other, side by side
    options = CaptureOptions(progress=False, fps=30.0)
    res = run_people_capture(RIG, tmp_path / "kp", tmp_path / "out", options, PeopleOptions())
    assert res.ids == [f"person{m + 1}" for m in range(n)]
    labels = _truth_labels(res.person, gt.truth)
    assert identity_switches(labels) == 0 and (labels != -3).all() and (labels != -1).any(axis=0).all()
    assert not (labels == -1).all(axis=0).any()
    follows = [int(np.bincount(labels[:, m][labels[:, m] >= 0]).argmax()) for m in range(n)]
    assert sorted(follows) == list(range(n))
    for m, g in enumerate(follows):
        X = res.points3d[:, m]
        ok = np.isfinite(X).all(-1)
        multi = mpjpe(X[ok], gt.points3d[:, g][ok])
        single = _single_person_mpjpe(tmp_path, gt, g, options)
        assert multi <= single + 0.5, (m, g, multi, single)
        assert multi < 15.0
    # The bystander is never part of a person; its detections are counted as fitting no one.
    assert res.association["unassigned_detections"] >= (gt.truth == -1).sum()
    assert res.summary["association"]["unassigned_detections"] == res.association["unassigned_detections"]


def test_outputs_person_axis_trc_per_person_summary_and_report(tmp_path, rig):
    gt = make_multi_person_capture(tmp_path / "kp", rig, people=2, frames=40, fps=30.0, joint_set="body25",
                                   noise_px=1.0, seed=1)
    r = CliRunner().invoke(main, ["triangulate", "--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"),
                                  "--out", str(tmp_path / "out"), "--fps", "30", "--people", "auto",
                                  "--max-gap", "5"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    with h5py.File(out / "poses3d.h5") as f:
        X = f["poses3d"][:]
        assert X.shape == (40, 2, 25, 3) and f["points2d"].shape == (40, 2, 4, 25, 2)
        assert f["reprojection_error"].shape == (40, 2, 4, 25) and f["used"].shape == (40, 2, 4, 25)
        assert f["filled"].shape == (40, 2, 25) and f["person"].shape == (40, 2, 4)
        assert list(f.attrs["people"]) == ["person1", "person2"]
        person = f["person"][:]
    follows = [int(np.bincount(_truth_labels(person, gt.truth)[:, m].clip(0)).argmax()) for m in range(2)]
    for m, name in enumerate(["person1", "person2"]):
        header, names, time, trc = read_trc(out / f"poses3d_{name}.trc")
        assert names == list(BODY25.joints) and header["NumFrames"] == "40"
        assert np.allclose(trc, zup_to_yup(X[:, m]) / 1000.0, atol=1e-5, equal_nan=True)
        assert mpjpe(X[:, m], gt.points3d[:, follows[m]]) < 5.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["people"] == ["person1", "person2"] and summary["frames"] == 40
    for name in summary["people"]:
        p = summary["persons"][name]
        assert p["frames_seen"] == 40 and 0.3 < p["reprojection_error_px"]["median"] < 2.0
        assert set(p["reprojection_error_px"]["per_camera"]) == set(rig.names)
    assert summary["association"]["unassigned_detections"] == (gt.truth == -1).sum()
    report = (out / "report.txt").read_text()
    assert "=== person1: seen in 40 of 40 frames" in report and "=== person2" in report
    assert f"fitting no person: {(gt.truth == -1).sum()} (cam_1 {(gt.truth == -1).sum()}, cam_2 0" in report
    assert report in r.output


def test_render_colours_each_person(tmp_path, rig):
    make_multi_person_capture(tmp_path / "kp", rig, people=2, frames=6, fps=30.0, joint_set="body25", seed=1,
                              bystander=False)
    res = run_people_capture(RIG, tmp_path / "kp", tmp_path / "out", CaptureOptions(progress=False, fps=30.0),
                             PeopleOptions(people=2), render=True)
    img = cv2.imread(str(tmp_path / "out" / "render" / "cam_2" / "000002.jpg")).astype(int)
    uv = rig.project(torch.from_numpy(res.points3d[2]).unsqueeze(-3)).numpy()[:, 1]  # (M, J, 2) in cam_2
    for m in range(2):
        a, b = uv[m, 1], uv[m, 8]  # neck to mid hip: a long bone drawn in the person's colour
        mid = np.round((a + b) / 2).astype(int)
        patch = img[mid[1] - 2:mid[1] + 3, mid[0] - 2:mid[0] + 3].reshape(-1, 3)
        closest = np.abs(patch - np.array(PERSON_BGR[m])).sum(-1).min()
        assert closest < 60, (m, patch)
    # the 3D plot: one panel per plotted frame (4 x 4.4 inches each), both people in their colours in every panel
    plot = tmp_path / "out" / "render" / "skeleton3d.png"
    height, width = cv2.imread(str(plot)).shape[:2]
    panels = round(width / height * 4.4 / 4)
    assert panels >= 2
    for c in range(panels):
        panel = tmp_path / f"panel{c}.png"
        cv2.imwrite(str(panel), cv2.imread(str(plot))[:, c * width // panels:(c + 1) * width // panels])
        assert [colour_pixels(panel, PERSON_BGR[m][::-1], tol=30) > 20 for m in range(2)] == [True, True], c


def test_people_option_errors(tmp_path, rig):
    assert parse_people("auto") is None and parse_people("3") == 3 and parse_people(" AUTO ") is None
    for bad in ("0", "-2", "many"):
        with pytest.raises(CaptureError, match="positive integer or 'auto'"):
            parse_people(bad)
    make_multi_person_capture(tmp_path / "kp", rig, people=2, frames=5, joint_set="body25", seed=1)
    r = CliRunner().invoke(main, ["triangulate", "--calibration", str(RIG), "--keypoints", str(tmp_path / "kp"),
                                  "--out", str(tmp_path / "out"), "--people", "none"])
    assert r.exit_code != 0 and "positive integer or 'auto'" in r.output
    with pytest.raises(CaptureError, match="track distance"):
        run_people_capture(RIG, tmp_path / "kp", tmp_path / "o", CaptureOptions(progress=False),
                           PeopleOptions(max_distance_mm=0))


def test_people_entering_and_leaving_keep_one_id_each(tmp_path, rig):
    gt = make_multi_person_capture(tmp_path / "kp", rig, people=3, frames=90, fps=30.0, joint_set="body25",
                                   noise_px=2.0, miss_rate=0.05, seed=5, present={1: (20, 90), 2: (0, 60)})
    res = run_people_capture(RIG, tmp_path / "kp", tmp_path / "out", CaptureOptions(progress=False, fps=30.0),
                             PeopleOptions())
    labels = _truth_labels(res.person, gt.truth)
    assert res.ids == ["person1", "person2", "person3"] and identity_switches(labels) == 0
    seen = {int(np.bincount(labels[:, m][labels[:, m] >= 0]).argmax()): np.flatnonzero(labels[:, m] >= 0)
            for m in range(3)}
    assert sorted(seen) == [0, 1, 2]
    assert seen[1].min() == 20 and seen[1].max() == 89  # entered at frame 20
    assert seen[2].min() == 0 and seen[2].max() == 59  # left after frame 59
    X = res.points3d
    m2 = [m for m in range(3) if (labels[:, m] == 2).any()][0]
    assert np.isnan(X[60:, m2]).all() and np.isfinite(X[:60, m2]).all(-1).mean() > 0.95
    trc = read_trc(tmp_path / "out" / f"poses3d_{res.ids[m2]}.trc")[3]
    assert np.isnan(trc[60:]).all()  # frames after leaving are empty markers
