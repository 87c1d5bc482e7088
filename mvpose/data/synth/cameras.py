"""Numpy pinhole cameras for the renderer: the real Human3.6M rig and pan-tilt-zoom ski cameras.

The renderer runs inside worker processes, so it works in numpy rather than through the torch
:class:`mvpose.geometry.Cameras` (no torch thread pools across ``fork``). The model is the same
(OpenCV's pinhole model, as ``cv2.projectPoints``): ``x_cam = R X + t``, pixel
``u = K [distort(x/z, y/z), 1]``, OpenCV distortion ``(k1, k2, p1, p2, k3)``, pixel centres at integer
coordinates; the tests check that both agree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvpose.resources import h36m_calibration_path

__all__ = [
    "View",
    "distort",
    "undistort",
    "h36m_rig",
    "capture_center",
    "look_at",
    "ptz_positions",
    "ptz_views",
]

UNDISTORT_ITERS = 20


def distort(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """OpenCV lens distortion of normalised coordinates ``(..., 2)``."""
    k1, k2, p1, p2, k3 = dist
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def undistort(xy: np.ndarray, dist: np.ndarray, iters: int = UNDISTORT_ITERS) -> np.ndarray:
    """Invert :func:`distort` by fixed-point iteration (``(..., 2)`` normalised coordinates)."""
    k1, k2, p1, p2, k3 = dist
    xd, yd = xy[..., 0], xy[..., 1]
    x, y = xd.copy(), yd.copy()
    for _ in range(iters):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        x = (xd - dx) / radial
        y = (yd - dy) / radial
    return np.stack([x, y], axis=-1)


@dataclass
class View:
    """One camera at one instant, rendering a ``width x height`` image.

    Attributes:
        K: (3, 3) intrinsics of the rendered image.
        R: (3, 3) world-to-camera rotation.
        t: (3,) world-to-camera translation (``t = -R C``).
        dist: (5,) OpenCV distortion ``(k1, k2, p1, p2, k3)``.
        width, height: image size in pixels.
        name: camera name.
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    dist: np.ndarray
    width: int
    height: int
    name: str = ""
    _rays: np.ndarray | None = field(default=None, repr=False, compare=False)
    _world_rays: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        return -self.R.T @ self.t

    @property
    def distorted(self) -> bool:
        return bool(np.any(self.dist != 0.0))

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 3) camera-frame points."""
        return points @ self.R.T + self.t

    def project_camera(self, cam: np.ndarray) -> np.ndarray:
        """(..., 3) camera-frame points -> (..., 2) pixels (with distortion)."""
        xy = cam[..., :2] / cam[..., 2:3]
        if self.distorted:
            xy = distort(xy, self.dist)
        return xy @ self.K[:2, :2].T + self.K[:2, 2]

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 2) pixels (with distortion)."""
        return self.project_camera(self.to_camera(points))

    def rays(self) -> np.ndarray:
        """(H, W, 3) float32 camera-frame viewing rays ``(x, y, 1)`` of every pixel centre.

        A ray point ``s * ray`` has camera depth ``z = s``, so ray parameters are depths.
        Cached: the renderer slices it per primitive.
        """
        if self._rays is None:
            u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
            pix = np.stack([u, v], axis=-1)
            xy = (pix - self.K[:2, 2]) @ np.linalg.inv(self.K[:2, :2]).T
            if self.distorted:
                xy = undistort(xy, self.dist)
            self._rays = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1).astype(np.float32)
        return self._rays

    def world_rays(self) -> np.ndarray:
        """(H, W, 3) float32 world-frame ray directions (not normalised, camera z = 1); cached."""
        if self._world_rays is None:
            self._world_rays = self.rays() @ self.R.astype(np.float32)
        return self._world_rays


@functools.lru_cache(maxsize=4)
def _read_rigs(path: str) -> dict:
    from mvpose.geometry.calibration import read_calibration

    return read_calibration(path)


def h36m_rig(subject: int, image_size: int, calibration: str | Path | None = None) -> list[View]:
    """The 4 real Human3.6M cameras of ``subject`` with intrinsics scaled to ``image_size``.

    Each full frame (1000 x 1000 or 1000 x 1002) maps onto ``image_size x image_size``:
    ``K' = diag(S / W, S / H, 1) K``; extrinsics and distortion are unchanged. Cached per process
    (the views keep their pixel ray grids), so treat the returned views as read-only.
    """
    return _h36m_rig(int(subject), int(image_size), None if calibration is None else str(calibration))


@functools.lru_cache(maxsize=16)
def _h36m_rig(subject: int, image_size: int, calibration: str | None) -> list[View]:
    path = Path(calibration) if calibration is not None else h36m_calibration_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Human3.6M calibration file not found (pass calibration=PATH)")
    rigs = _read_rigs(str(path))
    rig = f"S{subject}"
    if rig not in rigs:
        raise KeyError(f"{path}: no rig {rig!r}; rigs are {sorted(rigs)}")
    views = []
    for p in rigs[rig]:
        w, h = (float(v) for v in p["size"])
        scale = np.diag([image_size / w, image_size / h, 1.0])
        views.append(
            View(
                K=scale @ p["K"],
                R=np.asarray(p["R"], dtype=np.float64),
                t=np.asarray(p["t"], dtype=np.float64),
                dist=np.asarray(p["dist"], dtype=np.float64),
                width=image_size,
                height=image_size,
                name=p["name"],
            )
        )
    return views


def capture_center(views: list[View]) -> np.ndarray:
    """(3,) point on the floor ``z = 0`` below the least-squares meeting point of the optical axes."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for v in views:
        d = v.R[2]
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ v.center
    x = np.linalg.solve(A, b)
    return np.array([x[0], x[1], 0.0])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """World-to-camera rotations ``(..., 3, 3)`` of cameras at ``eye`` looking at ``target`` (no roll).

    Rows are the camera axes in world coordinates: x right, y down, z forward (OpenCV).
    """
    z = target - eye
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=-2)


def ptz_positions(rng: np.random.Generator, x_range: tuple[float, float], slope_z, course_y, count: int = 6) -> np.ndarray:
    """(count, 3) positions of pan-tilt-zoom cameras beside a ski course (mm).

    They alternate sides, spread along and beyond the part of the course that is skied, and stand
    1.5-8 m above the snow, 10-35 m from the course line (inside the safety nets).
    """
    x0, x1 = x_range
    xs = np.linspace(x0 - 15000, x1 + 15000, count) + rng.uniform(-5000, 5000, count)
    sides = np.where(np.arange(count) % 2 == 0, -1.0, 1.0) * rng.choice([-1.0, 1.0])
    ys = course_y(xs) + sides * rng.uniform(10000, 35000, count)
    zs = slope_z(xs) + rng.uniform(1500, 8000, count)
    return np.stack([xs, ys, zs], axis=-1)


def ptz_views(
    rng: np.random.Generator, positions: np.ndarray, targets: np.ndarray, body_height: float, size: int = 256
) -> list[list[View]]:
    """Per-frame views of PTZ cameras that follow ``targets (T, 3)``.

    Pan/tilt aims each camera at the target (with a small, smooth tracking error), zoom keeps the
    person 45-75 % of the image tall; the principal point jitters a few pixels as in cropped
    footage. Returns ``views[cam][frame]``.
    """
    T = targets.shape[0]
    out = []
    for c, pos in enumerate(positions):
        err = rng.normal(0.0, 0.06 * body_height, size=(1, 3)) + rng.normal(0.0, 0.03 * body_height, size=(T, 3))
        R = look_at(pos, targets + err)
        dist = np.linalg.norm(targets - pos, axis=-1)
        frac = rng.uniform(0.45, 0.75) * np.exp(rng.normal(0.0, 0.05, size=T))
        f = frac * size * dist / body_height
        pp = size / 2.0 + rng.normal(0.0, 3.0, size=(T, 2))
        views = []
        for k in range(T):
            K = np.array([[f[k], 0.0, pp[k, 0]], [0.0, f[k], pp[k, 1]], [0.0, 0.0, 1.0]])
            views.append(View(K=K, R=R[k], t=-R[k] @ pos, dist=np.zeros(5), width=size, height=size, name=f"cam_{c:02d}"))
        out.append(views)
    return out
