"""Human3.6M preparation from a miniature raw download written here in the official layout.

The raw files follow the official archives: ``S*/MyPoseFeatures/{D3_Positions,D3_Positions_mono,
D3_Positions_mono_universal,D2_Positions}``
CDF files with a ``Pose`` variable of shape (1, frames, 32 * d), and ``S*/Videos/<take>.<camera>.mp4``.
Camera-frame and 2D labels are made from the world labels through the real Human3.6M cameras
(``mvpose/calibration/h36m.json``) with OpenCV, so the checks below do not reuse the code under test. The
universal-skeleton files hold a stand-in (camera frame, limbs scaled by 0.9 about the root), so
``joints_3d`` (toolbox semantics: universal skeleton, camera frame) differs from the world pose.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cdflib.cdfwrite import CDF as CDFWriter
from click.testing import CliRunner

from mvpose.cli import main as cli_main
from mvpose.data.h36m import H36MDataset
from mvpose.data.prepare_h36m import PrepareError, format_report, prepare_h36m

REPO = Path(__file__).resolve().parents[2]
CAMS = ("54138969", "55011271", "58860488", "60457274")
# The published 32 -> 17 joint selection (H36M-Toolbox, VideoPose3D).
IDX17 = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]
# Official take names (metadata.xml) of (subject, action) -> (subaction 1, subaction 2) for the takes written here.
TAKES = {
    (1, 2): ("Directions 1", "Directions"),
    (1, 4): ("Eating 2", "Eating"),
    (1, 12): ("TakingPhoto 1", "TakingPhoto"),
    (9, 2): ("Directions 1", "Directions"),
    (9, 4): ("Eating 1", "Eating"),
    (9, 12): ("Photo 1", "Photo"),
    (11, 2): ("Directions 1", "Directions"),
    (11, 4): ("Eating 1", "Eating"),
    (11, 12): ("Photo 1", "Photo"),
}
SUBJECTS, ACTIONS = (1, 9, 11), (2, 4, 12)
SIZE = (32, 24)  # tiny videos (W, H)


def frame_level(frame: int) -> int:
    """Grey level of 1-based video frame ``frame``, so extracted images can be matched to frames."""
    return 20 + 35 * (frame - 1)


def write_pose_cdf(path: Path, pose: np.ndarray) -> None:
    """``pose (N, 32, d)`` -> CDF with variable ``Pose`` of shape (1, N, 32 d), as the official files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pose.reshape(1, len(pose), -1).astype(np.float32)
    cdf = CDFWriter(str(path), cdf_spec={"Majority": "Row_major"})
    cdf.write_var({"Variable": "Pose", "Data_Type": CDFWriter.CDF_FLOAT, "Num_Elements": 1, "Rec_Vary": True,
                   "Dim_Sizes": list(data.shape[1:])}, var_attrs={}, var_data=data)
    cdf.close()


def write_video(path: Path, frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 50, SIZE)
    for f in range(1, frames + 1):
        writer.write(np.full((SIZE[1], SIZE[0], 3), frame_level(f), np.uint8))
    writer.release()


def rigs() -> dict[int, dict[str, dict]]:
    doc = json.loads((REPO / "mvpose" / "calibration" / "h36m.json").read_text())
    return {int(k[1:]): {c["name"]: c for c in v["cameras"]} for k, v in doc["rigs"].items()}


def project(world: np.ndarray, cam: dict) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 32, 3) -> camera-frame points and distorted pixels, with OpenCV."""
    R, t = np.asarray(cam["R"]), np.asarray(cam["t"])
    mono = world @ R.T + t
    pix, _ = cv2.projectPoints(world.reshape(-1, 3), cv2.Rodrigues(R)[0], t, np.asarray(cam["K"]), np.asarray(cam["dist"]))
    return mono, pix.reshape(*world.shape[:-1], 2)


def universal(mono: np.ndarray) -> np.ndarray:
    """Stand-in for D3_Positions_mono_universal: camera frame, limbs scaled by 0.9 about the root."""
    return mono[..., :1, :] + 0.9 * (mono - mono[..., :1, :])


def write_raw(raw: Path, subjects=SUBJECTS, actions=ACTIONS) -> dict:
    """Write the miniature download; returns ``{(s, a, sa): world (N, 32, 3)}``."""
    cams = rigs()
    truth = {}
    for s in subjects:
        mpf = raw / f"S{s}" / "MyPoseFeatures"
        for a in actions:
            for sa, name in enumerate(TAKES[s, a], start=1):
                rng = np.random.default_rng([s, a, sa])
                n = 2 + sa  # takes of different lengths
                root = np.array([rng.uniform(-1500, 1500), rng.uniform(-1500, 1500), 900.0])
                world = root + rng.uniform([-400, -400, -900], [400, 400, 900], size=(n, 32, 3))
                truth[s, a, sa] = world
                write_pose_cdf(mpf / "D3_Positions" / f"{name}.cdf", world)
                for cam in CAMS:
                    mono, pix = project(world, cams[s][cam])
                    write_pose_cdf(mpf / "D3_Positions_mono" / f"{name}.{cam}.cdf", mono)
                    write_pose_cdf(mpf / "D3_Positions_mono_universal" / f"{name}.{cam}.cdf", universal(mono))
                    write_pose_cdf(mpf / "D2_Positions" / f"{name}.{cam}.cdf", pix)
                    write_video(raw / f"S{s}" / "Videos" / f"{name}.{cam}.mp4", n + 1)  # videos run a frame longer
    return truth


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("h36m_raw")
    return root, write_raw(root)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("h36m_out")
    report = prepare_h36m(raw[0], out, subjects=SUBJECTS, actions=ACTIONS, workers=2, progress=False)
    return out, report


def load(out: Path, split: str) -> list[dict]:
    with (out / "annot" / f"h36m_{split}.pkl").open("rb") as f:
        return pickle.load(f)


def test_output_has_published_schema_and_labels(raw, prepared):
    _, truth = raw
    out, report = prepared
    train, val = load(out, "train"), load(out, "validation")
    assert {r["subject"] for r in train} == {1} and {r["subject"] for r in val} == {9, 11}
    # every frame of every take and camera, less the S11 Directions camera the release lacks
    n = sum(len(w) for (s, _, _), w in truth.items() for _ in CAMS if s == 1)
    assert len(train) == n
    assert len(val) == sum(len(w) * 4 for (s, _, _), w in truth.items() if s != 1) - len(truth[11, 2, 2])
    assert not [r for r in val if (r["subject"], r["action"], r["subaction"], r["camera_id"]) == (11, 2, 2, 0)]
    assert [r for r in val if (r["subject"], r["action"], r["subaction"], r["camera_id"]) == (11, 2, 2, 1)]

    cams = rigs()
    video_ids = {}
    for rec in train + val:
        s, a, sa, c, f = (rec[k] for k in ("subject", "action", "subaction", "camera_id", "image_id"))
        folder = f"s_{s:02d}_act_{a:02d}_subact_{sa:02d}_ca_{c + 1:02d}"
        assert rec["image"] == f"{folder}/{folder}_{f:06d}.jpg"
        assert rec["source"] == "h36m" and a in ACTIONS and sa in (1, 2) and 0 <= c <= 3
        for key, shape in (("joints_2d", (17, 2)), ("joints_3d", (17, 3)), ("joints_3d_camera", (17, 3)),
                           ("joints_vis", (17, 3)), ("center", (2,)), ("scale", (2,)), ("box", (4,))):
            assert np.shape(rec[key]) == shape, key
        assert np.all(rec["joints_vis"] == 1)
        # the labels come from the take the official metadata names for (subject, action, subaction)
        world = truth[s, a, sa][f - 1]
        cam = rec["camera"]
        # H36M-Toolbox semantics: joints_3d = D3_Positions_mono_universal (camera frame), never the world;
        # the world pose is R^T joints_3d_camera + T (multi-view-PPT estimate_tri.py).
        mono, _ = project(world, cams[s][CAMS[c]])
        np.testing.assert_allclose(rec["joints_3d"], universal(mono)[IDX17], atol=0.05)
        assert np.linalg.norm(rec["joints_3d"] - world[IDX17], axis=-1).min() > 500.0
        np.testing.assert_allclose((cam["R"].T @ rec["joints_3d_camera"].T + cam["T"]).T, world[IDX17], atol=0.05)
        assert {k: np.shape(v) for k, v in cam.items()} == {
            "R": (3, 3), "T": (3, 1), "fx": (1,), "fy": (1,), "cx": (1,), "cy": (1,), "k": (3, 1), "p": (2, 1)}
        ref = cams[s][CAMS[c]]
        R = np.asarray(ref["R"])
        np.testing.assert_allclose(cam["R"], R)
        np.testing.assert_allclose(cam["T"].ravel(), -R.T @ np.asarray(ref["t"]), atol=1e-6)  # T is the centre
        # 2D labels are the projection of the 3D labels through the record's own camera dict
        K = np.array([[cam["fx"][0], 0, cam["cx"][0]], [0, cam["fy"][0], cam["cy"][0]], [0, 0, 1]])
        k, p = cam["k"].ravel(), cam["p"].ravel()
        tvec = -cam["R"] @ cam["T"].ravel()
        pix, _ = cv2.projectPoints(world[IDX17], cv2.Rodrigues(cam["R"])[0], tvec, K,
                                   np.array([k[0], k[1], p[0], p[1], k[2]]))
        np.testing.assert_allclose(rec["joints_2d"], pix.reshape(17, 2), atol=1e-2)
        # box: the root +-1000 mm across, -900/+1100 mm down, at the root's depth, pinhole-projected
        X, Y, Z = np.asarray(rec["joints_3d_camera"][0], np.float64)
        box = [cam["fx"][0] * (X - 1000) / Z + cam["cx"][0], cam["fy"][0] * (Y - 900) / Z + cam["cy"][0],
               cam["fx"][0] * (X + 1000) / Z + cam["cx"][0], cam["fy"][0] * (Y + 1100) / Z + cam["cy"][0]]
        np.testing.assert_allclose(rec["box"], box, rtol=1e-5)
        np.testing.assert_allclose(rec["center"], [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], rtol=1e-5)
        np.testing.assert_allclose(rec["scale"], [(box[2] - box[0]) / 200, (box[3] - box[1]) / 200], rtol=1e-5)
        video_ids.setdefault((s, a, sa, c), set()).add(rec["video_id"])
    assert all(len(v) == 1 for v in video_ids.values())
    assert len({next(iter(v)) for v in video_ids.values()}) == len(video_ids)
    assert video_ids[1, 2, 1, 0] == {0}  # the toolbox's counter starts at S1 Directions-1 camera 1

    # images: one per record, the right video frame
    for rec in train[:: max(1, len(train) // 40)] + val[:: max(1, len(val) // 40)]:
        img = cv2.imread(str(out / "images" / rec["image"]))
        assert img is not None and img.shape[:2] == (SIZE[1], SIZE[0])
        assert abs(img.mean() - frame_level(rec["image_id"])) < 8
    assert len(list((out / "images").rglob("*.jpg"))) == len(train) + len(val)

    assert report["records"] == {"train": len(train), "validation": len(val)}
    assert report["frames_written"] == len(train) + len(val) and report["frames_present"] == 0
    assert report["reprojection"]["max_px"] < 1e-2
    assert report["camera_3d_max_mm"] < 0.05
    assert report["frame_counts"]["video_longer"] == report["videos"] == len(video_ids)
    assert report["frame_counts"]["max_extra"] == 1
    assert len(report["skipped"]) == 1 and "S11" in report["skipped"][0]
    assert report["joints_3d_fallback"] == 0
    text = format_report(report)
    assert "max" in text and "skipped" in text


def test_output_loads_in_the_reader(prepared):
    out, _ = prepared
    train = load(out, "train")
    ds = H36MDataset(out, "train", frame_stride=1, image_sizes={c: SIZE for c in range(4)}, drop_damaged=False)
    assert len(ds) == len(train) // 4
    ann = ds.annotations(0)
    first = {r["camera_id"]: r for r in train if (r["subject"], r["action"], r["subaction"], r["image_id"]) ==
             (ann["subject"], ann["action"], ann["subaction"], ann["frame"])}
    np.testing.assert_allclose(ann["joints_2d"].numpy(), np.stack([first[c]["joints_2d"] for c in range(4)]), atol=1e-6)
    sample = ds.load(0)
    assert sample["image"].shape[0] == 4
    # S11 Directions-2 lacks camera 0 in the release, so its frames are incomplete multi-view groups
    val = H36MDataset(out, "validation", frame_stride=1, image_sizes={c: SIZE for c in range(4)}, drop_damaged=False)
    assert {g[0][:3] for g in val.incomplete_groups} == {(11, 2, 2)}


def test_resume_skips_written_frames(raw, tmp_path):
    out = tmp_path / "out"
    first = prepare_h36m(raw[0], out, subjects=[9], actions=[12], workers=0, progress=False)
    total = first["frames_written"]
    assert total == 4 * (3 + 4) and first["frames_present"] == 0
    images = sorted((out / "images").rglob("*.jpg"))
    stamps = {p: p.stat().st_mtime_ns for p in images}
    before = load(out, "validation")

    again = prepare_h36m(raw[0], out, subjects=[9], actions=[12], workers=0, progress=False)
    assert again["frames_written"] == 0 and again["frames_present"] == total
    assert all(p.stat().st_mtime_ns == stamps[p] for p in images)
    after = load(out, "validation")
    assert [r["image"] for r in after] == [r["image"] for r in before]
    np.testing.assert_array_equal(np.stack([r["joints_2d"] for r in after]), np.stack([r["joints_2d"] for r in before]))

    images[5].unlink()
    third = prepare_h36m(raw[0], out, subjects=[9], actions=[12], workers=0, progress=False)
    assert third["frames_written"] == 1 and images[5].is_file()
    assert not list((out / "images").rglob("*.tmp")) and not list((out / "annot").glob("*.tmp"))


def test_every_keeps_every_nth_frame(raw, tmp_path):
    report = prepare_h36m(raw[0], tmp_path, subjects=[1], actions=[4], every=2, workers=0, progress=False)
    train = load(tmp_path, "train")
    assert sorted({r["image_id"] for r in train if r["subaction"] == 2}) == [1, 3]  # 4 frames: 1 and 3
    assert sorted({r["image_id"] for r in train if r["subaction"] == 1}) == [1, 3]  # 3 frames: 1 and 3
    assert report["frames_written"] == len(train) == len(list(tmp_path.rglob("*.jpg")))
    assert not (tmp_path / "annot" / "h36m_validation.pkl").exists()


def test_renamed_s1_files_are_found(raw, tmp_path):
    """Some copies rename S1's TakingPhoto / WalkingDog files to the other subjects' Photo / WalkDog."""
    src = tmp_path / "raw"
    shutil.copytree(raw[0] / "S1", src / "S1")
    for path in list(src.rglob("TakingPhoto*")):
        path.rename(path.with_name(path.name.replace("TakingPhoto", "Photo")))
    prepare_h36m(src, tmp_path / "out", subjects=[1], actions=[12], workers=0, progress=False)
    train = load(tmp_path / "out", "train")
    rec = next(r for r in train if r["subaction"] == 1 and r["image_id"] == 2)
    world = (rec["camera"]["R"].T @ rec["joints_3d_camera"].T + rec["camera"]["T"]).T
    np.testing.assert_allclose(world, raw[1][1, 12, 1][1][IDX17], atol=0.05)


def test_missing_universal_files_fall_back_to_mono_with_a_warning(raw, tmp_path):
    src = copy_subject(raw[0], tmp_path / "raw", 9)
    shutil.rmtree(src / "S9" / "MyPoseFeatures" / "D3_Positions_mono_universal")
    report = prepare_h36m(src, tmp_path / "out", subjects=[9], actions=[12], workers=0, progress=False)
    assert report["joints_3d_fallback"] == 2 * 4  # two takes x four cameras
    assert any("D3_Positions_mono_universal" in w and "joints_3d holds D3_Positions_mono" in w for w in report["warnings"])
    assert "D3_Positions_mono for 8 take(s)" in format_report(report)
    for rec in load(tmp_path / "out", "validation"):
        np.testing.assert_array_equal(rec["joints_3d"], rec["joints_3d_camera"])


def copy_subject(raw: Path, dst: Path, subject: int) -> Path:
    shutil.copytree(raw / f"S{subject}", dst / f"S{subject}")
    return dst


def test_missing_subject_folder(raw, tmp_path):
    with pytest.raises(PrepareError, match=r"subject folder 'S5' not found"):
        prepare_h36m(raw[0], tmp_path, subjects=[5], actions=[2], workers=0, progress=False)


def test_missing_cdf_is_named(raw, tmp_path):
    src = copy_subject(raw[0], tmp_path / "raw", 9)
    gone = src / "S9" / "MyPoseFeatures" / "D2_Positions" / "Eating 1.58860488.cdf"
    gone.unlink()
    with pytest.raises(PrepareError, match=re.escape(str(gone))):
        prepare_h36m(src, tmp_path / "out", subjects=[9], actions=[4], workers=0, progress=False)
    assert not (tmp_path / "out" / "annot").exists()  # nothing half-written


def test_short_video_is_an_error(raw, tmp_path):
    src = copy_subject(raw[0], tmp_path / "raw", 9)
    video = src / "S9" / "Videos" / "Photo.55011271.mp4"
    write_video(video, 2)  # the CDF files label 4 frames
    with pytest.raises(PrepareError, match=re.escape(str(video)) + r".* 2 frames .* 4"):
        prepare_h36m(src, tmp_path / "out", subjects=[9], actions=[12], workers=0, progress=False)
    assert not (tmp_path / "out" / "annot" / "h36m_validation.pkl").exists()


def test_cli_and_script(raw, tmp_path):
    result = CliRunner().invoke(cli_main, ["prepare", "h36m", "--raw", str(raw[0]), "--out", str(tmp_path),
                                           "--subjects", "S9", "--actions", "2", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "validation 28" in result.output and (tmp_path / "annot" / "h36m_validation.pkl").is_file()
    bad = CliRunner().invoke(cli_main, ["prepare", "h36m", "--raw", str(raw[0]), "--out", str(tmp_path),
                                        "--subjects", "S2"])
    assert bad.exit_code != 0 and "unknown subject 'S2'" in bad.output
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_h36m.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--raw" in done.stdout and "--every" in done.stdout
