"""What every calibration format shares: the camera parameter convention, input checks, units,
the ``Cameras`` conversion and the TOML parser (``tomllib``, ``tomli`` on Python 3.10).

One camera's params are plain numpy in mvpose's convention (OpenCV's pinhole model, as
``cv2.projectPoints``; ``mvpose/calibration/README.md``)::

    {"name": str, "size": (2,) [width, height] px, "K": (3, 3), "dist": (5,) k1 k2 p1 p2 k3,
     "R": (3, 3) world-to-camera, "t": (3,) millimetres, x_cam = R X + t}
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

import numpy as np
import torch

from mvpose.geometry.camera import Cameras

__all__ = [
    "CalibrationError", "UNITS_MM", "RECOGNISED", "RIG_SPREAD_MM", "RIG_SPREAD_TYPICAL_MM", "tomllib",
    "field_array", "cameras_from_params", "params_from_cameras", "rig_units_hint",
]

RECOGNISED = (
    "recognised calibration formats:\n"
    '  mvpose    .json or .toml with format = "mvpose-calibration"\n'
    "  pose2sim  .toml with one table per camera (name, size, matrix, distortions, rotation, translation)\n"
    "  opencv    .yml / .yaml / .xml written by cv2.FileStorage (camera_matrix, distortion_coefficients, ...)\n"
    "  qualisys  .qca.txt calibration export of Qualisys Track Manager"
)
# Length units a file may declare, in millimetres.
UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}


class CalibrationError(ValueError):
    """A calibration file could not be read or written; the message names the file and the field."""


def field_array(obj: Mapping[str, Any], key: str, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if key not in obj:
        raise CalibrationError(f"{where}: missing field '{key}' (have {sorted(obj)})")
    try:
        arr = np.asarray(obj[key], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CalibrationError(f"{where}: field '{key}' is not numeric: {obj[key]!r}") from err
    if shape is not None and arr.size == int(np.prod(shape)) and arr.shape != shape:
        arr = arr.reshape(shape)  # tolerate (3,1) vs (3,) layouts
    if shape is not None and arr.shape != shape:
        raise CalibrationError(f"{where}: field '{key}' must have shape {shape}, found {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{where}: field '{key}' contains NaN or infinity")
    return arr


def _check_rotation(R: np.ndarray, where: str, field: str = "R") -> None:
    err = np.abs(R @ R.T - np.eye(3)).max()
    if err > 1e-4 or np.linalg.det(R) < 0:
        raise CalibrationError(
            f"{where}: '{field}' is not a rotation matrix (|R R^T - I| = {err:.2e}, det = {np.linalg.det(R):.3f})"
        )


def _dist5(dist: np.ndarray, where: str, field: str) -> np.ndarray:
    """OpenCV coefficients of any length -> (k1, k2, p1, p2, k3); refuses terms mvpose cannot model."""
    dist = dist.reshape(-1)
    if dist.size not in (4, 5, 8, 12, 14):
        raise CalibrationError(f"{where}: '{field}' must hold 4, 5, 8, 12 or 14 OpenCV coefficients, found {dist.size}")
    if dist.size > 5 and np.any(dist[5:] != 0):
        raise CalibrationError(
            f"{where}: '{field}' has non-zero terms beyond k3 ({dist[5:].tolist()}); "
            "mvpose models only k1 k2 p1 p2 k3"
        )
    return np.pad(dist[:5], (0, max(0, 5 - dist.size)))


def checked_camera(
    where: str, name: str, K: np.ndarray, dist: np.ndarray, R: np.ndarray, t: np.ndarray, size: np.ndarray,
    fields: Mapping[str, str] | None = None, general_K: bool = False,
) -> dict[str, Any]:
    """Checks every reader shares; ``fields`` maps K/dist/R/t/size to the file's own field names.

    ``general_K`` admits any invertible K (crops rotate or flip it); otherwise fx, fy must be positive.
    """
    f = {"K": "K", "dist": "dist", "R": "R", "t": "t", "size": "size", **(fields or {})}
    if not name:
        raise CalibrationError(f"{where}: empty camera name")
    if general_K and abs(np.linalg.det(K)) < 1e-12:
        raise CalibrationError(f"{where}: '{f['K']}' is singular: {K.tolist()}")
    if not general_K and (K[0, 0] <= 0 or K[1, 1] <= 0):
        raise CalibrationError(f"{where}: '{f['K']}' must have positive focal lengths, found fx={K[0, 0]}, fy={K[1, 1]}")
    if np.abs(K[2] - [0.0, 0.0, 1.0]).max() > 1e-9:
        raise CalibrationError(f"{where}: '{f['K']}' must have bottom row [0, 0, 1], found {K[2].tolist()}")
    _check_rotation(R, where, f["R"])
    if size.shape != (2,) or np.any(size <= 0):
        raise CalibrationError(f"{where}: '{f['size']}' must be positive [width, height], found {size.tolist()}")
    return {"name": name, "K": K, "dist": _dist5(dist, where, f["dist"]), "R": R, "t": t, "size": size}


def pinhole_only(p: Mapping[str, Any], fmt: str) -> None:
    """OpenCV-style formats store fx fy cx cy only: refuse a general K (rotated or flipped crop)."""
    K = np.asarray(p["K"])
    if abs(K[0, 1]) > 1e-9 * abs(K[0, 0]) or abs(K[1, 0]) > 1e-9 * abs(K[1, 1]) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CalibrationError(
            f"camera '{p['name']}': K {K.tolist()} is not a plain pinhole matrix (skew, rotation or flip); "
            f"the {fmt} format stores only fx, fy, cx, cy - write it to the mvpose format instead"
        )


def check_unique_names(params: list[dict[str, Any]], where: str) -> None:
    """CalibrationError naming ``where`` when two cameras share a name."""
    names = [p["name"] for p in params]
    if len(set(names)) != len(names):
        raise CalibrationError(f"{where}: duplicate camera names {names}")


def read_text(path: Path) -> str:
    """The file as text (UTF-8; a leading byte-order mark, which Windows editors write, is dropped)."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as err:
        raise CalibrationError(f"{path}: cannot read calibration file ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise CalibrationError(f"{path}: not a text file ({err})") from err


# ------------------------------------------------------------------------- params <-> Cameras
def cameras_from_params(params: list[dict[str, Any]], dtype=None) -> Cameras:
    """Stack validated per-camera parameter dicts into one rig ``Cameras`` of batch shape ``(V,)``."""
    return Cameras.from_params(
        np.stack([p["K"] for p in params]),
        np.stack([p["R"] for p in params]),
        np.stack([p["t"] for p in params]),
        np.stack([p["dist"] for p in params]),
        np.stack([p["size"] for p in params]),
        names=[p["name"] for p in params],
        dtype=dtype or torch.float64,
    )


def params_from_cameras(cameras: Cameras) -> list[dict[str, Any]]:
    """Inverse of :func:`cameras_from_params` for a rig of batch shape ``(V,)``."""
    if cameras.K.ndim != 3:
        raise ValueError(f"expected a rig of batch shape (V,), got {tuple(cameras.batch_shape)}")
    names = cameras.names or [f"cam{i}" for i in range(len(cameras))]
    as_np = lambda x: x.detach().cpu().numpy().astype(np.float64)  # noqa: E731
    return [
        {
            "name": name,
            "size": as_np(cameras.image_size[i]),
            "K": as_np(cameras.K[i]),
            "dist": as_np(cameras.dist[i]),
            "R": as_np(cameras.R[i]),
            "t": as_np(cameras.t[i]),
        }
        for i, name in enumerate(names)
    ]


def as_params(rig: Cameras | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return params_from_cameras(rig) if isinstance(rig, Cameras) else [dict(p) for p in rig]


def plain_number(x: float) -> int | float:
    """Integral sizes print as integers, everything else as the shortest exact float."""
    x = float(x)
    return int(round(x)) if abs(x - round(x)) < 1e-9 else x


# ------------------------------------------------------------------------------------- units
def units_scale(units: str, where: str) -> float:
    if units not in UNITS_MM:
        raise CalibrationError(f"{where}: unknown length unit {units!r}; expected one of {sorted(UNITS_MM)}")
    return UNITS_MM[units]


def agree_units(given: str | None, declared: str | None, where: str) -> str | None:
    """The unit to read with: the caller's and the file's must agree when both are stated."""
    if given is not None:
        units_scale(given, "units")
    if given is not None and declared is not None and given != declared:
        raise CalibrationError(f"{where}: the file states {declared!r}, but units {given!r} were requested; "
                               "omit the requested unit or correct the file")
    return given or declared


# A capture rig's cameras lie this far (mm) from their centre: a few decimetres (a desk) to a stadium.
RIG_SPREAD_MM = (150.0, 100_000.0)
RIG_SPREAD_TYPICAL_MM = 3000.0  # a room-sized rig: the unit giving the spread nearest to it is named


def rig_units_hint(params: Sequence[Mapping[str, Any]], units: str) -> str | None:
    """A sentence when the camera positions of a rig read in ``units`` look like another unit; None when plausible.

    The spread (largest camera distance from the cameras' mean centre; from the origin for one camera) must
    lie in :data:`RIG_SPREAD_MM`; when it does not, the unit among ``m``, ``cm``, ``mm`` that would bring it
    there (nearest to a room-sized rig when two would) is named.
    """
    centres = np.stack([-np.asarray(p["R"]).T @ np.asarray(p["t"]) for p in params])
    spread = float(np.linalg.norm(centres - centres.mean(0), axis=1).max() if len(params) > 1
                   else np.linalg.norm(centres[0]))
    lo, hi = RIG_SPREAD_MM
    if lo <= spread <= hi or spread == 0.0:
        return None
    text = f"cameras lie up to {_length(spread)} from the rig centre with translations read in {units!r}"
    alts = {u: spread * UNITS_MM[u] / UNITS_MM[units] for u in UNITS_MM if u != units}
    fits = [u for u, alt in alts.items() if lo <= alt <= hi]
    if fits:
        u = min(fits, key=lambda u: abs(math.log(alts[u] / RIG_SPREAD_TYPICAL_MM)))
        return f"{text}; read in {u!r} they would lie {_length(alts[u])} from it: the file is likely in {u}"
    return f"{text}, an implausible size for a capture rig"


def _length(mm: float) -> str:
    return f"{mm / 1000:.3g} m" if mm >= 1000 else f"{mm:.3g} mm"
