"""Board calibration on images rendered here: a checkerboard / ChArUco board projected square by square
(``cv2.fillConvexPoly``) through known cameras with lens distortion, supersampled and averaged down.

The renderer knows the board layout on its own (black squares where ``i + j`` is even; ChArUco markers from
OpenCV's own board definition), so detection and calibration are checked against an independent truth.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from mvpose.geometry.board_calibration import (
    Board,
    BoardCalibrationError,
    board_coverage,
    calibrate_extrinsics,
    calibrate_intrinsics,
    detect_board,
)
from mvpose.geometry.calibration import load_calibration, read_calibration

SIZE = (640, 480)
K_TRUE = np.array([[560.0, 0.0, 331.0], [0.0, 556.0, 236.0], [0.0, 0.0, 1.0]])
DIST_TRUE = np.array([-0.28, 0.09, 0.0012, -0.0008, 0.0])
CHECKER = Board("checkerboard", (9, 6), 30.0)
CHARUCO = Board("charuco", (7, 5), 40.0, marker_mm=30.0, dictionary="DICT_4X4_50")


# ------------------------------------------------------------------------------------------- rendering
def _edge_points(quad: np.ndarray, per_edge: int) -> np.ndarray:
    """(4, 3) corners -> (4 * per_edge, 3) points along the edges (curved edges survive the distortion)."""
    s = np.arange(per_edge)[:, None] / per_edge
    return np.concatenate([quad[i] + s * (quad[(i + 1) % 4] - quad[i]) for i in range(4)])


def _square(x0: float, y0: float, side: float) -> np.ndarray:
    return np.array([[x0, y0, 0], [x0 + side, y0, 0], [x0 + side, y0 + side, 0], [x0, y0 + side, 0]], float)


def board_layout(board: Board) -> tuple[np.ndarray, list[np.ndarray]]:
    """White backing (4, 3) and black polygons (each (N, 3)) in board millimetres."""
    (sx, sy), s = board.squares, board.square_mm
    white = np.array([[-s / 2, -s / 2, 0], [sx * s + s / 2, -s / 2, 0], [sx * s + s / 2, sy * s + s / 2, 0], [-s / 2, sy * s + s / 2, 0]])
    if board.kind == "checkerboard":
        return white, [_edge_points(_square(i * s, j * s, s), 8) for i in range(sx) for j in range(sy) if (i + j) % 2 == 0]
    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, board.dictionary))
    cb = cv2.aruco.CharucoBoard((sx, sy), s, board.marker_mm, d)
    markers = [np.asarray(c, float) for c in cb.getObjPoints()]
    centres = {(int(m[:, 0].mean() // s), int(m[:, 1].mean() // s)) for m in markers}
    black = [_edge_points(_square(i * s, j * s, s), 8) for i in range(sx) for j in range(sy) if (i, j) not in centres]
    bits = d.markerSize + 2  # the marker's bits and a one-cell black border
    for marker_id, corners in zip(cb.getIds().ravel(), markers):
        cells = cv2.aruco.generateImageMarker(d, int(marker_id), bits)
        for r, c in zip(*np.nonzero(cells == 0)):
            u = np.array([c, c + 1, c + 1, c]) / bits
            v = np.array([r, r, r + 1, r + 1]) / bits
            tl, tr, br, bl = corners
            pts = (1 - v)[:, None] * ((1 - u)[:, None] * tl + u[:, None] * tr) + v[:, None] * ((1 - u)[:, None] * bl + u[:, None] * br)
            black.append(pts)
    return white, black


def render(board: Board, K: np.ndarray, dist: np.ndarray, R: np.ndarray, t: np.ndarray, ss: int = 3) -> np.ndarray:
    """Grey image with the board (board-to-camera pose ``R, t``), drawn ``ss`` times larger then averaged."""
    white, black = board_layout(board)
    up = np.array([[ss, 0, (ss - 1) / 2], [0, ss, (ss - 1) / 2], [0, 0, 1.0]]) @ K
    img = np.full((SIZE[1] * ss, SIZE[0] * ss), 110, np.uint8)
    rvec = cv2.Rodrigues(R)[0]

    def fill(poly: np.ndarray, value: int) -> None:
        px = cv2.projectPoints(poly.reshape(-1, 1, 3), rvec, t.reshape(3, 1), up, dist)[0].reshape(-1, 2)
        cv2.fillConvexPoly(img, np.round(px * 16).astype(np.int32), value, cv2.LINE_AA, shift=4)

    fill(_edge_points(white, 16), 235)
    for poly in black:
        fill(poly, 25)
    return cv2.resize(img, SIZE, interpolation=cv2.INTER_AREA)


def _rot(rx: float, ry: float, rz: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([0.0, 0.0, rz]))[0] @ cv2.Rodrigues(np.array([rx, 0.0, 0.0]))[0] @ cv2.Rodrigues(np.array([0.0, ry, 0.0]))[0]


def _board_centre(board: Board) -> np.ndarray:
    return np.array([board.squares[0] * board.square_mm / 2, board.squares[1] * board.square_mm / 2, 0.0])


def intrinsic_views(board: Board, n: int, seed: int = 0, spread: float = 1.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Board poses (board-to-camera R, t) centred on a 3 x 3 grid of image points (scaled by ``spread``),
    tilted up to ~40 degrees, any in-plane turn, as near the camera as allowed: a checkerboard must be seen
    whole, a ChArUco board (detectable in part) needs half of its corners inside the image."""
    rng = np.random.default_rng(seed)
    white, _ = board_layout(board)
    corners = board.object_points()
    grid = [(gu, gv) for gv in (-1, 0, 1) for gu in (-1, 0, 1)]
    reach = 0.3 if board.kind == "checkerboard" else 0.4
    poses = []
    while len(poses) < n:
        gu, gv = grid[len(poses) % len(grid)]
        u = SIZE[0] * (0.5 + spread * reach * gu) + rng.uniform(-10, 10)
        v = SIZE[1] * (0.5 + spread * reach * gv) + rng.uniform(-10, 10)
        R = _rot(rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.7), rng.uniform(-np.pi, np.pi))
        for depth in np.arange(380.0, 1500.0, 20.0):
            t = depth * np.linalg.solve(K_TRUE, [u, v, 1.0]) - R @ _board_centre(board)
            pts = white if board.kind == "checkerboard" else corners
            px = cv2.projectPoints(pts.reshape(-1, 1, 3), cv2.Rodrigues(R)[0], t, K_TRUE, DIST_TRUE)[0].reshape(-1, 2)
            inside = ((px > 3) & (px < np.array(SIZE) - 3)).all(axis=-1)
            if inside.all() or (board.kind == "charuco" and inside.mean() >= 0.5):
                poses.append((R, t))
                break
    return poses


def distortion_field_error(K: np.ndarray, dist: np.ndarray) -> float:
    """Largest pixel difference between true and recovered projections of rays over the central 80% of the image,
    after removing the mean difference (a uniform shift of ~1 px is a principal point / camera rotation trade-off
    that extrinsics absorb; the principal point is checked on its own)."""
    u, v = np.meshgrid(np.linspace(0.1, 0.9, 9) * SIZE[0], np.linspace(0.1, 0.9, 9) * SIZE[1])
    pix = np.stack([u.ravel(), v.ravel()], -1).reshape(-1, 1, 2)
    rays = cv2.undistortPoints(pix, K_TRUE, DIST_TRUE).reshape(-1, 2)
    pts = np.concatenate([rays, np.ones((len(rays), 1))], -1).reshape(-1, 1, 3)
    diff = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, dist)[0].reshape(-1, 2) - pix.reshape(-1, 2)
    return float(np.linalg.norm(diff - diff.mean(axis=0), axis=-1).max())


# ------------------------------------------------------------------------------------------- detection
@pytest.mark.parametrize("board", [CHECKER, CHARUCO], ids=["checkerboard", "charuco"])
def test_detection_numbers_corners_like_the_board_at_any_in_plane_turn(board):
    obj = board.object_points()
    for angle in np.linspace(-np.pi, np.pi, 7, endpoint=False):
        R = _rot(0.25, -0.2, angle)
        t = 650.0 * np.linalg.solve(K_TRUE, [SIZE[0] / 2, SIZE[1] / 2, 1.0]) - R @ _board_centre(board)
        det = detect_board(render(board, K_TRUE, DIST_TRUE, R, t), board)
        assert det is not None, f"board not found at in-plane angle {angle:.2f}"
        truth = cv2.projectPoints(obj[det.ids], cv2.Rodrigues(R)[0], t, K_TRUE, DIST_TRUE)[0].reshape(-1, 2)
        assert np.abs(det.corners - truth).max() < 0.35, f"angle {angle:.2f}: corners off or renumbered"
        if board.kind == "checkerboard":
            assert len(det.ids) == len(obj)


def test_no_board_gives_none():
    assert detect_board(np.full((SIZE[1], SIZE[0], 3), 120, np.uint8), CHECKER) is None
    assert detect_board(np.full((SIZE[1], SIZE[0]), 120, np.uint8), CHARUCO) is None


# ------------------------------------------------------------------------------------------- intrinsics
@pytest.mark.parametrize("board", [CHECKER, CHARUCO], ids=["checkerboard", "charuco"])
def test_intrinsics_recovered_from_rendered_views(board):
    dets = [detect_board(render(board, K_TRUE, DIST_TRUE, R, t), board) for R, t in intrinsic_views(board, 12, seed=1)]
    assert all(d is not None for d in dets)
    res = calibrate_intrinsics(dets, board, SIZE, name="cam")
    assert res.rms < 0.2
    assert np.allclose(np.diag(res.K)[:2], np.diag(K_TRUE)[:2], rtol=0.003)
    assert np.allclose(res.K[:2, 2], K_TRUE[:2, 2], atol=1.5)
    assert distortion_field_error(res.K, res.dist) < 0.6
    assert res.coverage > 0.4 and not res.warnings
    p = res.params()
    assert p["name"] == "cam" and np.allclose(p["R"], np.eye(3)) and tuple(p["size"]) == SIZE


def test_intrinsics_warn_when_the_board_stays_in_the_middle(caplog):
    dets = [detect_board(render(CHECKER, K_TRUE, DIST_TRUE, R, t), CHECKER)
            for R, t in intrinsic_views(CHECKER, 6, seed=3, spread=0.05)]
    with caplog.at_level(logging.WARNING):
        res = calibrate_intrinsics(dets, CHECKER, SIZE, name="cam", fix_k3=True)
    assert res.coverage < 0.4
    assert any("covered only" in w for w in res.warnings)
    assert "covered only" in caplog.text


def test_intrinsics_need_three_views():
    dets = [detect_board(render(CHECKER, K_TRUE, DIST_TRUE, R, t), CHECKER) for R, t in intrinsic_views(CHECKER, 2)]
    with pytest.raises(BoardCalibrationError, match="at least 3"):
        calibrate_intrinsics(dets, CHECKER, SIZE, name="cam")


def test_coverage_of_known_rectangles():
    half = np.array([[0, 0], [320, 0], [320, 480], [0, 480]], float)
    assert board_coverage([half], SIZE) == pytest.approx(0.5, abs=0.03)
    assert board_coverage([half, half + [320, 0]], SIZE) == pytest.approx(1.0, abs=0.03)


def test_board_checks():
    with pytest.raises(BoardCalibrationError, match="marker size .* found none \\(give --marker-size"):
        Board("charuco", (7, 5), 40.0)
    with pytest.raises(BoardCalibrationError, match="found 45.0 mm"):
        Board("charuco", (7, 5), 40.0, 45.0)
    with pytest.raises(BoardCalibrationError, match="dictionary"):
        Board("charuco", (7, 5), 40.0, 30.0, "DICT_NOPE")
    assert Board("checkerboard", (8, 6), 30.0).symmetric and not CHECKER.symmetric
    assert CHECKER.object_points().shape == (40, 3)


# ------------------------------------------------------------------------------------------- extrinsics
# Boards for cameras 1.5 m away: bigger squares, so the ArUco bits stay a few pixels wide.
CHECKER_EXT = Board("checkerboard", (9, 6), 60.0)
CHARUCO_EXT = Board("charuco", (7, 5), 80.0, marker_mm=60.0, dictionary="DICT_4X4_50")


def _look_at(C: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = (target - C) / np.linalg.norm(target - C)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def extrinsic_scene(board: Board, frames: int = 12, seed: int = 0):
    """Three cameras on an arc (world z up); the board faces cameras a+b in the first half, b+c in the second.

    Returns the true world-to-camera ``(R, t)`` per camera and rendered images ``{camera: {frame: image}}``.
    """
    rng = np.random.default_rng(seed)
    target = np.array([0.0, 0.0, 900.0])
    cams = {}
    for name, az in (("a", -0.75), ("b", 0.0), ("c", 0.75)):
        C = np.array([1500.0 * np.cos(az), 1500.0 * np.sin(az), 1100.0 + 80 * az])
        R = _look_at(C, target)
        cams[name] = (R, -R @ C)
    images = {n: {} for n in cams}
    for f in range(frames):
        pair = ("a", "b") if f < frames // 2 else ("b", "c")
        # the board faces the midpoint of the pair: its +z (into the board) points away from them
        mid = sum(-cams[n][0].T @ cams[n][1] for n in pair) / 2
        centre = target + rng.uniform(-120, 120, 3)
        z = (centre - mid) / np.linalg.norm(centre - mid)
        x = np.cross([0.0, 0.0, 1.0], z)
        x /= np.linalg.norm(x)
        Rb = np.stack([x, np.cross(z, x), z], axis=1) @ _rot(rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(-0.4, 0.4))
        tb = centre - Rb @ _board_centre(board)  # board -> world
        for n in pair:
            R, t = cams[n]
            images[n][f] = render(board, K_TRUE, DIST_TRUE, R @ Rb, R @ tb + t)
    return cams, images


def _detect_all(images, board):
    return {n: {f: d for f, im in imgs.items() if (d := detect_board(im, board)) is not None} for n, imgs in images.items()}


@pytest.mark.parametrize("board", [CHECKER_EXT, CHARUCO_EXT], ids=["checkerboard", "charuco"])
def test_extrinsics_chain_pairs_into_one_frame(board):
    cams, images = extrinsic_scene(board)
    dets = _detect_all(images, board)
    assert all(len(d) >= 5 for d in dets.values())
    intr = {n: {"K": K_TRUE, "dist": DIST_TRUE, "size": SIZE} for n in cams}
    res = calibrate_extrinsics(dets, intr, board, reference="a")
    assert ("a", "c") not in res.pairs and res.pairs[("a", "b")] >= 5 and res.pairs[("b", "c")] >= 5
    assert set(res.tree) == {("a", "b"), ("b", "c")}
    Ra, ta = cams["a"]
    for p in res.params:
        R, t = cams[p["name"]]
        R_rel, t_rel = R @ Ra.T, t - R @ Ra.T @ ta  # truth with camera a as the world
        angle = np.degrees(np.arccos(np.clip((np.trace(p["R"] @ R_rel.T) - 1) / 2, -1, 1)))
        assert angle < 0.1, f"camera {p['name']}: rotation off by {angle:.3f} deg"
        centre, centre_true = -p["R"].T @ p["t"], -R_rel.T @ t_rel
        assert np.linalg.norm(centre - centre_true) < 3.0, f"camera {p['name']}: centre off"
        assert res.rms[p["name"]] < 0.3


def test_extrinsics_board_world_puts_the_board_on_z0():
    cams, images = extrinsic_scene(CHARUCO_EXT, frames=8, seed=2)
    dets = _detect_all(images, CHARUCO_EXT)
    intr = {n: {"K": K_TRUE, "dist": DIST_TRUE, "size": SIZE} for n in cams}
    res = calibrate_extrinsics(dets, intr, CHARUCO_EXT, world="board", origin_frame=1)
    world = CHARUCO_EXT.object_points() * [1.0, -1.0, -1.0]  # x along the columns, y against the rows, z up
    checked = 0
    for p in res.params:
        if 1 in dets[p["name"]]:
            d = dets[p["name"]][1]
            proj = cv2.projectPoints(world[d.ids], cv2.Rodrigues(p["R"])[0], p["t"], p["K"], p["dist"])[0].reshape(-1, 2)
            assert np.abs(proj - d.corners).max() < 1.0
            checked += 1
        assert (-p["R"].T @ p["t"])[2] > 0  # every camera is in front of the board's face: positive height
    assert checked == 2


def test_extrinsics_errors():
    sym = Board("checkerboard", (8, 6), 30.0)
    with pytest.raises(BoardCalibrationError, match="half turn"):
        calibrate_extrinsics({"a": {}, "b": {}}, {}, sym)
    cams, images = extrinsic_scene(CHARUCO_EXT, frames=4)
    dets = _detect_all(images, CHARUCO_EXT)
    dets["lonely"] = {}
    intr = {n: {"K": K_TRUE, "dist": DIST_TRUE, "size": SIZE} for n in dets}
    with pytest.raises(BoardCalibrationError, match="lonely"):
        calibrate_extrinsics(dets, intr, CHARUCO_EXT)
    del intr["lonely"]
    with pytest.raises(BoardCalibrationError, match="no intrinsics"):
        calibrate_extrinsics(dets, intr, CHARUCO_EXT)


# ------------------------------------------------------------------------------------------- CLI
def test_cli_intrinsics_then_extrinsics(tmp_path):
    from mvpose.cli import main

    board = CHARUCO_EXT
    cams, images = extrinsic_scene(board, frames=8, seed=4)
    for i, (n, imgs) in enumerate(images.items()):
        (tmp_path / "ext" / n).mkdir(parents=True)
        for f, im in imgs.items():
            cv2.imwrite(str(tmp_path / "ext" / n / f"frame_{f:04d}.png"), im)
        (tmp_path / "int" / n).mkdir(parents=True)
        for k, (R, t) in enumerate(intrinsic_views(board, 12, seed=10 + i)):
            cv2.imwrite(str(tmp_path / "int" / n / f"{k:03d}.png"), render(board, K_TRUE, DIST_TRUE, R, t))
    opts = ["--board", "charuco", "--squares", "7x5", "--square-size", "80", "--marker-size", "60"]
    runner = CliRunner()
    r = runner.invoke(main, ["calibrate", "intrinsics", *opts, "--images", str(tmp_path / "int"),
                             "--out", str(tmp_path / "intr.json")])
    assert r.exit_code == 0, r.output
    assert "RMS reprojection error" in r.output
    intr = read_calibration(tmp_path / "intr.json")[""]
    assert [p["name"] for p in intr] == ["a", "b", "c"]
    for p in intr:
        assert np.allclose(np.diag(p["K"])[:2], np.diag(K_TRUE)[:2], rtol=0.005)
    r = runner.invoke(main, ["calibrate", "extrinsics", *opts, "--intrinsics", str(tmp_path / "intr.json"),
                             "--images", str(tmp_path / "ext"), "--reference", "b", "--out", str(tmp_path / "rig.toml")])
    assert r.exit_code == 0, r.output
    assert "a-b: 4 shared frames" in r.output
    rig = load_calibration(tmp_path / "rig.toml")
    assert rig.names == ["a", "b", "c"]
    assert np.allclose(rig.R[1].numpy(), np.eye(3), atol=1e-9)  # the reference camera is the world
    for name in ("a", "c"):
        R, t = cams[name]
        Rb, tb = cams["b"]
        centre_in_b = Rb @ (-R.T @ t) + tb
        assert np.linalg.norm(rig.centers[rig.index(name)].numpy() - centre_in_b) < 10.0


def test_cli_intrinsics_reports_a_missing_board(tmp_path):
    from mvpose.cli import main

    (tmp_path / "cam").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "cam" / f"{i}.png"), np.full((120, 160, 3), 90, np.uint8))
    r = CliRunner().invoke(main, ["calibrate", "intrinsics", "--board", "checkerboard", "--squares", "9x6",
                                  "--square-size", "30", "--images", str(tmp_path / "cam"), "--out", str(tmp_path / "o.json")])
    assert r.exit_code != 0
    assert "0 usable view" in r.output
    assert not (tmp_path / "o.json").exists()
