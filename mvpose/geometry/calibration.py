"""Calibration files: mvpose's own format and the Human3.6M camera dicts.

mvpose format (JSON, or TOML with the same structure)::

    {"format": "mvpose-calibration", "version": 1, "units": "mm",
     "cameras": [{"name": "cam0", "size": [W, H], "K": [[...],[...],[...]],
                  "dist": [k1, k2, p1, p2, k3], "R": [[...]] (or "rvec": [3]), "t": [3]}, ...]}

A file may hold several rigs (one per subject for Human3.6M, whose cameras were re-calibrated per
subject)::

    {"format": "mvpose-calibration", "version": 1, "units": "mm",
     "rigs": {"S1": {"cameras": [...]}, "S5": {"cameras": [...]}, ...}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from mvpose.geometry.camera import Cameras

FORMAT_TAG = "mvpose-calibration"

# Human3.6M image sizes (width, height) per camera id: two of the four cameras record 1000x1002.
H36M_IMAGE_SIZES = {"54138969": (1000, 1002), "55011271": (1000, 1000), "58860488": (1000, 1000), "60457274": (1000, 1002)}


class CalibrationError(ValueError):
    """A calibration file could not be read; the message names the file and the field."""


def _field(obj: Mapping[str, Any], key: str, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
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


def _check_rotation(R: np.ndarray, where: str) -> None:
    err = np.abs(R @ R.T - np.eye(3)).max()
    if err > 1e-4 or np.linalg.det(R) < 0:
        raise CalibrationError(f"{where}: 'R' is not a rotation matrix (|R R^T - I| = {err:.2e}, det = {np.linalg.det(R):.3f})")


def camera_params_from_dict(cam: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate one camera section of the mvpose format and return plain numpy parameters."""
    name = str(cam.get("name", "")).strip()
    if not name:
        raise CalibrationError(f"{where}: missing or empty field 'name'")
    where = f"{where} camera '{name}'"
    K = _field(cam, "K", where, (3, 3))
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CalibrationError(f"{where}: 'K' must have positive focal lengths, found fx={K[0, 0]}, fy={K[1, 1]}")
    dist = _field(cam, "dist", where) if "dist" in cam else np.zeros(5)
    if dist.ndim != 1 or dist.size not in (4, 5):
        raise CalibrationError(f"{where}: 'dist' must hold 4 or 5 values (k1 k2 p1 p2 [k3]), found {dist.size}")
    dist = np.pad(dist, (0, 5 - dist.size))
    if "R" in cam:
        R = _field(cam, "R", where, (3, 3))
    elif "rvec" in cam:
        R = cv2.Rodrigues(_field(cam, "rvec", where, (3,)))[0]
    else:
        raise CalibrationError(f"{where}: needs a rotation, field 'R' (3x3) or 'rvec' (3)")
    _check_rotation(R, where)
    t = _field(cam, "t", where, (3,))
    size = _field(cam, "size", where, (2,))
    if np.any(size <= 0):
        raise CalibrationError(f"{where}: 'size' must be positive [width, height], found {size.tolist()}")
    return {"name": name, "K": K, "dist": dist, "R": R, "t": t, "size": size}


def cameras_from_params(params: list[dict[str, Any]], dtype=None) -> Cameras:
    """Stack validated per-camera parameter dicts into one rig ``Cameras`` of batch shape ``(V,)``."""
    import torch

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
    out = []
    for i, name in enumerate(names):
        out.append(
            {
                "name": name,
                "size": cameras.image_size[i].cpu().numpy().astype(np.float64),
                "K": cameras.K[i].cpu().numpy().astype(np.float64),
                "dist": cameras.dist[i].cpu().numpy().astype(np.float64),
                "R": cameras.R[i].cpu().numpy().astype(np.float64),
                "t": cameras.t[i].cpu().numpy().astype(np.float64),
            }
        )
    return out


def _camera_to_json(p: Mapping[str, Any]) -> dict[str, Any]:
    size = [int(round(v)) if abs(v - round(v)) < 1e-9 else float(v) for v in np.asarray(p["size"]).tolist()]
    return {
        "name": p["name"],
        "size": size,
        "K": np.asarray(p["K"]).tolist(),
        "dist": np.asarray(p["dist"]).tolist(),
        "R": np.asarray(p["R"]).tolist(),
        "t": np.asarray(p["t"]).tolist(),
    }


def _rig_from_doc(doc: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    cams = doc.get("cameras")
    if isinstance(cams, Mapping):  # TOML-friendly layout: one table per camera, keyed by name
        cams = [{"name": k, **v} for k, v in cams.items()]
    if not isinstance(cams, list) or not cams:
        raise CalibrationError(f"{where}: field 'cameras' must be a non-empty list of camera sections")
    params = [camera_params_from_dict(c, f"{where} cameras[{i}]") for i, c in enumerate(cams)]
    names = [p["name"] for p in params]
    if len(set(names)) != len(names):
        raise CalibrationError(f"{where}: duplicate camera names {names}")
    return params


def read_mvpose_calibration(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read an mvpose calibration file (JSON or TOML) into ``{rig_name: [camera params]}``.

    A single-rig file gives the rig name ``""``.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise CalibrationError(f"{path}: cannot read calibration file ({err.strerror})") from err
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            doc = tomllib.loads(text)
        else:
            doc = json.loads(text)
    except ValueError as err:
        raise CalibrationError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {err}") from err
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT_TAG:
        raise CalibrationError(f"{path}: field 'format' must be '{FORMAT_TAG}', found {doc.get('format') if isinstance(doc, Mapping) else type(doc).__name__!r}")
    units = doc.get("units", "mm")
    if units != "mm":
        raise CalibrationError(f"{path}: field 'units' must be 'mm', found {units!r}")
    if "rigs" in doc:
        rigs = doc["rigs"]
        if not isinstance(rigs, Mapping) or not rigs:
            raise CalibrationError(f"{path}: field 'rigs' must map rig names to rigs")
        return {str(k): _rig_from_doc(v, f"{path} rig '{k}'") for k, v in rigs.items()}
    return {"": _rig_from_doc(doc, str(path))}


def write_mvpose_calibration(path: str | Path, rigs: Mapping[str, list[dict[str, Any]]] | list[dict[str, Any]]) -> None:
    """Write camera params (one rig as a list, or ``{rig: [params]}``) atomically, JSON or TOML by suffix."""
    path = Path(path)
    doc: dict[str, Any] = {"format": FORMAT_TAG, "version": 1, "units": "mm"}
    if isinstance(rigs, Mapping) and list(rigs) != [""]:
        doc["rigs"] = {k: {"cameras": [_camera_to_json(p) for p in v]} for k, v in rigs.items()}
    else:
        rig = rigs[""] if isinstance(rigs, Mapping) else rigs
        doc["cameras"] = [_camera_to_json(p) for p in rig]
    if path.suffix.lower() == ".toml":
        import tomli_w

        text = tomli_w.dumps(doc)
    else:
        text = json.dumps(doc, indent=1) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def h36m_camera_params(cam: Mapping[str, Any], where: str = "Human3.6M camera", name: str | None = None) -> dict[str, Any]:
    """Convert a Human3.6M camera dict to mvpose parameters.

    Accepts both the H36M-Toolbox annotation layout (``R (3,3)``, ``T (3,1)`` camera centre, ``fx``,
    ``fy``, ``cx``, ``cy`` as 1-element arrays, ``k (3,1)``, ``p (2,1)``) and the
    ``h36m_cameras.json`` layout (``f (2,)``, ``c (2,)``). Human3.6M stores the centre, so ``t = -R T``.
    """
    R = _field(cam, "R", where, (3, 3))
    C = _field(cam, "T", where, (3,))
    if "f" in cam:
        fx, fy = _field(cam, "f", where, (2,))
        cx, cy = _field(cam, "c", where, (2,))
    else:
        fx, fy, cx, cy = (float(_field(cam, k, where).reshape(-1)[0]) for k in ("fx", "fy", "cx", "cy"))
    k = _field(cam, "k", where, (3,))
    p = _field(cam, "p", where, (2,))
    cam_id = str(cam.get("camera_id", cam.get("name", name or "")))
    size = np.asarray(H36M_IMAGE_SIZES.get(cam_id, (1000, 1000)), dtype=np.float64)
    return {
        "name": name or cam_id,
        "K": np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]),
        "dist": np.array([k[0], k[1], p[0], p[1], k[2]]),
        "R": R,
        "t": -R @ C,
        "size": size,
    }


def h36m_camera_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """mvpose parameters -> the H36M-Toolbox annotation camera dict (``T`` is the camera centre)."""
    R = np.asarray(params["R"], dtype=np.float64)
    K = np.asarray(params["K"], dtype=np.float64)
    d = np.asarray(params["dist"], dtype=np.float64)
    C = -R.T @ np.asarray(params["t"], dtype=np.float64)
    return {
        "R": R,
        "T": C.reshape(3, 1),
        "fx": np.array([K[0, 0]]),
        "fy": np.array([K[1, 1]]),
        "cx": np.array([K[0, 2]]),
        "cy": np.array([K[1, 2]]),
        "k": np.array([d[0], d[1], d[4]]).reshape(3, 1),
        "p": np.array([d[2], d[3]]).reshape(2, 1),
    }


def load_calibration(path: str | Path, rig: str | None = None, dtype=None) -> Cameras:
    """Load one rig from a calibration file as ``Cameras`` of batch shape ``(V,)``.

    Args:
        path: calibration file.
        rig: rig name for multi-rig files (e.g. ``"S9"`` in ``calibration/h36m.json``).
    """
    rigs = read_calibration(path)
    if rig is None:
        if len(rigs) > 1:
            raise CalibrationError(f"{path}: holds several rigs {sorted(rigs)}; choose one")
        rig = next(iter(rigs))
    if rig not in rigs:
        raise CalibrationError(f"{path}: no rig {rig!r}; rigs are {sorted(rigs)}")
    return cameras_from_params(rigs[rig], dtype=dtype)


def read_calibration(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read any supported calibration file into ``{rig_name: [camera params]}`` (format detected)."""
    return read_mvpose_calibration(path)
