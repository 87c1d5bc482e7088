"""Calibration files: read the formats practitioners and datasets use, write three of them.

Every reader returns ``{rig_name: [camera params]}`` (rig name ``""`` for single-rig files). One
camera's params are plain numpy in mvpose's convention (OpenCV's pinhole model, as ``cv2.projectPoints``;
``mvpose/calibration/README.md``)::

    {"name": str, "size": (2,) [width, height] px, "K": (3, 3), "dist": (5,) k1 k2 p1 p2 k3,
     "R": (3, 3) world-to-camera, "t": (3,) millimetres, x_cam = R X + t}

Formats (layouts and units in ``mvpose/calibration/README.md``):

- ``mvpose``   JSON or TOML, ``format = "mvpose-calibration"``, mm, one or several rigs; read/write.
- ``pose2sim`` Pose2Sim / anipose ``Calib.toml``: ``[cam_1] name size matrix distortions rotation
  translation fisheye`` + ``[metadata]``; rotation is a Rodrigues vector; metres; read/write.
- ``opencv``   ``cv2.FileStorage`` YAML or XML: a ``cameras`` sequence of maps (``name``,
  ``image_width``, ``image_height``, ``camera_matrix``, ``distortion_coefficients``, ``rvec`` or
  ``R``, ``tvec``) plus a top-level ``units``; a single camera at the top level also reads; read/write.
- ``qualisys`` QTM ``.qca.txt`` export; read only.

Datasets: Human3.6M camera dicts (:func:`h36m_camera_params`, :func:`h36m_camera_dict`) and Ski-Pose
per-frame pan-tilt-zoom cameras (:func:`skipose_cameras`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Mapping, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

import cv2
import numpy as np
import torch

from mvpose.geometry.camera import Cameras

logger = logging.getLogger(__name__)

FORMAT_TAG = "mvpose-calibration"
READ_FORMATS = ("mvpose", "pose2sim", "opencv", "qualisys")
WRITE_FORMATS = ("mvpose", "pose2sim", "opencv")
RECOGNISED = (
    "recognised calibration formats:\n"
    '  mvpose    .json or .toml with format = "mvpose-calibration"\n'
    "  pose2sim  .toml with one table per camera (name, size, matrix, distortions, rotation, translation)\n"
    "  opencv    .yml / .yaml / .xml written by cv2.FileStorage (camera_matrix, distortion_coefficients, ...)\n"
    "  qualisys  .qca.txt calibration export of Qualisys Track Manager"
)
# Length units a file may declare, in millimetres.
UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}

# Human3.6M image sizes (width, height) per camera id: two of the four cameras record 1000x1002.
H36M_IMAGE_SIZES = {"54138969": (1000, 1002), "55011271": (1000, 1000), "58860488": (1000, 1000), "60457274": (1000, 1002)}

# A Pose2Sim / anipose table holding any of these fields is a camera ([metadata] holds none).
POSE2SIM_CAMERA_KEYS = ("matrix", "distortions", "rotation", "translation")


class CalibrationError(ValueError):
    """A calibration file could not be read or written; the message names the file and the field."""


# ---------------------------------------------------------------------------------------- checks
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


def _checked_camera(
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


def _pinhole_only(p: Mapping[str, Any], fmt: str) -> None:
    """OpenCV-style formats store fx fy cx cy only: refuse a general K (rotated or flipped crop)."""
    K = np.asarray(p["K"])
    if abs(K[0, 1]) > 1e-9 * abs(K[0, 0]) or abs(K[1, 0]) > 1e-9 * abs(K[1, 1]) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CalibrationError(
            f"camera '{p['name']}': K {K.tolist()} is not a plain pinhole matrix (skew, rotation or flip); "
            f"the {fmt} format stores only fx, fy, cx, cy - write it to the mvpose format instead"
        )


def _atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text()
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


def _as_params(rig: Cameras | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return params_from_cameras(rig) if isinstance(rig, Cameras) else [dict(p) for p in rig]


def _number(x: float) -> int | float:
    """Integral sizes print as integers, everything else as the shortest exact float."""
    x = float(x)
    return int(round(x)) if abs(x - round(x)) < 1e-9 else x


# ------------------------------------------------------------------------------ mvpose format
def camera_params_from_dict(cam: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate one camera section of the mvpose format and return plain numpy parameters."""
    name = str(cam.get("name", "")).strip()
    if not name:
        raise CalibrationError(f"{where}: missing or empty field 'name'")
    where = f"{where} camera '{name}'"
    K = _field(cam, "K", where, (3, 3))
    dist = _field(cam, "dist", where) if "dist" in cam else np.zeros(5)
    if dist.ndim != 1 or dist.size not in (4, 5):
        raise CalibrationError(f"{where}: 'dist' must hold 4 or 5 values (k1 k2 p1 p2 [k3]), found {dist.size}")
    if "R" in cam:
        R = _field(cam, "R", where, (3, 3))
    elif "rvec" in cam:
        R = cv2.Rodrigues(_field(cam, "rvec", where, (3,)))[0]
    else:
        raise CalibrationError(f"{where}: needs a rotation, field 'R' (3x3) or 'rvec' (3)")
    t = _field(cam, "t", where, (3,))
    size = _field(cam, "size", where, (2,))
    return _checked_camera(where, name, K, dist, R, t, size, general_K=True)


def _camera_to_json(p: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": str(p["name"]),
        "size": [_number(v) for v in np.asarray(p["size"]).tolist()],
        "K": np.asarray(p["K"], dtype=np.float64).tolist(),
        "dist": np.asarray(p["dist"], dtype=np.float64).tolist(),
        "R": np.asarray(p["R"], dtype=np.float64).tolist(),
        "t": np.asarray(p["t"], dtype=np.float64).tolist(),
    }


def _rig_from_doc(doc: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    cams = doc.get("cameras") if isinstance(doc, Mapping) else None
    if isinstance(cams, Mapping):  # TOML-friendly layout: one table per camera, keyed by name
        cams = [{"name": k, **v} for k, v in cams.items()]
    if not isinstance(cams, list) or not cams:
        raise CalibrationError(f"{where}: field 'cameras' must be a non-empty list of camera sections")
    params = [camera_params_from_dict(c, f"{where} cameras[{i}]") for i, c in enumerate(cams)]
    _check_unique_names(params, where)
    return params


def _check_unique_names(params: list[dict[str, Any]], where: str) -> None:
    names = [p["name"] for p in params]
    if len(set(names)) != len(names):
        raise CalibrationError(f"{where}: duplicate camera names {names}")


def read_mvpose_calibration(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read an mvpose calibration file (JSON or TOML) into ``{rig_name: [camera params]}``.

    A single-rig file gives the rig name ``""``.
    """
    path = Path(path)
    text = _read_text(path)
    is_toml = path.suffix.lower() == ".toml"
    try:
        doc = tomllib.loads(text) if is_toml else json.loads(text)
    except ValueError as err:
        raise CalibrationError(f"{path}: not valid {'TOML' if is_toml else 'JSON'}: {err}") from err
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT_TAG:
        found = doc.get("format") if isinstance(doc, Mapping) else type(doc).__name__
        raise CalibrationError(f"{path}: field 'format' must be '{FORMAT_TAG}', found {found!r}\n{RECOGNISED}")
    units = doc.get("units", "mm")
    if units != "mm":
        raise CalibrationError(f"{path}: field 'units' must be 'mm', found {units!r}")
    if "rigs" in doc:
        rigs = doc["rigs"]
        if not isinstance(rigs, Mapping) or not rigs:
            raise CalibrationError(f"{path}: field 'rigs' must map rig names to rigs")
        return {str(k): _rig_from_doc(v, f"{path} rig '{k}'") for k, v in rigs.items()}
    return {"": _rig_from_doc(doc, str(path))}


def _json_flat(values: list) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _is_number_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)


def _json_text(obj: Any, indent: int = 0, col: int = 0) -> str:
    """JSON with vectors on one line and matrices one row per line, aligned (``col``: start column)."""
    pad = "  " * indent
    if isinstance(obj, Mapping):
        lines = []
        for key, value in obj.items():
            head = f"{pad}  {json.dumps(key)}: "
            lines.append(head + _json_text(value, indent + 1, len(head)))
        return "{\n" + ",\n".join(lines) + f"\n{pad}}}" if lines else "{}"
    if isinstance(obj, list) and obj and all(_is_number_list(row) for row in obj):
        return "[" + (",\n" + " " * (col + 1)).join(_json_flat(row) for row in obj) + "]"
    if _is_number_list(obj) or (isinstance(obj, list) and all(isinstance(v, str) for v in obj)):
        return _json_flat(obj)
    if isinstance(obj, list):
        return "[\n" + ",\n".join(f"{pad}  " + _json_text(v, indent + 1, len(pad) + 2) for v in obj) + f"\n{pad}]"
    return json.dumps(obj)


def _toml_camera(cam: Mapping[str, Any], header: str) -> str:
    lines = [header]
    for key, value in cam.items():
        head = f"{key} = "
        if isinstance(value, list) and value and isinstance(value[0], list):
            lines.append(head + "[" + (",\n" + " " * (len(head) + 1)).join(_json_flat(r) for r in value) + "]")
        else:
            lines.append(head + (_json_flat(value) if isinstance(value, list) else json.dumps(value)))
    return "\n".join(lines)


def _mvpose_doc(rigs: Mapping[str, list[dict[str, Any]]] | list[dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"format": FORMAT_TAG, "version": 1, "units": "mm"}
    if isinstance(rigs, Mapping) and list(rigs) != [""]:
        doc["rigs"] = {str(k): {"cameras": [_camera_to_json(p) for p in v]} for k, v in rigs.items()}
    else:
        rig = rigs[""] if isinstance(rigs, Mapping) else rigs
        doc["cameras"] = [_camera_to_json(p) for p in rig]
    return doc


def _mvpose_toml_text(doc: Mapping[str, Any]) -> str:
    head = "\n".join(f"{k} = {json.dumps(doc[k])}" for k in ("format", "version", "units"))
    blocks = [head]
    if "rigs" in doc:
        for rig, body in doc["rigs"].items():
            blocks += [_toml_camera(c, f"[[rigs.{json.dumps(rig)}.cameras]]") for c in body["cameras"]]
    else:
        blocks += [_toml_camera(c, "[[cameras]]") for c in doc["cameras"]]
    return "\n\n".join(blocks) + "\n"


def write_mvpose_calibration(
    path: str | Path, rigs: Mapping[str, list[dict[str, Any]]] | list[dict[str, Any]] | Cameras
) -> None:
    """Write camera params (one rig as a list or ``Cameras``, or ``{rig: [params]}``) atomically.

    JSON or TOML by suffix; vectors sit on one line and matrices one row per line, so a rig file
    reads like a table. Floats keep every digit (the file round-trips exactly).
    """
    path = Path(path)
    if isinstance(rigs, Cameras):
        rigs = params_from_cameras(rigs)
    doc = _mvpose_doc(rigs)
    text = _mvpose_toml_text(doc) if path.suffix.lower() == ".toml" else _json_text(doc) + "\n"
    _atomic_write_text(path, text)


# -------------------------------------------------------------------------- Pose2Sim / anipose
def read_pose2sim_calibration(path: str | Path, units: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Read a Pose2Sim / anipose ``Calib.toml`` into ``{"": [camera params]}``.

    Each camera is a table (``[cam_1]``, or any name) with ``name``, ``size`` [W, H], ``matrix`` (3x3),
    ``distortions`` (k1 k2 p1 p2 [k3]), ``rotation`` (Rodrigues vector, world-to-camera),
    ``translation`` (world-to-camera, ``units``) and ``fisheye``; tables without camera fields
    (``[metadata]``, anipose's board sections) are skipped.

    The format does not fix the unit of ``translation``: Pose2Sim writes metres; anipose uses the unit of
    its board's square size (often mm). A ``units = "mm"`` key at the top level or in ``[metadata]`` (an
    mvpose extension) states it in the file.

    Args:
        units: length unit of ``translation`` (``m``, ``cm``, ``mm``); None: the file's ``units``, else metres.

    Raises:
        CalibrationError: unreadable file or field, or ``units`` contradicting the file's own ``units``.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        doc = tomllib.loads(text)
    except ValueError as err:
        raise CalibrationError(f"{path}: not valid TOML: {err}") from err
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    declared = doc.get("units", meta.get("units"))
    field = "units" if "units" in doc else "[metadata] units"
    if declared is not None:
        _units_scale(str(declared), f"{path}: field '{field}'")
    units = _agree_units(units, None if declared is None else str(declared), f"{path}: field '{field}'") or "m"
    scale = _units_scale(units, f"{path}: units")
    params = []
    for key, table in doc.items():
        if not isinstance(table, Mapping) or not any(k in table for k in POSE2SIM_CAMERA_KEYS):
            continue
        where = f"{path} [{key}]"
        name = str(table.get("name", key)).strip()
        where = f"{where} camera '{name}'"
        if table.get("fisheye", False):
            raise CalibrationError(
                f"{where}: 'fisheye = true' (OpenCV fisheye model) is not supported; mvpose models k1 k2 p1 p2 k3"
            )
        K = _field(table, "matrix", where, (3, 3))
        dist = _field(table, "distortions", where)
        R = cv2.Rodrigues(_field(table, "rotation", where, (3,)))[0]
        t = _field(table, "translation", where, (3,)) * scale
        size = _field(table, "size", where, (2,))
        fields = {"K": "matrix", "dist": "distortions", "R": "rotation", "t": "translation"}
        params.append(_checked_camera(where, name, K, dist, R, t, size, fields))
    if not params:
        tables = [k for k, v in doc.items() if isinstance(v, Mapping)]
        raise CalibrationError(
            f"{path}: no camera tables (tables with fields {list(POSE2SIM_CAMERA_KEYS)}); found tables {tables}"
        )
    _check_unique_names(params, str(path))
    return {"": params}


def _units_scale(units: str, where: str) -> float:
    if units not in UNITS_MM:
        raise CalibrationError(f"{where}: unknown length unit {units!r}; expected one of {sorted(UNITS_MM)}")
    return UNITS_MM[units]


def _agree_units(given: str | None, declared: str | None, where: str) -> str | None:
    """The unit to read with: the caller's and the file's must agree when both are stated."""
    if given is not None:
        _units_scale(given, "units")
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


def write_pose2sim_calibration(path: str | Path, rig: Cameras | Sequence[Mapping[str, Any]], units: str = "m") -> None:
    """Write one rig as a Pose2Sim ``Calib.toml`` (``[cam_1]`` ... then ``[metadata]``), atomically.

    ``distortions`` holds 4 values (k1 k2 p1 p2) as Pose2Sim writes them, or 5 when k3 is non-zero.
    """
    scale = _units_scale(units, f"{path}: units")
    blocks = []
    for i, p in enumerate(_as_params(rig), start=1):
        _pinhole_only(p, "pose2sim")
        dist = np.asarray(p["dist"], dtype=np.float64)
        dist = dist[:4] if dist[4] == 0 else dist
        K = np.asarray(p["K"], dtype=np.float64)
        vec = lambda v: "[ " + ", ".join(json.dumps(float(x)) for x in np.asarray(v).reshape(-1)) + "]"  # noqa: E731
        blocks.append(
            "\n".join(
                [
                    f"[cam_{i}]",
                    f"name = {json.dumps(str(p['name']))}",
                    f"size = {vec(p['size'])}",
                    "matrix = [ " + ", ".join(vec(row) for row in K) + "]",
                    f"distortions = {vec(dist)}",
                    f"rotation = {vec(cv2.Rodrigues(np.asarray(p['R'], dtype=np.float64))[0])}",
                    f"translation = {vec(np.asarray(p['t'], dtype=np.float64) / scale)}",
                    "fisheye = false",
                ]
            )
        )
    blocks.append("[metadata]\nadjusted = false\nerror = 0.0")
    _atomic_write_text(Path(path), "\n\n".join(blocks) + "\n")


# ------------------------------------------------------------------------- OpenCV FileStorage
def _fs_value(node: cv2.FileNode) -> Any:
    """A FileNode tree as plain Python: maps, lists, strings, floats and matrices (numpy)."""
    if node.isMap():
        keys = node.keys()
        if {"rows", "cols", "data"} <= set(keys):
            mat = node.mat()
            if mat is not None and mat.size:
                return np.asarray(mat, dtype=np.float64)
        out = {k: _fs_value(node.getNode(k)) for k in keys}
        if {"rows", "cols", "data"} <= set(out) and isinstance(out["data"], list):  # untagged matrix (ROS style)
            try:
                return np.asarray(out["data"], dtype=np.float64).reshape(int(out["rows"]), int(out["cols"]))
            except (TypeError, ValueError):
                pass  # leave it as a map; the field check reports it
        return out
    if node.isSeq():
        return [_fs_value(node.at(i)) for i in range(node.size())]
    if node.isString():
        return node.string()
    if node.isInt():
        return int(node.real())
    if node.isReal():
        return node.real()
    return None


def _open_filestorage(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        fs = cv2.FileStorage(text, cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
        ok = fs.isOpened()
    except Exception as err:  # cv2 raises SystemError / cv2.error with a parser message
        raise CalibrationError(f"{path}: not a cv2.FileStorage YAML/XML file: {str(err).strip()}") from err
    if not ok:
        raise CalibrationError(f"{path}: not a cv2.FileStorage YAML/XML file")
    try:
        return _fs_value(fs.root())
    finally:
        fs.release()


def _opencv_camera(node: Mapping[str, Any], where: str, default_name: str, scale: float) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise CalibrationError(f"{where}: expected a map of camera fields, found {type(node).__name__}")
    name = str(node.get("name", node.get("camera_name", default_name))).strip()
    where = f"{where} camera '{name}'"
    K = _field(node, "camera_matrix", where, (3, 3))
    dist = _field(node, "distortion_coefficients", where) if "distortion_coefficients" in node else np.zeros(5)
    size = np.array([_field(node, "image_width", where, ()), _field(node, "image_height", where, ())])
    has_rotation = "rvec" in node or "R" in node
    if "rvec" in node and "R" in node:
        R = _field(node, "R", where, (3, 3))
        if np.abs(cv2.Rodrigues(_field(node, "rvec", where, (3,)))[0] - R).max() > 1e-6:
            raise CalibrationError(f"{where}: fields 'rvec' and 'R' disagree; keep one")
    elif "R" in node:
        R = _field(node, "R", where, (3, 3))
    elif "rvec" in node:
        R = cv2.Rodrigues(_field(node, "rvec", where, (3,)))[0]
    if has_rotation != ("tvec" in node):
        raise CalibrationError(f"{where}: extrinsics need both a rotation ('rvec' or 'R') and 'tvec', found only one")
    if has_rotation:
        t = _field(node, "tvec", where, (3,)) * scale
    else:
        logger.warning("%s: no extrinsics (rvec/R, tvec); the camera sits at the world origin", where)
        R, t = np.eye(3), np.zeros(3)
    fields = {"K": "camera_matrix", "dist": "distortion_coefficients", "size": "image_width/image_height"}
    return _checked_camera(where, name, K, dist, R, t, size, fields)


def read_opencv_calibration(path: str | Path, units: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Read a ``cv2.FileStorage`` YAML or XML calibration into ``{"": [camera params]}``.

    Layouts: a ``cameras`` sequence with one map per camera (what :func:`write_opencv_calibration`
    writes), or a single camera's fields at the top level (OpenCV's calibration sample). A top-level
    ``units`` (``mm``, ``cm`` or ``m``; default ``mm``) gives the unit of every ``tvec``.

    Args:
        units: unit of ``tvec`` for a file without ``units``; must match the file's when it has one.
    """
    path = Path(path)
    root = _open_filestorage(path)
    if not isinstance(root, Mapping):
        raise CalibrationError(f"{path}: top level must be a map of named nodes")
    declared = None if root.get("units") is None else str(root["units"])
    if declared is not None:
        _units_scale(declared, f"{path}: field 'units'")
    units = _agree_units(units, declared, f"{path}: field 'units'") or "mm"
    scale = _units_scale(str(units), f"{path}: field 'units'")
    if "cameras" in root:
        cams = root["cameras"]
        if not isinstance(cams, list) or not cams:
            raise CalibrationError(f"{path}: field 'cameras' must be a non-empty sequence of camera maps")
        params = [_opencv_camera(c, f"{path} cameras[{i}]", f"cam{i}", scale) for i, c in enumerate(cams)]
    elif "camera_matrix" in root:
        params = [_opencv_camera(root, str(path), path.name.split(".")[0], scale)]
    else:
        raise CalibrationError(
            f"{path}: expected a 'cameras' sequence or a top-level 'camera_matrix', found nodes {sorted(root)}"
        )
    _check_unique_names(params, str(path))
    return {"": params}


def write_opencv_calibration(path: str | Path, rig: Cameras | Sequence[Mapping[str, Any]]) -> None:
    """Write one rig as ``cv2.FileStorage`` YAML (``.yml``/``.yaml``) or XML (``.xml``), atomically.

    Layout: ``units: mm`` and a ``cameras`` sequence of maps with ``name``, ``image_width``,
    ``image_height``, ``camera_matrix`` (3x3), ``distortion_coefficients`` (1x5), ``rvec`` and
    ``tvec`` (3x1, mm) such that ``cv2.projectPoints(X, rvec, tvec, camera_matrix, dist)`` projects.
    """
    path = Path(path)
    fmt = {".yml": cv2.FILE_STORAGE_FORMAT_YAML, ".yaml": cv2.FILE_STORAGE_FORMAT_YAML, ".xml": cv2.FILE_STORAGE_FORMAT_XML}
    if path.suffix.lower() not in fmt:
        raise CalibrationError(f"{path}: OpenCV FileStorage output needs a .yml, .yaml or .xml name, found {path.suffix!r}")
    fs = cv2.FileStorage("", cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY | fmt[path.suffix.lower()])
    fs.writeComment("mvpose rig: x_cam = R(rvec) X + tvec (tvec in 'units'); distortion k1 k2 p1 p2 k3")
    fs.write("units", "mm")
    fs.startWriteStruct("cameras", cv2.FileNode_SEQ)
    for p in _as_params(rig):
        _pinhole_only(p, "opencv")
        w, h = (_number(v) for v in np.asarray(p["size"]).tolist())
        fs.startWriteStruct("", cv2.FileNode_MAP)
        fs.write("name", str(p["name"]))
        fs.write("image_width", w)
        fs.write("image_height", h)
        fs.write("camera_matrix", np.asarray(p["K"], dtype=np.float64))
        fs.write("distortion_coefficients", np.asarray(p["dist"], dtype=np.float64).reshape(1, 5))
        fs.write("rvec", cv2.Rodrigues(np.asarray(p["R"], dtype=np.float64))[0].reshape(3, 1))
        fs.write("tvec", np.asarray(p["t"], dtype=np.float64).reshape(3, 1))
        fs.endWriteStruct()
    fs.endWriteStruct()
    _atomic_write_text(path, fs.releaseAndGetString())


# -------------------------------------------------------------------------------- Qualisys QTM
# Qualisys cameras look down their -z axis with y up; OpenCV cameras look down +z with y down.
QUALISYS_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def _xml_floats(
    elem: ET.Element | None, where: str, tag: str, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, float]:
    """Float attributes of ``elem`` by lower-case name (QTM versions differ in case); optional ones default to 0."""
    if elem is None:
        raise CalibrationError(f"{where}: missing element <{tag}>")
    attrs = {k.lower(): v for k, v in elem.attrib.items()}
    out = {}
    for name in (*required, *optional):
        key = name.lower()
        if key not in attrs:
            if name in required:
                raise CalibrationError(f"{where} <{tag}>: missing attribute '{name}' (have {sorted(elem.attrib)})")
            out[key] = 0.0
            continue
        try:
            out[key] = float(attrs[key])
        except ValueError as err:
            raise CalibrationError(f"{where} <{tag}>: attribute '{name}' is not a number: {attrs[key]!r}") from err
        if not math.isfinite(out[key]):
            raise CalibrationError(f"{where} <{tag}>: attribute '{name}' is {attrs[key]!r}")
    return out


def _qualisys_subpixels(intr: Mapping[str, float], fov_max: Mapping[str, float] | None) -> float:
    """Sub-pixels per pixel of the intrinsic values: QTM stores 64 (as Pose2Sim assumes), some exports 1.

    The sensor range over the full video field of view tells which; a power of two covers binning.
    """
    span = intr["sensormaxu"] - intr["sensorminu"]
    if span <= 0:
        return 64.0
    if fov_max is not None:
        ratio = (span + 1.0) / (fov_max["right"] - fov_max["left"] + 1.0)
        return float(2.0 ** round(math.log2(max(ratio, 1.0))))
    return 64.0 if span > 16384 else 1.0  # no real sensor is 16k pixels wide; 64 sub-pixels of one is


QUALISYS_INTRINSICS = ("focalLengthU", "focalLengthV", "centerPointU", "centerPointV", "radialDistortion1", "radialDistortion2")
QUALISYS_OPTIONAL = ("skew", "radialDistortion3", "tangentalDistortion1", "tangentalDistortion2",
                     "tangentialDistortion1", "tangentialDistortion2", "sensorMinU", "sensorMaxU", "sensorMinV", "sensorMaxV")
QUALISYS_TRANSFORM = ("x", "y", "z", *(f"r{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3)))


def _qualisys_camera(cam: ET.Element, name: str, where: str, subpixels: float | None) -> dict[str, Any]:
    """One ``<camera>`` element -> mvpose params (conventions in :func:`read_qualisys_calibration`)."""
    box = ("left", "top", "right", "bottom")
    fov, fov_max = (
        _xml_floats(cam.find(tag), where, tag, box) if cam.find(tag) is not None else None
        for tag in ("fov_video", "fov_video_max")
    )
    f = _xml_floats(cam.find("intrinsic"), where, "intrinsic", QUALISYS_INTRINSICS, QUALISYS_OPTIONAL)
    scale = float(subpixels) if subpixels else _qualisys_subpixels(f, fov_max)
    window = fov or fov_max
    if window is not None:
        left, top = window["left"], window["top"]
        size = np.array([window["right"] - left + 1.0, window["bottom"] - top + 1.0])
    elif f["sensormaxu"] > 0 and f["sensormaxv"] > 0:
        left = top = 0.0
        # exports differ on whether sensorMax is the last sub-pixel or one past it: round
        size = np.round([(f["sensormaxu"] - f["sensorminu"]) / scale, (f["sensormaxv"] - f["sensorminv"]) / scale])
    else:
        raise CalibrationError(f"{where}: no image size: needs <fov_video> or sensorMaxU/V in <intrinsic>")
    K = np.array(
        [
            [f["focallengthu"] / scale, f["skew"] / scale, f["centerpointu"] / scale - left],
            [0.0, f["focallengthv"] / scale, f["centerpointv"] / scale - top],
            [0.0, 0.0, 1.0],
        ]
    )
    p1 = f["tangentaldistortion1"] or f["tangentialdistortion1"]
    p2 = f["tangentaldistortion2"] or f["tangentialdistortion2"]
    dist = np.array([f["radialdistortion1"], f["radialdistortion2"], p1, p2, f["radialdistortion3"]])
    tr = _xml_floats(cam.find("transform"), where, "transform", QUALISYS_TRANSFORM)
    M = np.array([[tr[f"r{i}{j}"] for j in (1, 2, 3)] for i in (1, 2, 3)])
    _check_rotation(M, where, "transform r11..r33")
    R = QUALISYS_TO_OPENCV @ M
    C = np.array([tr["x"], tr["y"], tr["z"]])
    fields = {"K": "intrinsic", "dist": "intrinsic distortion", "R": "transform", "size": "fov_video"}
    return _checked_camera(where, name, K, dist, R, -R @ C, size, fields)


def read_qualisys_calibration(path: str | Path, subpixels: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Read a Qualisys Track Manager ``.qca.txt`` calibration export into ``{"": [camera params]}``.

    - Intrinsics (``focalLengthU/V``, ``centerPointU/V``, ``skew``) are in sensor sub-pixels
      (``subpixels`` per pixel, 64 by default, detected from ``sensorMaxU`` over ``fov_video_max``);
      the principal point is shifted by the ``fov_video`` window's ``left``/``top``, whose size is
      the image size (``right - left + 1``).
    - Distortion ``radialDistortion1..3``, ``tangentalDistortion1..2`` is read as OpenCV k1 k2 k3, p1 p2,
      without the sub-pixel scaling: it acts on normalised coordinates. (Pose2Sim divides it by 64
      too; real exports hold values like k1 = -0.045, which is a plausible lens only unscaled.)
    - ``transform`` gives the camera centre ``x y z`` (mm) and ``r11..r33`` with
      ``M = [[r11 r12 r13], [r21 r22 r23], [r31 r32 r33]]`` mapping world to the Qualisys camera frame
      (the columns of QTM's camera-to-world matrix); Qualisys cameras look down -z with y up, so
      ``R = diag(1, -1, -1) @ M`` and ``t = -R C``, exactly Pose2Sim's conversion.
    - When some cameras are video cameras (``model`` containing "video"), marker-only cameras are
      dropped; inactive cameras (``active="0"``) are dropped. ``viewrotation`` is not applied.

    Args:
        subpixels: override the detected sub-pixel factor (e.g. 128 for binned video).
    """
    path = Path(path)
    try:
        root = ET.fromstring(_read_text(path))
    except ET.ParseError as err:
        raise CalibrationError(f"{path}: not valid XML: {err}") from err
    cameras = root.findall(".//cameras/camera")
    if not cameras:
        raise CalibrationError(f"{path}: no <cameras><camera> elements; is this a QTM .qca.txt export?")
    active = [c for c in cameras if c.get("active", "1") != "0"]
    chosen = [c for c in active if "video" in c.get("model", "").lower()] or active
    dropped = [c.get("serial", "?") for c in cameras if c not in chosen]
    if dropped:
        logger.info("%s: skipping %d inactive or marker-only cameras %s", path, len(dropped), dropped)
    params = []
    for i, cam in enumerate(chosen):
        name = cam.get("serial") or f"cam{i}"
        where = f"{path} camera '{name}'"
        if cam.get("viewrotation", "0") not in ("0", ""):
            logger.warning("%s: viewrotation=%s is not applied; K describes the unrotated image", where, cam.get("viewrotation"))
        params.append(_qualisys_camera(cam, name, where, subpixels))
    _check_unique_names(params, str(path))
    return {"": params}


# ----------------------------------------------------------------------------------- Human3.6M
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


# ------------------------------------------------------------------------------------ Ski-Pose
def skipose_cameras(
    cam_intrinsic,
    cam_position,
    R_cam_2_world,
    image_size: int | tuple[int, int] = 256,
    units: str = "m",
    dtype: torch.dtype = torch.float64,
) -> Cameras:
    """Per-frame Ski-Pose (Ski-PosePTZ) cameras from the ``labels.h5`` fields.

    The cameras pan, tilt and zoom, so every sample has its own camera. As read by the public
    Ski-Pose loaders: ``K = cam_intrinsic.reshape(3, 3)`` (row-major) with its top two rows
    normalised by the image size, ``R = R_cam_2_world.reshape(3, 3).T`` and
    ``x_cam = R (X - cam_position)``. No lens distortion is given.

    Args:
        cam_intrinsic: (N, 9) normalised intrinsics, row-major.
        cam_position: (N, 3) camera centres in ``units`` (metres in the release).
        R_cam_2_world: (N, 9) camera-to-world rotations, row-major.
        image_size: image side (square) or ``(width, height)`` in pixels.

    Returns:
        ``Cameras`` of batch shape ``(N,)``, millimetres.
    """
    where = "Ski-Pose cameras"
    as_t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    Kn, C, Rc2w = as_t(cam_intrinsic), as_t(cam_position), as_t(R_cam_2_world)
    N = Kn.shape[0] if Kn.ndim else 0
    for field, x, width in (("cam_intrinsic", Kn, 9), ("cam_position", C, 3), ("R_cam_2_world", Rc2w, 9)):
        if x.shape != (N, width):
            raise CalibrationError(f"{where}: '{field}' must have shape (N, {width}) with N = {N}, found {tuple(x.shape)}")
        bad = ~torch.isfinite(x).all(dim=1)
        if bad.any():
            raise CalibrationError(f"{where}: '{field}' row {int(bad.nonzero()[0])} contains NaN or infinity")
    Kn = Kn.reshape(N, 3, 3)
    bottom_bad = (Kn[:, 2, :2].abs() > 1e-9).any(dim=1) | (Kn[:, 2, 2] <= 0)
    if bottom_bad.any():
        i = int(bottom_bad.nonzero()[0, 0])
        raise CalibrationError(f"{where}: 'cam_intrinsic' row {i} has bottom row {Kn[i, 2].tolist()}, expected [0, 0, s > 0]")
    focal_bad = (Kn[:, 0, 0] <= 0) | (Kn[:, 1, 1] <= 0)
    if focal_bad.any():
        i = int(focal_bad.nonzero()[0, 0])
        raise CalibrationError(
            f"{where}: 'cam_intrinsic' row {i} has focal lengths {Kn[i, 0, 0].item():.4g}, {Kn[i, 1, 1].item():.4g}, expected > 0"
        )
    R = Rc2w.reshape(N, 3, 3).transpose(-1, -2)
    ortho = (R @ R.transpose(-1, -2) - torch.eye(3, dtype=R.dtype)).abs().amax(dim=(-1, -2))
    bad = (ortho > 1e-4) | (torch.linalg.det(R) < 0)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise CalibrationError(f"{where}: 'R_cam_2_world' row {i} is not a rotation (|R R^T - I| = {float(ortho[i]):.2e})")
    w, h = (image_size, image_size) if np.ndim(image_size) == 0 else image_size
    K = torch.zeros(N, 3, 3, dtype=torch.float64)
    K[:, 0], K[:, 1], K[:, 2, 2] = Kn[:, 0] * w, Kn[:, 1] * h, 1.0
    C = C * _units_scale(units, f"{where}: units")
    t = -(R @ C.unsqueeze(-1)).squeeze(-1)
    size = torch.tensor([float(w), float(h)], dtype=torch.float64).expand(N, 2)
    return Cameras.from_params(K, R, t, None, size, dtype=dtype)


# ------------------------------------------------------------------------ detection, dispatch
def detect_format(path: str | Path) -> str:
    """Name the format of a calibration file (one of ``READ_FORMATS``) by suffix and content."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".qca.txt"):
        return "qualisys"
    text = _read_text(path)
    head = text.lstrip()[:4096]
    if path.suffix.lower() in (".yml", ".yaml") or head.startswith("%YAML"):
        return "opencv"
    if head.startswith("<") or path.suffix.lower() == ".xml":
        if "<opencv_storage" in head:
            return "opencv"
        if "<calibration" in head or "<cameras" in head:
            return "qualisys"
        raise CalibrationError(f"{path}: XML, but neither <opencv_storage> (OpenCV) nor <calibration> (Qualisys)\n{RECOGNISED}")
    if path.suffix.lower() == ".json" or head.startswith("{"):
        return "mvpose"
    try:
        doc = tomllib.loads(text)
    except ValueError as err:
        raise CalibrationError(f"{path}: unrecognised calibration file (not TOML either: {err})\n{RECOGNISED}") from err
    if doc.get("format") == FORMAT_TAG:
        return "mvpose"
    if any(isinstance(v, Mapping) and any(k in v for k in POSE2SIM_CAMERA_KEYS) for v in doc.values()):
        return "pose2sim"
    raise CalibrationError(
        f"{path}: TOML without format = \"{FORMAT_TAG}\" and without Pose2Sim camera tables\n{RECOGNISED}"
    )


def read_calibration(path: str | Path, fmt: str | None = None, units: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Read any supported calibration file into ``{rig_name: [camera params]}``.

    A rig whose camera positions look like another length unit (:func:`rig_units_hint`) is logged as a warning.

    Args:
        fmt: one of ``READ_FORMATS``; detected from suffix and content when omitted.
        units: length unit of the translations (``m``, ``cm``, ``mm``) for formats that do not fix it:
            Pose2Sim / anipose TOML (default: the file's ``units`` key, else metres) and OpenCV files
            without ``units`` (default mm). mvpose and Qualisys files are in mm; another unit is an error.

    Raises:
        CalibrationError: unreadable file, or ``units`` contradicting the unit the file states.
    """
    fmt = fmt or detect_format(path)
    readers = {
        "mvpose": read_mvpose_calibration,
        "pose2sim": read_pose2sim_calibration,
        "opencv": read_opencv_calibration,
        "qualisys": read_qualisys_calibration,
    }
    if fmt not in readers:
        raise CalibrationError(f"{path}: unknown calibration format {fmt!r}; expected one of {list(readers)}")
    if fmt in ("pose2sim", "opencv"):
        rigs = readers[fmt](path, units=units)
    else:
        _agree_units(units, "mm", f"{path}: {fmt} calibrations are in mm")
        rigs = readers[fmt](path)
    used = calibration_units(path, fmt, units)
    for name, params in rigs.items():
        hint = rig_units_hint(params, used) if params else None
        if hint:
            rig = f" rig {name!r}" if name else ""
            logger.warning("%s%s: %s (state the unit: units='m'|'cm'|'mm', `--calibration-units`)", path, rig, hint)
    return rigs


def calibration_units(path: str | Path, fmt: str | None = None, units: str | None = None) -> str:
    """The unit :func:`read_calibration` reads the translations of ``path`` in: ``units`` when given, else the
    unit the file states, else its format's default (Pose2Sim metres, the others mm)."""
    fmt = fmt or detect_format(path)
    if units is not None or fmt not in ("pose2sim", "opencv"):
        return units or "mm"
    if fmt == "opencv":
        value = _open_filestorage(Path(path)).get("units")
    else:
        doc = tomllib.loads(_read_text(Path(path)))
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
        value = doc.get("units", meta.get("units"))
    return str(value) if value is not None else ("m" if fmt == "pose2sim" else "mm")


def _select_rig(rigs: Mapping[str, list], path: str | Path, rig: str | None, why: str = "choose one") -> tuple[str, list]:
    if rig is None:
        if len(rigs) > 1:
            raise CalibrationError(f"{path}: holds several rigs {sorted(rigs)}; {why}")
        rig = next(iter(rigs))
    if rig not in rigs:
        raise CalibrationError(f"{path}: no rig {rig!r}; rigs are {sorted(rigs)}")
    return rig, rigs[rig]


def load_calibration(path: str | Path, rig: str | None = None, dtype=None, units: str | None = None) -> Cameras:
    """Load one rig from a calibration file as ``Cameras`` of batch shape ``(V,)``.

    Args:
        path: calibration file, any format of :func:`read_calibration`.
        rig: rig name for multi-rig files (e.g. ``"S9"`` in ``mvpose/calibration/h36m.json``).
        units: length unit of the file's translations where its format does not fix it (see
            :func:`read_calibration`).
    """
    _, params = _select_rig(read_calibration(path, units=units), path, rig)
    return cameras_from_params(params, dtype=dtype)


def write_calibration(
    path: str | Path, rigs: Cameras | Sequence[Mapping[str, Any]] | Mapping[str, list], to: str = "mvpose"
) -> None:
    """Write a rig (``Cameras`` or params) or, for ``mvpose``, several rigs, in format ``to``."""
    path = Path(path)
    suffixes = {"mvpose": (".json", ".toml"), "pose2sim": (".toml",), "opencv": (".yml", ".yaml", ".xml")}
    if to not in suffixes:
        raise CalibrationError(f"{path}: cannot write format {to!r}; writable formats are {list(WRITE_FORMATS)}")
    if path.suffix.lower() not in suffixes[to]:
        raise CalibrationError(f"{path}: the {to} format needs a file name ending in {' or '.join(suffixes[to])}")
    if to == "mvpose":
        write_mvpose_calibration(path, rigs)
        return
    if isinstance(rigs, Mapping):
        _, rigs = _select_rig(rigs, path, None, f"the {to} format holds one rig")
    (write_pose2sim_calibration if to == "pose2sim" else write_opencv_calibration)(path, rigs)


def calibration_summary(params: Sequence[Mapping[str, Any]]) -> str:
    """A per-camera table: name, size, fx, fy, cx, cy, centre (mm), distance from the first camera."""
    if not params:
        raise ValueError("calibration_summary: no cameras")
    centres = [-np.asarray(p["R"]).T @ np.asarray(p["t"]) for p in params]
    header = ["camera", "size", "fx", "fy", "cx", "cy", "centre X", "Y", "Z (mm)", f"from {params[0]['name']} (mm)"]
    rows = []
    for p, C in zip(params, centres):
        K = np.asarray(p["K"])
        w, h = (_number(v) for v in np.asarray(p["size"]).tolist())
        rows.append(
            [
                str(p["name"]),
                f"{w}x{h}",
                *(f"{v:.1f}" for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])),
                *(f"{v:.0f}" for v in C),
                f"{np.linalg.norm(C - centres[0]):.0f}",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt_row = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join(fmt_row(r).rstrip() for r in [header, *rows])


def convert_calibration(src: str | Path, dst: str | Path, to: str = "mvpose", rig: str | None = None) -> str:
    """Convert a calibration file (any readable format) to ``to``, written atomically.

    Args:
        src: input file; format detected.
        dst: output file; ``.json``/``.toml`` for mvpose, ``.toml`` for pose2sim, ``.yml``/``.xml`` for opencv.
        to: ``"mvpose"``, ``"pose2sim"`` or ``"opencv"``.
        rig: rig to take from a multi-rig file; required when writing a single-rig format.

    Returns:
        A summary: what was written, then one table per rig.
    """
    src, dst = Path(src), Path(dst)
    fmt_in = detect_format(src)
    rigs = read_calibration(src, fmt_in)
    if rig is not None or to != "mvpose":
        name, params = _select_rig(rigs, src, rig, f"the {to} format holds one rig: choose one with --rig NAME (rig= in Python)")
        rigs = {name: params}
        out: Mapping[str, list] | list = params
    else:
        out = rigs
    write_calibration(dst, out, to)
    n_cams = sum(len(v) for v in rigs.values())
    lines = [f"{src} ({fmt_in}) -> {dst} ({to}): {len(rigs)} rig(s), {n_cams} cameras"]
    for name, params in rigs.items():
        lines += ["", f"rig {name}:" if name else "cameras:", calibration_summary(params)]
    return "\n".join(lines)
