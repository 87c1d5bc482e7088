"""One camera model for every dataset and calibration format.

Convention (OpenCV's pinhole model, as ``cv2.projectPoints``: OpenCV calib3d documentation, "Camera
Calibration and 3D Reconstruction"; units in ``mvpose/calibration/README.md``): world-to-camera
``x_cam = R X + t`` with ``t = -R C``; pixel ``u = K @ [distort(x_cam[:2] / x_cam[2]), 1]``; OpenCV
distortion order ``(k1, k2, p1, p2, k3)``.

``K`` is kept as a general 3x3 matrix (not only ``fx, fy, cx, cy``): an affine crop with rotation or a
horizontal flip turns ``K`` into ``A @ K``, which has off-diagonal terms, and the projection stays exact
because the distortion acts on normalised coordinates before ``K``. Kornia's ``distort_points`` /
``undistort_points`` read only ``fx, fy, cx, cy`` from their ``K``, so we call them with an identity
``K`` on normalised coordinates and apply the general ``K`` ourselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
import torch
from kornia.geometry.calibration import distort_points, undistort_points

__all__ = ["Cameras", "affine_crop_intrinsics", "normalized_to_pixels", "pixels_to_normalized"]

# Fixed-point iterations for undistortion. Kornia's default (5) leaves ~1e-3 px error on strong
# lenses; 20 reaches float64 round-off on every rig we read (Human3.6M, GoPro-like k1 ~ -0.3).
UNDISTORT_ITERS = 20
# Kornia's iteration has no convergence test (kornia#4285), so we run a short pass first and
# check it by distorting back; only when that misses the tolerance do we pay for the long pass.
# Mild lenses (Human3.6M) converge in the short pass: undistortion is ~3x cheaper there.
UNDISTORT_FAST_ITERS = 6
UNDISTORT_TOL = {torch.float64: 1e-11, torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def _as_tensor(x, dtype=None, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float64, device=device)


def pixels_to_normalized(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Map pixels through ``K^-1`` onto the ``z = 1`` plane (no distortion handling).

    Args:
        points: (..., N, 2) pixels.
        K: (..., 3, 3) general intrinsics, broadcastable against ``points`` leading dims.

    Returns:
        (..., N, 2) normalised image coordinates.
    """
    Kinv = torch.linalg.inv(K)
    homo = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    out = homo @ Kinv.transpose(-1, -2)
    return out[..., :2] / out[..., 2:3]


def normalized_to_pixels(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Map normalised ``z = 1`` coordinates through a general ``K`` to pixels.

    Args:
        points: (..., N, 2) normalised coordinates.
        K: (..., 3, 3) intrinsics.

    Returns:
        (..., N, 2) pixels.
    """
    homo = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    out = homo @ K.transpose(-1, -2)
    return out[..., :2] / out[..., 2:3]


def _undistort_opencv(xy: torch.Tensor, dist: torch.Tensor, num_iters: int) -> torch.Tensor:
    """Kornia's fixed-point undistortion, ``num_iters`` iterations, run by ``cv2.undistortPoints``.

    ``cv2.undistortPoints`` with an identity camera matrix and a count-only criterion runs the same
    iteration as ``kornia.geometry.calibration.undistort_points`` (both follow OpenCV's
    ``cvUndistortPointsInternal``); the results agree to float64 round-off (``tests/test_camera.py``),
    at a fraction of the cost of some 20 small tensor operations per iteration. Points are grouped
    by distinct distortion vector, so a batch of frames of one rig is a handful of calls.

    Args:
        xy: (*S, N, 2) float64 CPU distorted normalised coordinates. dist: (*S, 5) float64.
        num_iters: iterations.

    Returns:
        (*S, N, 2) float64 undistorted normalised coordinates.
    """
    n = xy.shape[-2]
    points = xy.detach().reshape(-1, n, 2).numpy()
    coeffs = dist.detach().reshape(-1, 5)
    if num_iters <= 0 or points.size == 0 or not bool((coeffs != 0).any()):
        return xy.detach().clone()
    out = np.empty_like(points)
    unique, inverse = torch.unique(coeffs, dim=0, return_inverse=True)
    eye = np.eye(3)
    criteria = (cv2.TERM_CRITERIA_COUNT, int(num_iters), 0.0)
    for u in range(unique.shape[0]):
        rows = (inverse == u).nonzero().flatten().numpy()
        src = np.ascontiguousarray(points[rows].reshape(-1, 1, 2))
        und = cv2.undistortPoints(src, eye, unique[u].numpy(), criteria=criteria)
        out[rows] = und.reshape(len(rows), n, 2)
    return torch.from_numpy(out).reshape(xy.shape)


def _identity_like(K: torch.Tensor, lead: torch.Size) -> torch.Tensor:
    return torch.eye(3, dtype=K.dtype, device=K.device).expand(*lead, 3, 3)


def affine_crop_intrinsics(K: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Intrinsics of an image warped by a 2x3 affine map (crop, resize, rotation, flip).

    A pixel ``u`` of the original image lands at ``A @ [u, 1]`` in the warped image, so the warped
    camera is ``[A; 0 0 1] @ K`` with the same ``R``, ``t`` and distortion, exactly.

    Args:
        K: (..., 3, 3) intrinsics of the original image.
        affine: (..., 2, 3) map from original to warped pixels (as given to ``cv2.warpAffine``).

    Returns:
        (..., 3, 3) intrinsics of the warped image.
    """
    affine = affine.to(K)
    bottom = torch.zeros_like(affine[..., :1, :])
    bottom[..., 0, 2] = 1.0
    A3 = torch.cat([affine, bottom], dim=-2)
    return A3 @ K


@dataclass
class Cameras:
    """A batch of pinhole cameras with OpenCV distortion, stored as tensors.

    The batch shape ``S`` is free: ``()`` for one camera, ``(V,)`` for a rig, ``(B, V)`` for per-sample
    rigs (crop cameras, pan-tilt-zoom cameras). Points passed to the methods carry the batch shape
    followed by a point dimension: ``(*S, N, 3)`` / ``(*S, N, 2)``; extra leading dims broadcast.

    Attributes:
        K: (*S, 3, 3) intrinsics (general matrix, see module doc).
        R: (*S, 3, 3) world-to-camera rotation.
        t: (*S, 3) world-to-camera translation (``t = -R C``), millimetres.
        dist: (*S, 5) OpenCV distortion ``(k1, k2, p1, p2, k3)``.
        image_size: (*S, 2) image ``(width, height)`` in pixels.
        names: camera names of the last batch dim (empty when unnamed).
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    dist: torch.Tensor
    image_size: torch.Tensor
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        S = self.K.shape[:-2]
        if self.K.shape[-2:] != (3, 3) or self.R.shape != S + (3, 3):
            raise ValueError(f"Cameras: K {tuple(self.K.shape)} and R {tuple(self.R.shape)} must both be (*S, 3, 3)")
        if self.t.shape != S + (3,):
            raise ValueError(f"Cameras: t must be {tuple(S) + (3,)}, got {tuple(self.t.shape)}")
        if self.dist.shape != S + (5,):
            raise ValueError(f"Cameras: dist must be {tuple(S) + (5,)} (k1 k2 p1 p2 k3), got {tuple(self.dist.shape)}")
        if self.image_size.shape != S + (2,):
            raise ValueError(f"Cameras: image_size must be {tuple(S) + (2,)}, got {tuple(self.image_size.shape)}")
        expected = 1 if len(S) == 0 else S[-1]
        if self.names and len(self.names) != expected:
            raise ValueError(f"Cameras: {len(self.names)} names for batch shape {tuple(S)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(
        cls,
        K,
        R,
        t,
        dist=None,
        image_size=None,
        names: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> "Cameras":
        """Build from array-likes; ``dist`` defaults to zeros, ``image_size`` to ``2 * (cx, cy)``.

        ``dist`` may have 4 or 5 entries (k3 = 0 when missing).
        """
        K = _as_tensor(K, dtype, device)
        R = _as_tensor(R, dtype, device)
        t = _as_tensor(t, dtype, device).reshape(*R.shape[:-2], 3)
        S = K.shape[:-2]
        if dist is None:
            dist = torch.zeros(*S, 5, dtype=dtype, device=device)
        dist = _as_tensor(dist, dtype, device)
        if dist.shape[-1] == 4:
            dist = torch.cat([dist, torch.zeros_like(dist[..., :1])], dim=-1)
        if image_size is None:
            image_size = 2.0 * K[..., :2, 2]
        image_size = _as_tensor(image_size, dtype, device).expand(*S, 2).clone()
        return cls(K, R, t, dist.reshape(*S, 5), image_size, list(names or []))

    @classmethod
    def stack(cls, cameras: Sequence["Cameras"]) -> "Cameras":
        """Stack single cameras (batch shape ``()``) into a rig ``(V,)``, or rigs into ``(B, V)``."""
        st = lambda attr: torch.stack([getattr(c, attr) for c in cameras])  # noqa: E731
        if all(c.K.ndim == 2 for c in cameras):
            names = [c.names[0] if c.names else "" for c in cameras]
            names = names if all(names) else []
        else:
            names = list(cameras[0].names) if all(c.names == cameras[0].names for c in cameras) else []
        return cls(st("K"), st("R"), st("t"), st("dist"), st("image_size"), names)

    # ------------------------------------------------------------------ tensor plumbing
    @property
    def batch_shape(self) -> torch.Size:
        return self.K.shape[:-2]

    @property
    def dtype(self) -> torch.dtype:
        return self.K.dtype

    @property
    def device(self) -> torch.device:
        return self.K.device

    def __len__(self) -> int:
        return self.batch_shape[0] if self.batch_shape else 1

    def to(self, device=None, dtype=None) -> "Cameras":
        f = lambda x: x.to(device=device, dtype=dtype)  # noqa: E731
        return Cameras(f(self.K), f(self.R), f(self.t), f(self.dist), f(self.image_size), list(self.names))

    def __getitem__(self, idx) -> "Cameras":
        """Index the batch dims like a tensor (``None`` and ``...`` included; matrix dims are never touched).

        A name or a list of names selects cameras on the *last* batch dim (the rig dim), so
        ``rigs["cam1"]`` works for batch shapes ``(V,)`` and ``(B, V)`` alike. Names follow the
        selected cameras as long as the last dim of the result is still the rig dim.
        """
        S = self.batch_shape
        if not S:
            raise IndexError("Cameras: a single camera (batch shape ()) cannot be indexed")
        is_names = lambda p: isinstance(p, str) or (  # noqa: E731
            isinstance(p, list) and p and all(isinstance(i, str) for i in p)
        )
        if isinstance(idx, tuple) and idx and all(isinstance(i, str) for i in idx):
            idx = list(idx)
        parts = idx if isinstance(idx, tuple) else (idx,)
        if parts and is_names(parts[-1]):  # names address the rig (last batch) dim
            last = parts[-1]
            sel = self.index(last) if isinstance(last, str) else [self.index(n) for n in last]
            parts = parts[:-1] + (() if Ellipsis in parts[:-1] else (Ellipsis,)) + (sel,)
        if any(is_names(p) for p in parts):
            raise IndexError(f"Cameras: camera names address the last batch dim only, got index {idx!r}")
        parts = tuple(torch.as_tensor(p, dtype=torch.long) if isinstance(p, list) else p for p in parts)
        is_mask = lambda p: isinstance(p, torch.Tensor) and p.dtype == torch.bool  # noqa: E731
        used = sum(p.ndim if is_mask(p) else 1 for p in parts if p is not None and p is not Ellipsis)
        if used > len(S):
            raise IndexError(f"Cameras: index {idx!r} addresses {used} dims, the batch shape {tuple(S)} has {len(S)}")
        # explicit slices over the matrix dims keep a "..." inside `parts` on the batch dims
        tensors = (self.K, self.R, self.t, self.dist, self.image_size)
        out = Cameras(*(x[parts + (slice(None),) * (x.ndim - len(S))] for x in tensors), [])
        out.names = self._names_after(parts)
        return out

    def _names_after(self, parts: tuple) -> list[str]:
        """Names of the cameras on the last dim of ``self[parts]``, or [] when that dim is not the rig."""
        S = self.batch_shape
        if not self.names:
            return []
        flat = torch.arange(S.numel()).reshape(S)[parts]
        cam, sample = flat % S[-1], flat // S[-1]
        if flat.ndim == 0:
            return [self.names[int(cam)]]
        cam_rows, sample_rows = cam.reshape(-1, cam.shape[-1]), sample.reshape(-1, sample.shape[-1])
        if cam_rows.numel() and (cam_rows == cam_rows[:1]).all() and (sample_rows == sample_rows[:, :1]).all():
            return [self.names[i] for i in cam_rows[0].tolist()]
        return []

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"camera {name!r} not in rig; cameras are {self.names}") from None

    def with_intrinsics(self, K: torch.Tensor, image_size: torch.Tensor) -> "Cameras":
        """Same extrinsics and distortion, new ``K`` / image size (crops). Broadcasts the batch shape."""
        S = torch.broadcast_shapes(K.shape[:-2], self.batch_shape)
        return Cameras(
            K.to(self.K).expand(*S, 3, 3),
            self.R.expand(*S, 3, 3),
            self.t.expand(*S, 3),
            self.dist.expand(*S, 5),
            image_size.to(self.K).expand(*S, 2),
            list(self.names) if tuple(S[-1:]) == tuple(self.batch_shape[-1:]) else [],
        )

    # ------------------------------------------------------------------ geometry
    @property
    def centers(self) -> torch.Tensor:
        """(*S, 3) camera centres in world coordinates, ``C = -R^T t``."""
        return -(self.R.transpose(-1, -2) @ self.t.unsqueeze(-1)).squeeze(-1)

    @property
    def projection_matrices(self) -> torch.Tensor:
        """(*S, 3, 4) ``P = K [R | t]`` (valid for undistorted pixels)."""
        return self.K @ torch.cat([self.R, self.t.unsqueeze(-1)], dim=-1)

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """(*S, N, 3) world points -> (*S, N, 3) camera-frame points."""
        return points @ self.R.transpose(-1, -2) + self.t.unsqueeze(-2)

    def camera_to_world(self, points: torch.Tensor) -> torch.Tensor:
        """(*S, N, 3) camera-frame points -> (*S, N, 3) world points."""
        return (points - self.t.unsqueeze(-2)) @ self.R

    def distort_normalized(self, xy: torch.Tensor) -> torch.Tensor:
        """Apply the lens distortion to normalised coordinates ``(*S, N, 2)``."""
        lead = xy.shape[:-2]
        return distort_points(xy, _identity_like(xy, lead), self.dist.to(xy).expand(*lead, 5))

    def undistort_normalized(self, xy: torch.Tensor, num_iters: int | None = None) -> torch.Tensor:
        """Invert the lens distortion on normalised coordinates ``(*S, N, 2)`` (fixed-point iteration).

        Args:
            xy: (*S, N, 2) distorted normalised coordinates.
            num_iters: fixed iteration count; None runs a short pass, verified by distorting back,
                and the full :data:`UNDISTORT_ITERS` only when the short pass has not converged.
        """
        lead = xy.shape[:-2]
        eye = _identity_like(xy, lead)
        dist = self.dist.to(xy).expand(*lead, 5)
        if xy.device.type == "cpu" and xy.dtype == torch.float64 and not (torch.is_grad_enabled() and xy.requires_grad):
            return _undistort_opencv(xy, dist, UNDISTORT_ITERS if num_iters is None else num_iters)
        if num_iters is not None:
            return undistort_points(xy, eye, dist, num_iters=num_iters)
        if not bool((dist != 0).any()):
            return xy
        fast = undistort_points(xy, eye, dist, num_iters=UNDISTORT_FAST_ITERS)
        residual = (distort_points(fast, eye, dist) - xy).abs()
        if bool(((residual <= UNDISTORT_TOL.get(xy.dtype, 1e-6)) | residual.isnan()).all()):
            return fast
        return undistort_points(xy, eye, dist, num_iters=UNDISTORT_ITERS)

    def project(self, points: torch.Tensor, distort: bool = True) -> torch.Tensor:
        """Project world points to pixels.

        Args:
            points: (*S, N, 3) world points (extra leading dims broadcast against ``S``).
            distort: apply the lens distortion (False gives undistorted pixels, as used by DLT).

        Returns:
            (*S, N, 2) pixels. Points behind the camera project like OpenCV does (no flag); use
            :meth:`depth` to tell them apart.
        """
        cam = self.world_to_camera(points.to(self.dtype))
        xy = cam[..., :2] / cam[..., 2:3]
        if distort:
            xy = self.distort_normalized(xy)
        return normalized_to_pixels(xy, self.K)

    def depth(self, points: torch.Tensor) -> torch.Tensor:
        """(*S, N, 3) world points -> (*S, N) camera-frame z (negative behind the camera)."""
        return self.world_to_camera(points.to(self.dtype))[..., 2]

    def undistort_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Remove the lens distortion from pixel points, keeping ``K``.

        Args:
            pixels: (*S, N, 2) distorted pixels.

        Returns:
            (*S, N, 2) the pixels an ideal pinhole camera with the same ``K`` would see.
        """
        xy = pixels_to_normalized(pixels.to(self.dtype), self.K)
        return normalized_to_pixels(self.undistort_normalized(xy), self.K)

    def pixel_rays(self, pixels: torch.Tensor, undistort: bool = True) -> torch.Tensor:
        """Unit viewing rays through pixels, in world coordinates.

        Args:
            pixels: (*S, N, 2) pixels.
            undistort: remove the lens distortion first.

        Returns:
            (*S, N, 3) unit direction vectors (from the camera centre, world frame).
        """
        xy = pixels_to_normalized(pixels.to(self.dtype), self.K)
        if undistort:
            xy = self.undistort_normalized(xy)
        ray_cam = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)
        ray_world = ray_cam @ self.R  # R^T applied to row vectors
        return torch.nn.functional.normalize(ray_world, dim=-1)

    def unproject(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Lift pixels with camera-frame depth ``z`` to world points.

        Args:
            pixels: (*S, N, 2) distorted pixels.
            depth: (*S, N) camera-frame z.

        Returns:
            (*S, N, 3) world points.
        """
        xy = self.undistort_normalized(pixels_to_normalized(pixels.to(self.dtype), self.K))
        cam = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1) * depth.to(self.dtype).unsqueeze(-1)
        return self.camera_to_world(cam)

    def crop(self, affine: torch.Tensor, output_size: tuple[int, int] | torch.Tensor) -> "Cameras":
        """Cameras of images warped by ``affine`` (``(*S', 2, 3)``, original -> crop pixels).

        Args:
            affine: (..., 2, 3) affine maps, broadcast against the batch shape.
            output_size: crop ``(width, height)``.
        """
        affine = torch.as_tensor(affine).to(self.K)
        K = affine_crop_intrinsics(self.K, affine)
        size = torch.as_tensor(output_size).to(self.K)
        return self.with_intrinsics(K, size)

    def __repr__(self) -> str:
        names = f", names={self.names}" if self.names else ""
        return f"Cameras(batch_shape={tuple(self.batch_shape)}, dtype={self.dtype}{names})"
