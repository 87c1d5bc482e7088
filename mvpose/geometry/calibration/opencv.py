"""OpenCV ``cv2.FileStorage`` YAML or XML calibrations: a ``cameras`` sequence of maps (``name``,
``image_width``, ``image_height``, ``camera_matrix``, ``distortion_coefficients``, ``rvec`` or ``R``,
``tvec``) plus a top-level ``units``; a single camera at the top level also reads; read and write."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from mvpose.engine.checkpoint import atomic_write_text
from mvpose.geometry.calibration.common import (
    CalibrationError,
    agree_units,
    as_params,
    check_unique_names,
    checked_camera,
    field_array,
    pinhole_only,
    plain_number,
    read_text,
    units_scale,
)
from mvpose.geometry.camera import Cameras

__all__ = ["read_opencv_calibration", "write_opencv_calibration"]

logger = logging.getLogger("mvpose.geometry.calibration")  # the package's: issue kind "calibration"


class _NodeError(Exception):
    """A node cv2 could not read, with its place in the file (``cameras[0].camera_matrix``)."""


def _fs_value(node: cv2.FileNode, where: str = "") -> Any:
    """A FileNode tree as plain Python: maps, lists, strings, floats and matrices (numpy).

    Raises:
        _NodeError: a matrix node cv2 refuses (rows x cols not the number of values, unknown ``dt``, non-numbers).
    """
    if node.isMap():
        keys = node.keys()
        if {"rows", "cols", "data"} <= set(keys):
            try:
                mat = node.mat()
            except cv2.error as err:
                found = {k: _fs_value(node.getNode(k), f"{where}.{k}") for k in ("rows", "cols", "dt")}
                data = node.getNode("data")
                n = data.size()
                words = [data.at(i).string() for i in range(n) if data.at(i).isString()]
                bad = f", not numbers: {', '.join(map(repr, words[:3]))}" if words else ""
                raise _NodeError(f"field '{where.lstrip('.')}': not a readable matrix (rows {found['rows']}, cols "
                                 f"{found['cols']}, dt {found['dt']!r}, {n} data values{bad}; expected rows x cols "
                                 f"numbers and dt 'd' or 'f'): {_cv2_reason(err)}") from None
            if mat is not None and mat.size:
                return np.asarray(mat, dtype=np.float64)
        out = {k: _fs_value(node.getNode(k), f"{where}.{k}") for k in keys}
        if {"rows", "cols", "data"} <= set(out) and isinstance(out["data"], list):  # untagged matrix (ROS style)
            try:
                return np.asarray(out["data"], dtype=np.float64).reshape(int(out["rows"]), int(out["cols"]))
            except (TypeError, ValueError):
                pass  # leave it as a map; the field check reports it
        return out
    if node.isSeq():
        return [_fs_value(node.at(i), f"{where}[{i}]") for i in range(node.size())]
    if node.isString():
        return node.string()
    if node.isInt():
        return int(node.real())
    if node.isReal():
        return node.real()
    return None


def _cv2_reason(err: Exception) -> str:
    """The useful part of a cv2 message (``... error: (-215:Assertion failed) nelems == ... in function ...``)."""
    text = str(err).strip()
    m = re.search(r"error: \(-?\d+:[^)]*\) (.*?)(?: in function .*)?$", text, re.S)
    return (m.group(1) if m else text).strip().splitlines()[0]


def _syntax_error(path: Path, text: str) -> str | None:
    """Where a YAML / XML file cv2 could not parse breaks (line and column), from PyYAML / ElementTree."""
    if path.suffix.lower() == ".xml":
        import xml.etree.ElementTree as ET

        try:
            ET.fromstring(text)
        except ET.ParseError as err:
            line, col = err.position
            return f"XML syntax error at line {line}, column {col + 1}: {str(err).split(':')[0]}"
        return None
    import yaml

    body = re.sub(r"^%YAML[: ]?1\.\d\s*\n", "", text)  # OpenCV writes '%YAML:1.0', which PyYAML refuses
    try:
        for _ in yaml.parse(body):  # events only: OpenCV's !!opencv-matrix tags need no constructor
            pass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        shift = text.count("\n") - body.count("\n")
        line = f"line {mark.line + 1 + shift}, column {mark.column + 1}" if mark is not None else "somewhere"
        return f"YAML syntax error at {line}: {err.problem or err.context}"
    return None


def _open_filestorage(path: Path) -> dict[str, Any]:
    text = read_text(path)
    try:
        fs = cv2.FileStorage(text, cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
        ok = fs.isOpened()
    except Exception as err:  # cv2 raises SystemError / cv2.error with a parser message
        where = _syntax_error(path, text) or _cv2_reason(err)
        raise CalibrationError(f"{path}: not a readable cv2.FileStorage YAML/XML file ({where}; a file cut short?)") from None
    if not ok:
        raise CalibrationError(f"{path}: not a cv2.FileStorage YAML/XML file"
                               + (f" ({found})" if (found := _syntax_error(path, text)) else ""))
    try:
        return _fs_value(fs.root())
    except _NodeError as err:
        raise CalibrationError(f"{path}: {err}") from None
    finally:
        fs.release()


def _opencv_camera(node: Mapping[str, Any], where: str, default_name: str, scale: float) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise CalibrationError(f"{where}: expected a map of camera fields, found {type(node).__name__}")
    name = str(node.get("name", node.get("camera_name", default_name))).strip()
    where = f"{where} camera '{name}'"
    K = field_array(node, "camera_matrix", where, (3, 3))
    dist = field_array(node, "distortion_coefficients", where) if "distortion_coefficients" in node else np.zeros(5)
    size = np.array([field_array(node, "image_width", where, ()), field_array(node, "image_height", where, ())])
    has_rotation = "rvec" in node or "R" in node
    if "rvec" in node and "R" in node:
        R = field_array(node, "R", where, (3, 3))
        if np.abs(cv2.Rodrigues(field_array(node, "rvec", where, (3,)))[0] - R).max() > 1e-6:
            raise CalibrationError(f"{where}: fields 'rvec' and 'R' disagree; keep one")
    elif "R" in node:
        R = field_array(node, "R", where, (3, 3))
    elif "rvec" in node:
        R = cv2.Rodrigues(field_array(node, "rvec", where, (3,)))[0]
    if has_rotation != ("tvec" in node):
        raise CalibrationError(f"{where}: extrinsics need both a rotation ('rvec' or 'R') and 'tvec', found only one")
    if has_rotation:
        t = field_array(node, "tvec", where, (3,)) * scale
    else:
        logger.warning("%s: no extrinsics (rvec/R, tvec); the camera sits at the world origin", where)
        R, t = np.eye(3), np.zeros(3)
    fields = {"K": "camera_matrix", "dist": "distortion_coefficients", "size": "image_width/image_height"}
    return checked_camera(where, name, K, dist, R, t, size, fields)


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
        units_scale(declared, f"{path}: field 'units'")
    units = agree_units(units, declared, f"{path}: field 'units'") or "mm"
    scale = units_scale(str(units), f"{path}: field 'units'")
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
    check_unique_names(params, str(path))
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
    for p in as_params(rig):
        pinhole_only(p, "opencv")
        w, h = (plain_number(v) for v in np.asarray(p["size"]).tolist())
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
    atomic_write_text(path, fs.releaseAndGetString())
