"""Calibration formats: round trips, readers against OpenCV projections, detection, errors, convert."""

import json
import os
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mvpose.cli import main
from mvpose.data.h36m import h36m_camera_dict, h36m_camera_params
from mvpose.data.skipose import skipose_cameras
from mvpose.geometry.calibration import (
    CalibrationError,
    calibration_summary,
    cameras_from_params,
    convert_calibration,
    detect_format,
    load_calibration,
    params_from_cameras,
    read_calibration,
    read_opencv_calibration,
    read_pose2sim_calibration,
    read_qualisys_calibration,
    write_calibration,
    write_mvpose_calibration,
    write_opencv_calibration,
    write_pose2sim_calibration,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "mvpose" / "calibration" / "examples"


# ------------------------------------------------------------------------------------ helpers
def random_rig(rng: np.random.Generator, views: int = 3, k3: bool = True) -> list[dict]:
    """Cameras 3-6 m from the origin looking at it, OpenCV lenses, varied image sizes."""
    params = []
    for v in range(views):
        C = rng.normal(size=3)
        C = C / np.linalg.norm(C) * rng.uniform(3000, 6000)
        z = -C / np.linalg.norm(C)
        x = np.cross(z, rng.normal(size=3))
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        w, h = [(1920, 1080), (1280, 720), (1088, 1920)][v % 3]
        fx, fy = rng.uniform(900, 1600, size=2)
        cx, cy = np.array([w, h]) / 2 + rng.normal(scale=9, size=2)
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        k3_value = rng.uniform(-0.02, 0.02) if k3 else 0.0
        dist = np.array([rng.uniform(-0.3, 0.1), rng.uniform(-0.1, 0.2), *rng.normal(scale=1e-3, size=2), k3_value])
        params.append({"name": f"cam {v}", "size": np.array([w, h], float), "K": K, "dist": dist, "R": R, "t": -R @ C})
    return params


def assert_same_params(a: list[dict], b: list[dict], names: bool = True, atol: float = 1e-9) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b):
        if names:
            assert p["name"] == q["name"]
        for key in ("size", "K", "dist", "R"):
            np.testing.assert_allclose(np.asarray(p[key]), np.asarray(q[key]), atol=atol, rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(p["t"], q["t"], atol=1e-6, rtol=1e-12, err_msg="t")


def world_points(rng: np.random.Generator, n: int = 40) -> np.ndarray:
    return rng.uniform(-800, 800, size=(n, 3))


def opencv_projection(p: dict, X: np.ndarray, t_scale: float = 1.0) -> np.ndarray:
    """Reference projection of mm points through cv2.projectPoints (translation in the file's unit)."""
    rvec = cv2.Rodrigues(p["R"])[0]
    return cv2.projectPoints(X / t_scale, rvec, p["t"] / t_scale, p["K"], p["dist"])[0][:, 0]


def qca_text(params: list[dict], fov_offsets: list[tuple[int, int]], subpixels: int = 64, marker_camera: bool = True) -> str:
    """A QTM .qca.txt export of ``params`` built from the Qualisys conventions (independent of the reader).

    Qualisys: camera centre x y z in mm; r_ij rows map world into a camera frame that looks down
    -z with y up; intrinsics in sub-pixels of the full sensor; the video window starts at
    (left, top) of the sensor.
    """
    flip = np.diag([1.0, -1.0, -1.0])
    num = lambda x: repr(float(x))  # noqa: E731
    cams = []
    for i, (p, (left, top)) in enumerate(zip(params, fov_offsets)):
        M = flip @ p["R"]
        C = -p["R"].T @ p["t"]
        K, d = p["K"], p["dist"]
        w, h = (int(v) for v in p["size"])
        full_w, full_h = w + left + 64, h + top + 32  # the sensor is bigger than the video window
        # sub-pixel exports give the last sub-pixel (1920 px: 122879), pixel exports the width (1920)
        max_u, max_v = (full_w * subpixels - 1, full_h * subpixels - 1) if subpixels > 1 else (full_w, full_h)
        rot = " ".join(f'r{a + 1}{b + 1}="{num(M[a, b])}"' for a in range(3) for b in range(3))
        cams.append(
            f'<camera active="1" calibrated="true" message="Camera calibrated" point-count="12000" avg-residual="0.31" '
            f'serial="{28000 + i}" model="Miqus Video" viewrotation="0">\n'
            f'  <fov_marker left="0" top="0" right="{full_w - 1}" bottom="{full_h - 1}"/>\n'
            f'  <fov_marker_max left="0" top="0" right="{full_w - 1}" bottom="{full_h - 1}"/>\n'
            f'  <fov_video left="{left}" top="{top}" right="{left + w - 1}" bottom="{top + h - 1}"/>\n'
            f'  <fov_video_max left="0" top="0" right="{full_w - 1}" bottom="{full_h - 1}"/>\n'
            f'  <transform x="{num(C[0])}" y="{num(C[1])}" z="{num(C[2])}" {rot}/>\n'
            f'  <intrinsic focallength="6.0" sensorMinU="0.000000" sensorMaxU="{max_u}" '
            f'sensorMinV="0.000000" sensorMaxV="{max_v}" focalLengthU="{num(K[0, 0] * subpixels)}" '
            f'focalLengthV="{num(K[1, 1] * subpixels)}" centerPointU="{num((K[0, 2] + left) * subpixels)}" '
            f'centerPointV="{num((K[1, 2] + top) * subpixels)}" skew="0.000000" radialDistortion1="{num(d[0])}" '
            f'radialDistortion2="{num(d[1])}" radialDistortion3="{num(d[4])}" tangentalDistortion1="{num(d[2])}" '
            f'tangentalDistortion2="{num(d[3])}"/>\n'
            "</camera>"
        )
    if marker_camera:  # a marker-only camera with a made-up pose: must be left out
        cams.append(
            '<camera active="1" calibrated="true" point-count="9000" avg-residual="0.2" serial="99999" model="Miqus M3" viewrotation="0">\n'
            '  <fov_marker left="0" top="0" right="1823" bottom="1087"/>\n'
            '  <transform x="0" y="0" z="3000" r11="1" r12="0" r13="0" r21="0" r22="1" r23="0" r31="0" r32="0" r33="1"/>\n'
            '  <intrinsic focallength="6.0" sensorMinU="0" sensorMaxU="116735" sensorMinV="0" sensorMaxV="69631" '
            'focalLengthU="70000" focalLengthV="70000" centerPointU="58000" centerPointV="35000" skew="0" '
            'radialDistortion1="0" radialDistortion2="0" radialDistortion3="0" tangentalDistortion1="0" tangentalDistortion2="0"/>\n'
            "</camera>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<calibration source="test.qca" created="2024-01-01" qtm-version="2023.3" type="regular" wandLength="601.0">\n'
        '<results std-dev="0.4" min-max-diff="1.1"/>\n<cameras>\n' + "\n".join(cams) + "\n</cameras>\n</calibration>\n"
    )


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# -------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_mvpose_round_trip_single_and_multi_rig(tmp_path, rng, suffix):
    rig = random_rig(rng, 3)
    write_mvpose_calibration(tmp_path / f"one{suffix}", rig)
    assert_same_params(read_calibration(tmp_path / f"one{suffix}")[""], rig, atol=0)
    rigs = {"S1": random_rig(rng, 2), "take 2": random_rig(rng, 4)}
    write_mvpose_calibration(tmp_path / f"many{suffix}", rigs)
    back = read_calibration(tmp_path / f"many{suffix}")
    assert list(back) == ["S1", "take 2"]
    for k in rigs:
        assert_same_params(back[k], rigs[k], atol=0)
    assert detect_format(tmp_path / f"many{suffix}") == "mvpose"


def test_mvpose_errors_name_file_rig_camera_and_field(tmp_path, rng):
    write_mvpose_calibration(tmp_path / "rigs.json", {"S1": random_rig(rng, 2)})
    doc = json.loads((tmp_path / "rigs.json").read_text())
    doc["rigs"]["S1"]["cameras"][1]["R"] = [[1.0, 0.0], [0.0, 1.0]]
    (tmp_path / "rigs.json").write_text(json.dumps(doc))
    with pytest.raises(CalibrationError, match=r"rigs\.json rig 'S1' cameras\[1\] camera 'cam 1': field 'R' must have shape \(3, 3\), found \(2, 2\)"):
        read_calibration(tmp_path / "rigs.json")
    doc["rigs"]["S1"]["cameras"][1]["R"] = (2.0 * np.eye(3)).tolist()
    (tmp_path / "rigs.json").write_text(json.dumps(doc))
    with pytest.raises(CalibrationError, match="cam 1.*'R' is not a rotation"):
        read_calibration(tmp_path / "rigs.json")


def test_mvpose_json_is_compact_and_readable(tmp_path, rng):
    rig = random_rig(rng, 2)
    write_mvpose_calibration(tmp_path / "rig.json", rig)
    text = (tmp_path / "rig.json").read_text()
    lines = text.splitlines()
    # each matrix row is one line: the K line holds the first row, the next two lines the others
    k_line = next(i for i, line in enumerate(lines) if '"K":' in line)
    for r in range(3):
        row = json.loads(lines[k_line + r].split('"K": ')[-1].strip().strip(",").lstrip("[").rstrip("]").join("[]"))
        np.testing.assert_array_equal(row, rig[0]["K"][r])
    assert len(lines) < 20 * len(rig)
    assert json.loads(text)["cameras"][1]["name"] == "cam 1"


def test_mvpose_general_crop_matrix_round_trips(tmp_path, rng):
    """A rotated, flipped crop camera is exact in the mvpose format but refused by OpenCV-style formats."""
    cams = cameras_from_params(random_rig(rng, 2))
    theta = 2.5
    aff = torch.tensor([[-np.cos(theta), -np.sin(theta), 300.0], [-np.sin(theta), np.cos(theta), 100.0]], dtype=torch.float64)
    crop = cams.crop(aff, (256, 256))
    write_calibration(tmp_path / "crop.json", crop)
    back = load_calibration(tmp_path / "crop.json")
    X = torch.as_tensor(world_points(rng, 10)).expand(2, 10, 3)
    torch.testing.assert_close(back.project(X), crop.project(X), atol=1e-9, rtol=0)
    with pytest.raises(CalibrationError, match="not a plain pinhole"):
        write_calibration(tmp_path / "crop.yml", crop, to="opencv")


@pytest.mark.parametrize("k3", [True, False])
def test_pose2sim_round_trip(tmp_path, rng, k3):
    rig = random_rig(rng, 3, k3=k3)
    path = tmp_path / "Calib.toml"
    write_pose2sim_calibration(path, rig)
    doc = tomllib.loads(path.read_text())
    assert list(doc) == ["cam_1", "cam_2", "cam_3", "metadata"]
    assert doc["metadata"] == {"adjusted": False, "error": 0.0}
    assert doc["cam_1"]["fisheye"] is False and len(doc["cam_1"]["distortions"]) == (5 if k3 else 4)
    # metres in the file
    np.testing.assert_allclose(doc["cam_2"]["translation"], rig[1]["t"] / 1000, rtol=1e-12)
    assert detect_format(path) == "pose2sim"
    assert_same_params(read_calibration(path)[""], rig)


@pytest.mark.parametrize("suffix", [".yml", ".xml"])
def test_opencv_round_trip(tmp_path, rng, suffix):
    rig = random_rig(rng, 3)
    write_opencv_calibration(tmp_path / f"rig{suffix}", rig)
    assert detect_format(tmp_path / f"rig{suffix}") == "opencv"
    assert_same_params(read_opencv_calibration(tmp_path / f"rig{suffix}")[""], rig)
    # what the file says is what cv2.FileStorage reads: rvec/tvec project like the rig
    fs = cv2.FileStorage(str(tmp_path / f"rig{suffix}"), cv2.FILE_STORAGE_READ)
    node = fs.getNode("cameras").at(1)
    assert fs.getNode("units").string() == "mm" and node.getNode("name").string() == "cam 1"
    X = world_points(rng)
    u = cv2.projectPoints(X, node.getNode("rvec").mat(), node.getNode("tvec").mat(), node.getNode("camera_matrix").mat(),
                          node.getNode("distortion_coefficients").mat())[0][:, 0]
    np.testing.assert_allclose(u, opencv_projection(rig[1], X), atol=1e-6)


# ---------------------------------------------------------------------------- Pose2Sim reading
POSE2SIM_SAMPLE = """[int_cam01_img]
name = "int_cam01_img"
size = [ 1088.0, 1920.0]
matrix = [ [ 1671.5012042021037, 0.0, 564.6403499852015], [ 0.0, 1671.3866928599075, 933.0074897877159], [ 0.0, 0.0, 1.0]]
distortions = [ -0.05310342256182765, 0.1510044676505964, -0.00011989435671705446, 0.0006503403122568441]
rotation = [ 1.678784562972848, 1.031972654261743, -0.3910235872501538]
translation = [ 0.2609476905995074, 0.9641586618892432, 2.932963441842366]
fisheye = false

[int_cam02_img]
name = "int_cam02_img"
size = [ 1088.0, 1920.0]
matrix = [ [ 1675.7080607483433, 0.0, 555.7798754387691], [ 0.0, 1675.4079150009259, 937.7259328417255], [ 0.0, 0.0, 1.0]]
distortions = [ -0.05205993968544501, 0.14917865330192143, 1.6726989091268645e-05, -0.0006545682909903758]
rotation = [ 1.3578601662680128, 1.5796573692170839, -1.1822007045082419]
translation = [ -0.16526980322189794, 0.8084087327474073, 3.2044946004620805]
fisheye = false

[metadata]
adjusted = false
error = 0.0
"""


def test_pose2sim_file_projects_like_opencv_in_metres(tmp_path, rng):
    path = tmp_path / "Calib_scene.toml"
    path.write_text(POSE2SIM_SAMPLE)
    cams = load_calibration(path)
    assert cams.names == ["int_cam01_img", "int_cam02_img"]
    assert cams.image_size[0].tolist() == [1088.0, 1920.0]
    doc = tomllib.loads(POSE2SIM_SAMPLE)
    X_m = rng.uniform(-0.5, 0.5, size=(30, 3)) + [0.0, 0.0, 0.0]
    for v, key in enumerate(["int_cam01_img", "int_cam02_img"]):
        c = doc[key]
        rvec, tvec, K, dist = (np.array(c[k]) for k in ("rotation", "translation", "matrix", "distortions"))
        ref = cv2.projectPoints(X_m, rvec, tvec, K, dist)[0][:, 0]
        ours = cams[v].project(torch.as_tensor(X_m * 1000.0)).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-7)


def test_anipose_layout_in_millimetres(tmp_path, rng):
    rig = random_rig(rng, 2)
    text = "".join(
        f'[cam_{i}]\nname = "{p["name"]}"\nsize = [ {int(p["size"][0])}, {int(p["size"][1])},]\n'
        f"matrix = {np.asarray(p['K']).tolist()}\ndistortions = {p['dist'].tolist()}\n"
        f"rotation = {cv2.Rodrigues(p['R'])[0].ravel().tolist()}\ntranslation = {p['t'].tolist()}\n\n"
        for i, p in enumerate(rig)
    ) + "[metadata]\n"
    (tmp_path / "calibration.toml").write_text(text)
    assert_same_params(read_pose2sim_calibration(tmp_path / "calibration.toml", units="mm")[""], rig)
    in_m = read_pose2sim_calibration(tmp_path / "calibration.toml")[""]  # default metres: 1000x too far
    np.testing.assert_allclose(in_m[0]["t"], rig[0]["t"] * 1000)


def test_pose2sim_errors_name_file_camera_and_field(tmp_path):
    path = tmp_path / "Calib.toml"
    path.write_text(POSE2SIM_SAMPLE.replace("[ 0.0, 0.0, 1.0]]\ndistortions = [ -0.052", "]\ndistortions = [ -0.052"))
    with pytest.raises(CalibrationError) as err:
        read_calibration(path)
    msg = str(err.value)
    assert str(path) in msg and "int_cam02_img" in msg and "'matrix'" in msg and "(3, 3)" in msg and "(2, 3)" in msg
    path.write_text(POSE2SIM_SAMPLE.replace("fisheye = false", "fisheye = true", 1))
    with pytest.raises(CalibrationError, match="int_cam01_img.*fisheye"):
        read_calibration(path)
    path.write_text(POSE2SIM_SAMPLE.replace('rotation = [ 1.3578601662680128, 1.5796573692170839, -1.1822007045082419]\n', ""))
    with pytest.raises(CalibrationError, match=r"int_cam02_img.*missing field 'rotation'"):
        read_calibration(path)


# ------------------------------------------------------------------------------ OpenCV reading
def _filestorage_text(rig: list[dict], fmt: int, rotation: str, k4: float = 0.0) -> str:
    """A calibration written with cv2.FileStorage directly, the way a user's script would."""
    fs = cv2.FileStorage("", cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY | fmt)
    fs.write("units", "m")
    fs.startWriteStruct("cameras", cv2.FileNode_SEQ)
    for p in rig:
        fs.startWriteStruct("", cv2.FileNode_MAP)
        fs.write("name", p["name"])
        fs.write("image_width", int(p["size"][0]))
        fs.write("image_height", int(p["size"][1]))
        fs.write("camera_matrix", p["K"])
        fs.write("distortion_coefficients", np.concatenate([p["dist"], [k4, 0.0, 0.0]]).reshape(8, 1))  # 8-term model
        fs.write("R" if rotation == "R" else "rvec", p["R"] if rotation == "R" else cv2.Rodrigues(p["R"])[0])
        fs.write("tvec", p["t"].reshape(3, 1) / 1000.0)
        fs.endWriteStruct()
    fs.endWriteStruct()
    return fs.releaseAndGetString()


@pytest.mark.parametrize("suffix,fmt", [(".yml", cv2.FILE_STORAGE_FORMAT_YAML), (".xml", cv2.FILE_STORAGE_FORMAT_XML)])
@pytest.mark.parametrize("rotation", ["rvec", "R"])
def test_opencv_file_written_by_filestorage_projects_like_opencv(tmp_path, rng, suffix, fmt, rotation):
    rig = random_rig(rng, 3)
    path = tmp_path / f"cams{suffix}"
    path.write_text(_filestorage_text(rig, fmt, rotation))
    cams = load_calibration(path)
    assert cams.names == [p["name"] for p in rig]
    X = world_points(rng)
    for v, p in enumerate(rig):
        ref = opencv_projection(p, X, t_scale=1000.0)  # the file says metres
        np.testing.assert_allclose(cams[v].project(torch.as_tensor(X)).numpy(), ref, atol=1e-6)


def test_opencv_single_camera_file_opencv4_style(tmp_path):
    path = tmp_path / "camera.yaml"
    path.write_text(
        "%YAML:1.0\n---\nimage_width: 640\nimage_height: 480\ncamera_matrix: !!opencv-matrix\n   rows: 3\n   cols: 3\n"
        "   dt: d\n   data: [ 500., 0., 320., 0., 510., 240., 0., 0., 1. ]\ndistortion_coefficients: !!opencv-matrix\n"
        "   rows: 1\n   cols: 5\n   dt: d\n   data: [ -0.1, 0.01, 0., 0., 0. ]\n"
    )
    (p,) = read_calibration(path)[""]
    assert p["name"] == "camera" and p["size"].tolist() == [640, 480]
    assert p["K"][1, 1] == 510.0 and p["dist"].tolist() == [-0.1, 0.01, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(p["R"], np.eye(3))


def test_opencv_errors(tmp_path, rng):
    rig = random_rig(rng, 2)
    text = _filestorage_text(rig, cv2.FILE_STORAGE_FORMAT_YAML, "rvec")
    path = tmp_path / "cams.yml"
    second = text.index("camera_matrix", text.index("camera_matrix") + 1)
    path.write_text(text[:second] + "cam_matrix" + text[second + len("camera_matrix") :])
    with pytest.raises(CalibrationError, match=r"cams\.yml cameras\[1\] camera 'cam 1': missing field 'camera_matrix'"):
        read_calibration(path)
    path.write_text(_filestorage_text(rig, cv2.FILE_STORAGE_FORMAT_YAML, "rvec", k4=0.3))
    with pytest.raises(CalibrationError, match="cam 0.*'distortion_coefficients' has non-zero terms beyond k3"):
        read_calibration(path)
    path.write_text(text.replace("units: m", "units: feet"))
    with pytest.raises(CalibrationError, match="feet"):
        read_calibration(path)
    path.write_text("%YAML:1.0\n---\nfoo: [1, 2\n")
    with pytest.raises(CalibrationError, match=r"cams\.yml: not a readable cv2\.FileStorage YAML/XML file \(YAML syntax "
                                               r"error at line 4, column 1: expected ',' or '\]'"):
        read_calibration(path)


@pytest.mark.parametrize("suffix", [".yml", ".xml"])
def test_opencv_malformed_matrices_and_cut_files_are_named(tmp_path, rng, suffix):
    """cv2 asserts inside FileNode.mat() (a Python traceback before) and reports a file cut short only as
    'returned a result with an exception set'; the errors name the node, what it holds and the line."""
    fmt = cv2.FILE_STORAGE_FORMAT_YAML if suffix == ".yml" else cv2.FILE_STORAGE_FORMAT_XML
    text = _filestorage_text(random_rig(rng, 2), fmt, "rvec")
    path = tmp_path / f"cams{suffix}"
    rows = ("rows: 3", "rows: 2") if suffix == ".yml" else ("<rows>3</rows>", "<rows>2</rows>")
    path.write_text(text.replace(*rows, 1))
    with pytest.raises(CalibrationError, match=r"field 'cameras\[0\]\.camera_matrix': not a readable matrix \(rows 2, "
                                               r"cols 3, dt 'd', 9 data values; expected rows x cols numbers"):
        read_calibration(path)
    if suffix == ".yml":
        path.write_text(text.replace("dt: d", "dt: z", 1))
        with pytest.raises(CalibrationError, match=r"camera_matrix': .*dt 'z'.*Invalid data type"):
            read_calibration(path)
        i = text.index("data: [") + len("data: [")
        path.write_text(text[:i] + " abc," + text[i:])
        with pytest.raises(CalibrationError, match=r"10 data values, not numbers: 'abc'"):
            read_calibration(path)
    cut = text[: text.index("camera_matrix", text.index("camera_matrix") + 1) + 30]
    path.write_text(cut)  # cut inside the second camera: a syntax error, or (YAML) a field left without its value
    with pytest.raises(CalibrationError, match=rf"cams\{suffix}(: not a readable .* syntax error at line|"
                                               r" cameras\[1\] camera 'cam 1': field 'camera_matrix' is not numeric)"):
        read_calibration(path)
    r = CliRunner().invoke(main, ["calibrate", "convert", str(path), str(tmp_path / "o.json")])
    assert r.exit_code == 1 and "Traceback" not in r.output and f"cams{suffix}" in r.output


# ----------------------------------------------------------------------------------- Qualisys
def test_qualisys_reader_recovers_a_known_rig(tmp_path, rng):
    rig = random_rig(rng, 3)
    path = tmp_path / "session.qca.txt"
    path.write_text(qca_text(rig, [(0, 0), (320, 180), (16, 0)]))
    assert detect_format(path) == "qualisys"
    back = read_calibration(path)[""]
    assert [p["name"] for p in back] == ["28000", "28001", "28002"]  # the marker camera is left out
    assert_same_params(back, rig, names=False, atol=1e-8)
    X = world_points(rng)
    cams = cameras_from_params(back)
    for v, p in enumerate(rig):
        np.testing.assert_allclose(cams[v].project(torch.as_tensor(X)).numpy(), opencv_projection(p, X), atol=1e-6)


def test_qualisys_axes_identity_camera_looks_down(tmp_path):
    """A Qualisys camera with identity orientation looks along world -Z with image-up = world +Y."""
    text = (
        '<calibration><cameras><camera active="1" serial="1" model="Miqus Video">'
        '<fov_video left="0" top="0" right="1919" bottom="1079"/><fov_video_max left="0" top="0" right="1919" bottom="1079"/>'
        '<transform x="0" y="0" z="3000" r11="1" r12="0" r13="0" r21="0" r22="1" r23="0" r31="0" r32="0" r33="1"/>'
        '<intrinsic sensorMinU="0" sensorMaxU="122879" sensorMinV="0" sensorMaxV="69119" focalLengthU="96000" '
        'focalLengthV="96000" centerPointU="61440" centerPointV="34560" skew="0" radialDistortion1="0" '
        'radialDistortion2="0" radialDistortion3="0" tangentalDistortion1="0" tangentalDistortion2="0"/>'
        "</camera></cameras></calibration>"
    )
    path = tmp_path / "down.qca.txt"
    path.write_text(text)
    cam = load_calibration(path)[0]
    assert cam.image_size.tolist() == [1920.0, 1080.0] and cam.K[0, 0] == 1500.0
    u = cam.project(torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(u[0], torch.tensor([960.0, 540.0], dtype=torch.float64))
    assert u[1, 0] > 960 and abs(u[1, 1] - 540) < 1e-9  # +X is to the right
    assert u[2, 1] < 540 and abs(u[2, 0] - 960) < 1e-9  # +Y is up in the image
    assert cam.depth(torch.zeros(1, 3, dtype=torch.float64)).item() == pytest.approx(3000.0)


def test_qualisys_pixel_unit_export_and_errors(tmp_path, rng):
    rig = random_rig(rng, 1)
    text = qca_text(rig, [(0, 0)], subpixels=1, marker_camera=False)
    text = re.sub(r"<fov_\w+ [^>]*/>\n", "", text)  # no field-of-view elements: size from the sensor
    path = tmp_path / "pixels.qca.txt"
    path.write_text(text)
    (p,) = read_qualisys_calibration(path)[""]
    np.testing.assert_allclose(p["K"], rig[0]["K"], atol=1e-9)
    assert p["size"].tolist() == (rig[0]["size"] + [64, 32]).tolist()  # the whole sensor
    path.write_text(text.replace("focalLengthV=", "focalLengthW="))
    with pytest.raises(CalibrationError, match=r"pixels\.qca\.txt camera '28000' <intrinsic>: missing attribute 'focalLengthV'"):
        read_calibration(path)


# ------------------------------------------------------------------------- datasets: H36M, Ski
def test_h36m_rig_file_is_consistent():
    rigs = read_calibration(REPO / "mvpose" / "calibration" / "h36m.json")
    assert sorted(rigs) == sorted(f"S{s}" for s in (1, 5, 6, 7, 8, 9, 11))
    origin = torch.zeros(1, 3, dtype=torch.float64)
    for name, params in rigs.items():
        assert [p["name"] for p in params] == ["54138969", "55011271", "58860488", "60457274"]
        cams = cameras_from_params(params)
        # the four cameras stand 3-6 m from the capture centre at about 1.5 m height, all seeing it
        assert torch.all(cams.centers[:, 2].sub(1500).abs() < 300)
        u = cams.project(origin.expand(4, 1, 3))[:, 0]
        assert torch.all((u > 0) & (u < cams.image_size)), name
        for p in params:  # the H36M-Toolbox dict round-trips
            back = h36m_camera_params({k: v for k, v in h36m_camera_dict(p).items()}, name=p["name"])
            assert_same_params([back], [p])


def test_skipose_cameras_match_the_published_formula(rng):
    N = 6
    rig = random_rig(rng, N, k3=False)
    K = np.stack([p["K"] for p in rig])
    K[:, :2] /= 256.0  # normalised by the 256 px image
    R = np.stack([p["R"] for p in rig])
    C_m = np.stack([-p["R"].T @ p["t"] for p in rig]) / 1000.0
    cams = skipose_cameras(K.reshape(N, 9), C_m, R.transpose(0, 2, 1).reshape(N, 9))
    assert cams.batch_shape == (N,) and cams.image_size[0].tolist() == [256.0, 256.0]
    X_m = rng.uniform(-0.5, 0.5, size=(N, 5, 3))
    # the loader's formula: x_cam = R_cam_2_world^T (X - cam_position); u = 256 * K_norm x / z
    x_cam = np.einsum("nji,nkj->nki", R.transpose(0, 2, 1), X_m - C_m[:, None])
    uv = np.einsum("nij,nkj->nki", K[:, :2] * 256.0, x_cam / x_cam[..., 2:])
    np.testing.assert_allclose(cams.project(torch.as_tensor(X_m * 1000.0)).numpy(), uv, atol=1e-8)
    with pytest.raises(CalibrationError, match="R_cam_2_world.*row 2"):
        bad = R.transpose(0, 2, 1).reshape(N, 9).copy()
        bad[2, 0] += 0.5
        skipose_cameras(K.reshape(N, 9), C_m, bad)
    with pytest.raises(CalibrationError, match=r"cam_position.*\(N, 3\)"):
        skipose_cameras(K.reshape(N, 9), C_m[:, :2], R.reshape(N, 9))


# ---------------------------------------------------------------------- detection and convert
def test_detection_and_unrecognised_files(tmp_path):
    path = tmp_path / "notes.toml"
    path.write_text('title = "not a calibration"\n[owner]\nname = "x"\n')
    with pytest.raises(CalibrationError, match="(?s)notes.toml.*recognised calibration formats.*pose2sim.*qualisys"):
        read_calibration(path)
    path = tmp_path / "other.json"
    path.write_text('{"cameras": []}')
    with pytest.raises(CalibrationError, match="(?s)field 'format' must be 'mvpose-calibration'.*recognised"):
        read_calibration(path)
    path = tmp_path / "scene.xml"
    path.write_text("<scene><object/></scene>")
    with pytest.raises(CalibrationError, match="opencv_storage"):
        read_calibration(path)


def test_convert_requires_a_rig_for_single_rig_formats_and_summarises(tmp_path):
    h36m = REPO / "mvpose" / "calibration" / "h36m.json"
    with pytest.raises(CalibrationError, match="(?s)several rigs.*S9.*--rig"):
        convert_calibration(h36m, tmp_path / "s9.toml", to="pose2sim")
    summary = convert_calibration(h36m, tmp_path / "s9.toml", to="pose2sim", rig="S9")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s9.toml"]  # nothing half-written left behind
    s9 = read_calibration(h36m)["S9"]
    assert_same_params(read_calibration(tmp_path / "s9.toml")[""], s9)
    # the summary reports each camera's distance from the first one
    centres = [-p["R"].T @ p["t"] for p in s9]
    row = next(line for line in summary.splitlines() if line.startswith("58860488"))
    assert row.split()[1] == "1000x1000"
    assert float(row.split()[-1]) == pytest.approx(np.linalg.norm(centres[2] - centres[0]), abs=0.5)
    assert float(row.split()[2]) == pytest.approx(s9[2]["K"][0, 0], abs=0.05)
    # the whole multi-rig file converts to mvpose TOML; a wrong suffix is refused
    convert_calibration(h36m, tmp_path / "all.toml")
    assert list(read_calibration(tmp_path / "all.toml")) == list(read_calibration(h36m))
    with pytest.raises(CalibrationError, match=r"\.yml, \.yaml or \.xml|ending in"):
        convert_calibration(tmp_path / "s9.toml", tmp_path / "s9.json", to="opencv")


def test_cli_calibrate_convert(tmp_path):
    runner = CliRunner()
    h36m = str(REPO / "mvpose" / "calibration" / "h36m.json")
    out = tmp_path / "s11.yml"
    res = runner.invoke(main, ["calibrate", "convert", h36m, str(out), "--to", "opencv", "--rig", "S11"])
    assert res.exit_code == 0, res.output
    assert "60457274" in res.output and "fx" in res.output
    assert_same_params(read_calibration(out)[""], read_calibration(h36m)["S11"])
    res = runner.invoke(main, ["calibrate", "convert", h36m, str(tmp_path / "x.toml"), "--to", "pose2sim"])
    assert res.exit_code != 0 and "--rig" in res.output
    assert "Example" in runner.invoke(main, ["calibrate", "convert", "--help"]).output


def test_example_rigs_describe_the_same_cameras(rng):
    files = sorted(EXAMPLES.iterdir())
    assert {detect_format(f) for f in files} == {"mvpose", "pose2sim", "opencv", "qualisys"}
    reference = load_calibration(EXAMPLES / "rig4.json")
    X = torch.as_tensor(world_points(rng, 20)).expand(4, 20, 3)
    expected = reference.project(X)
    for f in files:
        cams = load_calibration(f)
        torch.testing.assert_close(cams.project(X), expected, atol=1e-6, rtol=0, msg=f.name)
    assert "cam_2" in calibration_summary(params_from_cameras(reference))


def test_python310_reads_toml_through_tomli():
    """Python 3.10 has no ``tomllib``: the module falls back to ``tomli`` (declared for < 3.11 in
    pyproject.toml). Simulated here: version 3.10, ``import tomllib`` failing, a ``tomli`` stand-in."""
    import subprocess

    code = """
import sys, tomllib, types
import mvpose.geometry.camera  # torch, kornia: imported under the real version
fake = types.ModuleType("tomli")
fake.loads, fake.TOMLDecodeError = tomllib.loads, tomllib.TOMLDecodeError
sys.modules["tomli"], sys.modules["tomllib"] = fake, None  # None: `import tomllib` raises ImportError
real, sys.version_info = sys.version_info, (3, 10, 13, "final", 0)
import mvpose.geometry.calibration as calibration
sys.version_info = real
assert calibration.tomllib is fake, calibration.tomllib
print(len(calibration.read_calibration(sys.argv[1])[""]))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, str(EXAMPLES / "rig4.toml")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4"]


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_any_camera_name_round_trips(tmp_path, rng, suffix):
    """Names with quotes, backslashes, tabs and characters outside the Basic Multilingual Plane. TOML
    goes through tomli_w: the former hand-written printer escaped strings as JSON does, which
    spells U+1F600 as a surrogate pair, invalid in TOML."""
    rig = random_rig(rng, 3)
    for p, name in zip(rig, ['say "cheese"', "C:\\cams\\1\ttab", "cam \U0001F600 é"]):
        p["name"] = name
    write_mvpose_calibration(tmp_path / f"rig{suffix}", {"take \U0001F600": rig})
    back = read_calibration(tmp_path / f"rig{suffix}")
    assert list(back) == ["take \U0001F600"]
    assert [p["name"] for p in back["take \U0001F600"]] == [p["name"] for p in rig]
    assert_same_params(back["take \U0001F600"], rig, atol=0)
    if suffix == ".toml":
        write_pose2sim_calibration(tmp_path / "Calib.toml", rig)
        assert [p["name"] for p in read_calibration(tmp_path / "Calib.toml")[""]] == [p["name"] for p in rig]


@pytest.mark.parametrize("example", ["rig4.json", "rig4.toml", "rig4_pose2sim.toml", "rig4_opencv.yml", "rig4_opencv.xml",
                                     "rig4.qca.txt"])
def test_calibration_with_a_byte_order_mark_reads_as_without(tmp_path, example):
    """Windows editors save UTF-8 with a byte-order mark; JSON and TOML parsers refuse it at line 1."""
    from mvpose.resources import resolve_calibration

    src = resolve_calibration(example)
    path = tmp_path / example
    path.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
    plain, bom = load_calibration(src), load_calibration(path)
    assert plain.names == bom.names and torch.equal(plain.K, bom.K) and torch.equal(plain.t, bom.t)
