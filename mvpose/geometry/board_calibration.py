"""Camera calibration from a planar board (checkerboard or ChArUco) with OpenCV.

Board frame: origin at the board's top-left outer corner, ``x`` along the columns, ``y`` down the rows,
``z = x cross y`` into the board (OpenCV's convention); square ``(i, j)`` (column, row) is black when
``i + j`` is even, as OpenCV prints ChArUco boards. Checkerboard corners are the inner corners, row by row.

- :func:`calibrate_intrinsics`: ``K`` and distortion ``(k1, k2, p1, p2, k3)`` of one camera from views of
  the board (``cv2.calibrateCamera``), with the RMS reprojection error and the share of the image the board
  covered (a warning below ``min_coverage``: distortion far from the board is extrapolated).
- :func:`calibrate_extrinsics`: poses of several cameras with known intrinsics from synchronised views of
  the board. Every camera pair that sees the board in the same frames gets a relative pose; the pairs are
  chained along a maximum spanning tree (most shared frames) into one frame, then every camera pose and
  board pose is refined together on the reprojection error (bundle adjustment, ``scipy.optimize``).

Checkerboards look the same after a half turn when their square counts sum to an even number (8 x 6: the
same colour at opposite corners), so two cameras facing each other could number the corners differently.
Extrinsics therefore need a board whose square counts sum to an odd number (e.g. 9 x 6), or a ChArUco board;
corners are renumbered from the colour of the first square.

Units: the board's square size is in millimetres, so translations are millimetres, mvpose's unit
(``mvpose/calibration/README.md``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import cv2
import numpy as np

from mvpose.frames import IMAGE_SUFFIXES, VIDEO_SUFFIXES, frame_number

__all__ = [
    "Board",
    "BoardCalibrationError",
    "Detection",
    "ExtrinsicsResult",
    "IntrinsicsResult",
    "board_coverage",
    "calibrate_extrinsics",
    "calibrate_intrinsics",
    "camera_frame_sources",
    "detect_board",
    "detect_in_source",
    "extrinsics_from_folder",
    "format_extrinsics",
    "format_intrinsics",
    "intrinsics_from_folder",
    "iter_frames",
]

log = logging.getLogger(__name__)

# Board poses whose own PnP fit is worse than this (px RMS) are not trusted for extrinsics.
MAX_POSE_RMS_PX = 3.0


class BoardCalibrationError(ValueError):
    """Calibration cannot proceed; the message says what was found and what is needed."""


@dataclass(frozen=True)
class Board:
    """A planar calibration board.

    Attributes:
        kind: ``"checkerboard"`` or ``"charuco"``.
        squares: ``(columns, rows)`` of squares (a 9 x 6 checkerboard has 8 x 5 inner corners).
        square_mm: side of a square, millimetres.
        marker_mm: side of an ArUco marker (ChArUco only).
        dictionary: ArUco dictionary name (ChArUco only), e.g. ``"DICT_4X4_50"``.
    """

    kind: str
    squares: tuple[int, int]
    square_mm: float
    marker_mm: float | None = None
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if self.kind not in ("checkerboard", "charuco"):
            raise BoardCalibrationError(f"board kind must be 'checkerboard' or 'charuco', got {self.kind!r}")
        if len(self.squares) != 2 or min(self.squares) < 3:
            raise BoardCalibrationError(f"board needs at least 3 x 3 squares, got {self.squares}")
        if not self.square_mm > 0:
            raise BoardCalibrationError(f"square size must be > 0 mm, got {self.square_mm}")
        if self.kind == "charuco":
            if self.marker_mm is None or not 0 < self.marker_mm < self.square_mm:
                found = "none (give --marker-size, the printed ArUco marker's side in mm)" if self.marker_mm is None \
                    else f"{self.marker_mm} mm"
                raise BoardCalibrationError(
                    f"a ChArUco board needs a marker size between 0 and the square size {self.square_mm} mm, "
                    f"found {found}"
                )
            if not hasattr(cv2.aruco, self.dictionary):
                known = sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_"))
                raise BoardCalibrationError(f"unknown ArUco dictionary {self.dictionary!r}; known: {', '.join(known)}")

    @property
    def inner(self) -> tuple[int, int]:
        """Inner corners ``(columns, rows)``."""
        return self.squares[0] - 1, self.squares[1] - 1

    @property
    def symmetric(self) -> bool:
        """A checkerboard that looks the same after a half turn (corner numbering ambiguous)."""
        return self.kind == "checkerboard" and sum(self.squares) % 2 == 0

    def object_points(self) -> np.ndarray:
        """(N, 3) float64 board-frame corners in id order (row by row), millimetres."""
        if self.kind == "charuco":
            return np.asarray(self.cv_board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)
        nx, ny = self.inner
        c, r = np.meshgrid(np.arange(nx), np.arange(ny))
        return np.stack([(c.ravel() + 1.0) * self.square_mm, (r.ravel() + 1.0) * self.square_mm, np.zeros(nx * ny)], -1)

    def cv_board(self) -> "cv2.aruco.CharucoBoard":
        """The OpenCV ChArUco board (ChArUco only)."""
        return _charuco_board(self.squares, float(self.square_mm), float(self.marker_mm), self.dictionary)


@functools.lru_cache(maxsize=8)
def _charuco_board(squares: tuple[int, int], square: float, marker: float, dictionary: str):
    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
    return cv2.aruco.CharucoBoard(tuple(squares), square, marker, d)


@dataclass
class Detection:
    """Board corners found in one image: ``ids (N,)`` into :meth:`Board.object_points`, ``corners (N, 2)`` px."""

    ids: np.ndarray
    corners: np.ndarray


# ---------------------------------------------------------------------------------------------- detection
def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def _quad_mean(gray: np.ndarray, quad: np.ndarray) -> float:
    """Mean intensity inside a quadrilateral shrunk to half size about its centre (away from the edges)."""
    centre = quad.mean(axis=0)
    pts = np.round((centre + 0.5 * (quad - centre)) * 16).astype(np.int32)
    mask = np.zeros(gray.shape, np.uint8)
    cv2.fillConvexPoly(mask, pts, 255, shift=4)
    return float(cv2.mean(gray, mask)[0]) if mask.any() else float("nan")


def _orient_checkerboard(gray: np.ndarray, corners: np.ndarray, board: Board) -> np.ndarray:
    """Renumber checkerboard corners so that square (1, 1) is black: undoes OpenCV's half-turn ambiguity."""
    nx = board.inner[0]
    black = _quad_mean(gray, corners[[0, 1, nx + 1, nx]])  # square (1, 1)
    white = _quad_mean(gray, corners[[1, 2, nx + 2, nx + 1]])  # square (2, 1)
    return corners[::-1].copy() if black > white else corners


def detect_board(image: np.ndarray, board: Board) -> Detection | None:
    """Find the board's corners in an image (sub-pixel); None when the board is not found.

    Checkerboards must be seen whole; ChArUco boards may be partly hidden (at least 4 corners are returned).

    Args:
        image: (H, W) or (H, W, 3) uint8 (BGR).
    """
    gray = _gray(image)
    if board.kind == "checkerboard":
        # The classic detector with sub-pixel refinement is ~100x faster than the sector-based one and, on sharp
        # images, more accurate; the sector-based one copes better with blur and noise, so it is the fallback.
        found, corners = cv2.findChessboardCorners(gray, board.inner, cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
        if found:
            grid = corners.reshape(board.inner[1], board.inner[0], 2)
            spacing = np.linalg.norm(np.diff(grid, axis=1), axis=-1).min()
            half = int(np.clip(0.4 * spacing, 2, 11))
            corners = cv2.cornerSubPix(gray, corners, (half, half), (-1, -1),
                                       (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3))
        else:
            flags = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY
            found, corners = cv2.findChessboardCornersSB(gray, board.inner, flags=flags)
            if not found:
                return None
        corners = _orient_checkerboard(gray, corners.reshape(-1, 2).astype(np.float64), board)
        return Detection(np.arange(len(corners)), corners)
    detector = cv2.aruco.CharucoDetector(board.cv_board())
    corners, ids, _, _ = detector.detectBoard(gray)
    if ids is None or len(ids) < 4:
        return None
    return Detection(ids.reshape(-1).astype(np.int64), corners.reshape(-1, 2).astype(np.float64))


# ---------------------------------------------------------------------------------------------- frame sources
def iter_frames(source: str | Path, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame number, BGR image)`` from a video file or an image folder, every ``every``-th frame.

    Image folders are numbered by the last digits of the file names (sorted order when they have none).
    """
    source = Path(source)
    every = max(1, int(every))
    if source.is_file():
        cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            raise BoardCalibrationError(f"{source}: OpenCV cannot open this video")
        try:
            f = 0
            while True:
                if f % every == 0:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    yield f, frame
                elif not cap.grab():
                    break
                f += 1
        finally:
            cap.release()
        return
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BoardCalibrationError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)})")
    numbers = [frame_number(p.name) for p in files]
    if any(n is None for n in numbers) or len(set(numbers)) != len(numbers):
        numbers = list(range(len(files)))
    for n, p in sorted(zip(numbers, files)):
        if n % every:
            continue
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("%s: not an image OpenCV can read; skipped", p)
            continue
        yield n, image


def camera_frame_sources(directory: str | Path) -> dict[str, Path]:
    """Camera name -> video file or image folder in ``directory``.

    ``directory`` holds one sub-folder of images or one video file per camera (named by the camera); a folder
    holding images itself is one camera named after the folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise BoardCalibrationError(f"{directory}: not a folder")
    entries = [p for p in sorted(directory.iterdir()) if not p.name.startswith(".")]
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries if p.is_file()):
        return {directory.name: directory}
    out = {p.stem if p.is_file() else p.name: p for p in entries
           if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES}
    if not out:
        raise BoardCalibrationError(f"{directory}: expected images, or one image folder / video file per camera")
    return out


def detect_in_source(
    source: str | Path, board: Board, every: int = 1, progress: bool = False
) -> tuple[dict[int, Detection], tuple[int, int]]:
    """Detect the board in every ``every``-th frame of a video / image folder.

    Returns:
        ``{frame number: Detection}`` for the frames where the board was found, and the image ``(width, height)``.
    """
    from tqdm import tqdm

    found: dict[int, Detection] = {}
    size: tuple[int, int] | None = None
    for f, image in tqdm(iter_frames(source, every), desc=f"detect {Path(source).name}", unit="frame",
                         disable=not progress, leave=False):
        h, w = image.shape[:2]
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise BoardCalibrationError(f"{source}: frame {f} is {w}x{h}, earlier frames are {size[0]}x{size[1]}")
        det = detect_board(image, board)
        if det is not None:
            found[f] = det
    if size is None:
        raise BoardCalibrationError(f"{source}: no frames")
    return found, size


# ---------------------------------------------------------------------------------------------- intrinsics
@dataclass
class IntrinsicsResult:
    """One camera's intrinsics.

    Attributes:
        K: (3, 3); dist: (5,) ``k1 k2 p1 p2 k3``; image_size: ``(width, height)``.
        rms: RMS reprojection error over all corners (px); per_view_rms: (N,) per view.
        coverage: share of the image inside the board's outline in at least one view.
        frames: frame numbers of the views used.
        warnings: human-readable warnings (low coverage, high error).
    """

    name: str
    K: np.ndarray
    dist: np.ndarray
    image_size: tuple[int, int]
    rms: float
    per_view_rms: np.ndarray
    coverage: float
    frames: list[int]
    warnings: list[str] = field(default_factory=list)

    def params(self) -> dict:
        """Camera params of :mod:`mvpose.geometry.calibration` (identity pose: intrinsics only)."""
        return {"name": self.name, "size": np.asarray(self.image_size, dtype=np.float64), "K": self.K,
                "dist": self.dist, "R": np.eye(3), "t": np.zeros(3)}


def board_coverage(corner_sets: Sequence[np.ndarray], image_size: tuple[int, int], cells: int = 64) -> float:
    """Share of the image covered by the convex hull of the corners of at least one view.

    Args:
        corner_sets: (N_i, 2) pixel corners per view.
        image_size: ``(width, height)``.
        cells: resolution of the coverage grid along the longer side.
    """
    W, H = image_size
    s = cells / max(W, H)
    mask = np.zeros((max(1, round(H * s)), max(1, round(W * s))), np.uint8)
    for pts in corner_sets:
        if len(pts) >= 3:
            hull = cv2.convexHull(np.round(np.asarray(pts) * s * 16).astype(np.int32))
            cv2.fillConvexPoly(mask, hull, 1, shift=4)
    return float(mask.mean())


def _views(detections: Sequence[Detection], board: Board, min_corners: int) -> list[int]:
    full = len(board.object_points())
    need = full if board.kind == "checkerboard" else min_corners
    return [i for i, d in enumerate(detections) if len(d.ids) >= need]


def calibrate_intrinsics(
    detections: Sequence[Detection] | Mapping[int, Detection],
    board: Board,
    image_size: tuple[int, int],
    *,
    name: str = "camera",
    max_views: int = 40,
    min_corners: int = 8,
    fix_k3: bool = False,
    min_coverage: float = 0.4,
) -> IntrinsicsResult:
    """Intrinsics of one camera from board detections (``cv2.calibrateCamera``).

    Args:
        detections: detections per view (a list, or ``{frame: Detection}``).
        board: the board.
        image_size: ``(width, height)``.
        name: camera name (for messages and the result).
        max_views: at most this many views, spread evenly over the detections (the solve grows with views).
        min_corners: ChArUco views with fewer corners are skipped.
        fix_k3: keep ``k3 = 0`` (advisable for narrow-angle lenses and few views).
        min_coverage: warn when the board covered less of the image than this.
    """
    frames = list(detections) if isinstance(detections, Mapping) else list(range(len(detections)))
    dets = list(detections.values()) if isinstance(detections, Mapping) else list(detections)
    keep = _views(dets, board, min_corners)
    if len(keep) < 3:
        raise BoardCalibrationError(
            f"camera {name}: the board was found in {len(keep)} usable view(s) of {len(dets)}; at least 3 are needed "
            "(more, with the board tilted and in every part of the image, give better intrinsics)"
        )
    if len(keep) > max_views:
        keep = [keep[i] for i in np.linspace(0, len(keep) - 1, max_views).round().astype(int)]
    obj = board.object_points().astype(np.float32)
    objs = [obj[dets[i].ids] for i in keep]
    imgs = [dets[i].corners.astype(np.float32).reshape(-1, 1, 2) for i in keep]
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(objs, imgs, tuple(int(v) for v in image_size), None, None, flags=flags)
    dist = np.asarray(dist, dtype=np.float64).reshape(-1)
    dist = np.pad(dist[:5], (0, max(0, 5 - dist.size)))
    per_view = np.array([
        np.sqrt(np.mean(np.sum((cv2.projectPoints(o, r, t, K, dist)[0].reshape(-1, 2) - i.reshape(-1, 2)) ** 2, -1)))
        for o, i, r, t in zip(objs, imgs, rvecs, tvecs)
    ])
    coverage = board_coverage([dets[i].corners for i in keep], image_size)
    warnings = []
    if coverage < min_coverage:
        warnings.append(
            f"camera {name}: the board covered only {100 * coverage:.0f}% of the image; distortion away from it is "
            "extrapolated - show the board near the borders and corners too"
        )
    if rms > 1.0:
        warnings.append(f"camera {name}: RMS reprojection error {rms:.2f} px is high (blur, a bent board, or wrong board size?)")
    for w in warnings:
        log.warning("%s", w)
    return IntrinsicsResult(name, np.asarray(K, dtype=np.float64), dist, (int(image_size[0]), int(image_size[1])),
                            float(rms), per_view, coverage, [frames[i] for i in keep], warnings)


# ---------------------------------------------------------------------------------------------- extrinsics
@dataclass
class ExtrinsicsResult:
    """Camera poses chained into one world frame.

    Attributes:
        params: camera params of :mod:`mvpose.geometry.calibration` (``name, size, K, dist, R, t``; mm).
        rms: RMS reprojection error per camera after bundle adjustment (px).
        frames: frames whose board pose was used, per camera.
        pairs: ``{(a, b): shared frames}`` for every camera pair that saw the board together.
        tree: the ``(parent, child)`` pairs the poses were chained along.
        reference: the camera the chain started from.
        world: ``"camera"`` (the reference camera's frame) or ``"board"``.
    """

    params: list[dict]
    rms: dict[str, float]
    frames: dict[str, list[int]]
    pairs: dict[tuple[str, str], int]
    tree: list[tuple[str, str]]
    reference: str
    world: str


def _to_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, np.asarray(t).reshape(3)
    return T


def _inv(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return _to_T(R.T, -R.T @ t)


def _rot_mean(Rs: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotations (N, 3, 3): the rotation nearest to their sum."""
    U, _, Vt = np.linalg.svd(Rs.sum(axis=0))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _board_poses(
    dets: Mapping[int, Detection], K: np.ndarray, dist: np.ndarray, obj: np.ndarray, min_corners: int
) -> dict[int, np.ndarray]:
    """Board-to-camera transforms (4, 4) per frame from PnP, for views with a trustworthy fit."""
    poses = {}
    for f, d in dets.items():
        if len(d.ids) < min_corners:
            continue
        o, i = obj[d.ids], d.corners.reshape(-1, 1, 2)
        ok, rvec, tvec = cv2.solvePnP(o, i, K, dist, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            continue
        rvec, tvec = cv2.solvePnPRefineLM(o, i, K, dist, rvec, tvec)
        err = cv2.projectPoints(o, rvec, tvec, K, dist)[0].reshape(-1, 2) - d.corners
        if np.sqrt(np.mean(np.sum(err ** 2, -1))) <= MAX_POSE_RMS_PX:
            poses[f] = _to_T(cv2.Rodrigues(rvec)[0], tvec)
    return poses


def _spanning_tree(names: list[str], pairs: dict[tuple[str, str], int], root: str) -> list[tuple[str, str]]:
    """Prim's maximum spanning tree over shared-frame counts: (parent, child) edges from ``root``."""
    inside, edges = {root}, []
    while len(inside) < len(names):
        best = max(((n, a, b) for (a, b), n in pairs.items() if (a in inside) != (b in inside)), default=None)
        if best is None:
            break
        _, a, b = best
        parent, child = (a, b) if a in inside else (b, a)
        edges.append((parent, child))
        inside.add(child)
    return edges


def _bundle_adjust(
    cams: list[str], cam_T: dict[str, np.ndarray], board_T: dict[int, np.ndarray],
    obs: list[tuple[str, int, Detection]], intr: Mapping[str, tuple[np.ndarray, np.ndarray]], obj: np.ndarray,
    fixed: str,
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """Refine camera poses (all but ``fixed``) and board poses on the reprojection error (robust loss).

    ``cam_T[c]`` maps reference to camera coordinates, ``board_T[f]`` board to reference coordinates.
    """
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix

    free = [c for c in cams if c != fixed]
    frames = sorted(board_T)
    ci = {c: i for i, c in enumerate(free)}
    fi = {f: len(free) + i for i, f in enumerate(frames)}

    def pack(T: np.ndarray) -> np.ndarray:
        return np.r_[cv2.Rodrigues(T[:3, :3])[0].ravel(), T[:3, 3]]

    def unpack(x: np.ndarray) -> np.ndarray:
        return _to_T(cv2.Rodrigues(x[:3])[0], x[3:])

    x0 = np.concatenate([pack(cam_T[c]) for c in free] + [pack(board_T[f]) for f in frames])
    sizes = [2 * len(d.ids) for _, _, d in obs]

    def residuals(x: np.ndarray) -> np.ndarray:
        blocks = x.reshape(-1, 6)
        out = []
        for c, f, d in obs:
            T = (np.eye(4) if c == fixed else unpack(blocks[ci[c]])) @ unpack(blocks[fi[f]])
            K, dist = intr[c]
            rvec = cv2.Rodrigues(T[:3, :3])[0]
            proj = cv2.projectPoints(obj[d.ids], rvec, T[:3, 3], K, dist)[0].reshape(-1, 2)
            out.append((proj - d.corners).ravel())
        return np.concatenate(out)

    sparsity = lil_matrix((sum(sizes), x0.size), dtype=np.int8)
    row = 0
    for (c, f, _), n in zip(obs, sizes):
        if c != fixed:
            sparsity[row:row + n, 6 * ci[c]:6 * ci[c] + 6] = 1
        sparsity[row:row + n, 6 * fi[f]:6 * fi[f] + 6] = 1
        row += n
    sol = least_squares(residuals, x0, jac_sparsity=sparsity, loss="soft_l1", f_scale=1.0, x_scale="jac",
                        method="trf", max_nfev=200)
    blocks = sol.x.reshape(-1, 6)
    cam_out = {c: (np.eye(4) if c == fixed else unpack(blocks[ci[c]])) for c in cams}
    return cam_out, {f: unpack(blocks[fi[f]]) for f in frames}


def calibrate_extrinsics(
    detections: Mapping[str, Mapping[int, Detection]],
    intrinsics: Mapping[str, Mapping],
    board: Board,
    *,
    reference: str | None = None,
    world: str = "camera",
    origin_frame: int | None = None,
    min_corners: int = 6,
    max_frames: int = 120,
) -> ExtrinsicsResult:
    """Poses of several calibrated cameras from synchronised board views.

    Args:
        detections: ``{camera: {frame: Detection}}``; frame numbers are shared (synchronised cameras).
        intrinsics: ``{camera: params}`` with ``K``, ``dist`` and ``size`` (as read by
            :func:`mvpose.geometry.calibration.read_calibration`).
        board: the board (a checkerboard must not be symmetric, see the module doc).
        reference: camera the chain starts from (default: the one sharing most frames with others).
        world: ``"camera"``: the reference camera's frame is the world. ``"board"``: the board in
            ``origin_frame`` is the world, with ``z`` up out of its face (``x`` along the columns, ``y`` against
            the rows): lay the board on the floor for a Z-up world as mvpose expects.
        origin_frame: the board pose that defines a ``"board"`` world (default: the frame seen by most cameras).
        min_corners: board views with fewer corners are skipped.
        max_frames: the bundle adjustment uses at most this many frames (those seen by most cameras); the
            pairwise estimates use all of them.

    Returns:
        :class:`ExtrinsicsResult`.
    """
    if board.symmetric:
        raise BoardCalibrationError(
            f"a {board.squares[0]} x {board.squares[1]} checkerboard looks the same after a half turn, so cameras "
            "facing each other may number its corners differently; use a board whose square counts sum to an odd "
            "number (e.g. 9 x 6) or a ChArUco board"
        )
    if world not in ("camera", "board"):
        raise BoardCalibrationError(f"world must be 'camera' or 'board', got {world!r}")
    names = [n for n in detections]
    missing = [n for n in names if n not in intrinsics]
    if missing:
        raise BoardCalibrationError(f"no intrinsics for camera(s) {', '.join(missing)}; intrinsics have {', '.join(intrinsics)}")
    if len(names) < 2:
        raise BoardCalibrationError(f"extrinsics need at least 2 cameras, got {names}")
    obj = board.object_points()
    intr = {n: (np.asarray(intrinsics[n]["K"], np.float64), np.asarray(intrinsics[n]["dist"], np.float64)) for n in names}
    poses = {n: _board_poses(detections[n], *intr[n], obj, min_corners) for n in names}
    pairs, rel = {}, {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(poses[a]) & set(poses[b]))
            if not shared:
                continue
            Ts = np.stack([poses[a][f] @ _inv(poses[b][f]) for f in shared])  # camera b -> camera a
            pairs[(a, b)] = len(shared)
            rel[(a, b)] = _to_T(_rot_mean(Ts[:, :3, :3]), np.median(Ts[:, :3, 3], axis=0))
    counts = {n: sum(v for k, v in pairs.items() if n in k) for n in names}
    if reference is None:
        reference = max(names, key=lambda n: counts[n])
    elif reference not in names:
        raise BoardCalibrationError(f"reference camera {reference!r} not among {names}")
    tree = _spanning_tree(names, pairs, reference)
    reached = {reference} | {c for _, c in tree}
    if len(reached) < len(names):
        lonely = [n for n in names if n not in reached]
        seen = {n: len(poses[n]) for n in names}
        raise BoardCalibrationError(
            f"camera(s) {', '.join(lonely)} never saw the board in the same frame as the cameras chained to "
            f"{reference}; board views per camera: {seen}; shared frames per pair: "
            f"{ {f'{a}-{b}': n for (a, b), n in pairs.items()} }"
        )
    cam_T = {reference: np.eye(4)}  # reference -> camera
    for parent, child in tree:
        T_pc = rel[(parent, child)] if (parent, child) in rel else _inv(rel[(child, parent)])  # child -> parent
        cam_T[child] = _inv(T_pc) @ cam_T[parent]
    views = {}
    for n in names:
        for f in poses[n]:
            views[f] = views.get(f, 0) + 1
    kept = set(sorted(views, key=lambda f: (-views[f], f))[:max_frames])
    # Initial board poses in the reference frame, from the first camera that saw each (any would do).
    board_T: dict[int, np.ndarray] = {}
    obs = []
    for n in names:
        for f, T in poses[n].items():
            if f in kept:
                board_T.setdefault(f, _inv(cam_T[n]) @ T)
                obs.append((n, f, detections[n][f]))
    cam_T, board_T = _bundle_adjust(names, cam_T, board_T, obs, intr, obj, reference)
    rms, used = {}, {}
    for n in names:
        errs = []
        for f in sorted(set(poses[n]) & kept):
            T = cam_T[n] @ board_T[f]
            d = detections[n][f]
            proj = cv2.projectPoints(obj[d.ids], cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], *intr[n])[0].reshape(-1, 2)
            errs.append(np.sum((proj - d.corners) ** 2, -1))
        rms[n] = float(np.sqrt(np.mean(np.concatenate(errs)))) if errs else float("nan")
        used[n] = sorted(set(poses[n]) & kept)
    world_T = np.eye(4)  # world -> reference
    if world == "board":
        if origin_frame is None:
            origin_frame = max(board_T, key=lambda f: (sum(f in poses[n] for n in names), -f))
        if origin_frame not in board_T:
            raise BoardCalibrationError(f"origin frame {origin_frame} has no board pose; frames with one: {sorted(board_T)}")
        world_T = board_T[origin_frame] @ np.diag([1.0, -1.0, -1.0, 1.0])  # z out of the board's face
    params = []
    for n in names:
        T = cam_T[n] @ world_T  # world -> camera
        size = np.asarray(intrinsics[n]["size"], dtype=np.float64)
        params.append({"name": n, "size": size, "K": intr[n][0], "dist": intr[n][1], "R": T[:3, :3], "t": T[:3, 3]})
    for n, r in rms.items():
        if r > 1.0:
            log.warning("camera %s: RMS reprojection error %.2f px after bundle adjustment is high", n, r)
    return ExtrinsicsResult(params, rms, used, pairs, tree, reference, world)


# ---------------------------------------------------------------------------------------------- whole jobs
def _detect_sources(directory: str | Path, board: Board, every: int, progress: bool):
    sources = camera_frame_sources(directory)
    out = {}
    for name, src in sources.items():
        out[name] = detect_in_source(src, board, every, progress)
    return out


def intrinsics_from_folder(
    directory: str | Path, board: Board, *, every: int = 1, max_views: int = 40, fix_k3: bool = False,
    progress: bool = False,
) -> list[IntrinsicsResult]:
    """Intrinsics of every camera in ``directory`` (see :func:`camera_frame_sources`), one after the other."""
    results = []
    for name, (dets, size) in _detect_sources(directory, board, every, progress).items():
        results.append(calibrate_intrinsics(dets, board, size, name=name, max_views=max_views, fix_k3=fix_k3))
    return results


def extrinsics_from_folder(
    directory: str | Path, intrinsics: str | Path, board: Board, *, every: int = 1, reference: str | None = None,
    world: str = "camera", origin_frame: int | None = None, progress: bool = False,
) -> ExtrinsicsResult:
    """Extrinsics of the cameras in ``directory`` (synchronised videos / image folders named by camera), with
    the intrinsics read from a calibration file (any format :func:`mvpose.geometry.calibration.read_calibration`
    reads; its poses are ignored)."""
    from mvpose.geometry.calibration import read_calibration

    rigs = read_calibration(intrinsics)
    if len(rigs) != 1:
        raise BoardCalibrationError(f"{intrinsics}: holds {len(rigs)} rigs {sorted(rigs)}; give a file with one")
    intr = {p["name"]: p for p in next(iter(rigs.values()))}
    found = _detect_sources(directory, board, every, progress)
    unknown = [n for n in found if n not in intr]
    if unknown:
        raise BoardCalibrationError(
            f"{directory}: camera(s) {', '.join(unknown)} have no intrinsics in {intrinsics} (cameras there: {', '.join(intr)})"
        )
    for name, (_, size) in found.items():
        if tuple(np.asarray(intr[name]["size"]).round().astype(int)) != tuple(size):
            raise BoardCalibrationError(
                f"camera {name}: images are {size[0]}x{size[1]} but the intrinsics in {intrinsics} are for "
                f"{intr[name]['size'][0]:.0f}x{intr[name]['size'][1]:.0f}"
            )
    dets = {n: d for n, (d, _) in found.items()}
    return calibrate_extrinsics(dets, intr, board, reference=reference, world=world, origin_frame=origin_frame)


def format_intrinsics(results: Sequence[IntrinsicsResult]) -> str:
    """One block per camera: views, RMS, K, distortion, coverage, warnings."""
    lines = []
    for r in results:
        K = r.K
        lines += [
            f"camera {r.name}: {len(r.frames)} views, image {r.image_size[0]}x{r.image_size[1]}",
            f"  RMS reprojection error {r.rms:.3f} px (worst view {r.per_view_rms.max():.3f} px)",
            f"  fx {K[0, 0]:.2f}  fy {K[1, 1]:.2f}  cx {K[0, 2]:.2f}  cy {K[1, 2]:.2f}",
            f"  dist k1 k2 p1 p2 k3 = {' '.join(f'{v:.5f}' for v in r.dist)}",
            f"  board coverage {100 * r.coverage:.0f}% of the image",
        ] + [f"  WARNING: {w}" for w in r.warnings]
    return "\n".join(lines)


def format_extrinsics(result: ExtrinsicsResult) -> str:
    """RMS per camera, the pairs that saw the board together and the chain used."""
    lines = [f"world: {'camera ' + result.reference if result.world == 'camera' else 'board'}; "
             f"chain: {', '.join(f'{a}->{b}' for a, b in result.tree)}"]
    lines += [f"  {a}-{b}: {n} shared frames" for (a, b), n in result.pairs.items()]
    lines += [f"camera {n}: RMS {r:.3f} px over {len(result.frames[n])} board views" for n, r in result.rms.items()]
    return "\n".join(lines)
