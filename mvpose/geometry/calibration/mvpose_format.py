"""The mvpose calibration format: JSON or TOML, ``format = "mvpose-calibration"``, millimetres,
one or several rigs; read and write (layout in ``mvpose/calibration/README.md``).

A single-rig file holds ``cameras``, a list of camera sections (``name``, ``size``, ``K``, ``dist``,
``R`` or ``rvec``, ``t``); a multi-rig file holds ``rigs``, each rig a table with its ``cameras``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np
import tomli_w

from mvpose.engine.checkpoint import atomic_write_text
from mvpose.geometry.calibration.common import (
    RECOGNISED,
    CalibrationError,
    check_unique_names,
    checked_camera,
    field_array,
    params_from_cameras,
    plain_number,
    read_text,
    tomllib,
)
from mvpose.geometry.camera import Cameras

__all__ = ["FORMAT_TAG", "camera_params_from_dict", "read_mvpose_calibration", "write_mvpose_calibration"]

FORMAT_TAG = "mvpose-calibration"


def camera_params_from_dict(cam: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate one camera section of the mvpose format and return plain numpy parameters."""
    name = str(cam.get("name", "")).strip()
    if not name:
        raise CalibrationError(f"{where}: missing or empty field 'name'")
    where = f"{where} camera '{name}'"
    K = field_array(cam, "K", where, (3, 3))
    dist = field_array(cam, "dist", where) if "dist" in cam else np.zeros(5)
    if dist.ndim != 1 or dist.size not in (4, 5):
        raise CalibrationError(f"{where}: 'dist' must hold 4 or 5 values (k1 k2 p1 p2 [k3]), found {dist.size}")
    if "R" in cam:
        R = field_array(cam, "R", where, (3, 3))
    elif "rvec" in cam:
        R = cv2.Rodrigues(field_array(cam, "rvec", where, (3,)))[0]
    else:
        raise CalibrationError(f"{where}: needs a rotation, field 'R' (3x3) or 'rvec' (3)")
    t = field_array(cam, "t", where, (3,))
    size = field_array(cam, "size", where, (2,))
    return checked_camera(where, name, K, dist, R, t, size, general_K=True)


def _camera_to_json(p: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": str(p["name"]),
        "size": [plain_number(v) for v in np.asarray(p["size"]).tolist()],
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
    check_unique_names(params, where)
    return params


def read_mvpose_calibration(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read an mvpose calibration file (JSON or TOML) into ``{rig_name: [camera params]}``.

    A single-rig file gives the rig name ``""``.
    """
    path = Path(path)
    text = read_text(path)
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


def _mvpose_doc(rigs: Mapping[str, list[dict[str, Any]]] | list[dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"format": FORMAT_TAG, "version": 1, "units": "mm"}
    if isinstance(rigs, Mapping) and list(rigs) != [""]:
        doc["rigs"] = {str(k): {"cameras": [_camera_to_json(p) for p in v]} for k, v in rigs.items()}
    else:
        rig = rigs[""] if isinstance(rigs, Mapping) else rigs
        doc["cameras"] = [_camera_to_json(p) for p in rig]
    return doc


def write_mvpose_calibration(
    path: str | Path, rigs: Mapping[str, list[dict[str, Any]]] | list[dict[str, Any]] | Cameras
) -> None:
    """Write camera params (one rig as a list or ``Cameras``, or ``{rig: [params]}``) atomically.

    JSON or TOML by suffix. JSON keeps vectors on one line and matrices one row per line, so a rig
    file reads like a table; TOML is written by ``tomli_w``. Floats keep every digit (the file
    round-trips exactly).
    """
    path = Path(path)
    if isinstance(rigs, Cameras):
        rigs = params_from_cameras(rigs)
    doc = _mvpose_doc(rigs)
    text = tomli_w.dumps(doc) if path.suffix.lower() == ".toml" else _json_text(doc) + "\n"
    atomic_write_text(path, text)
