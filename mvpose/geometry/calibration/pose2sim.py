"""Pose2Sim / anipose ``Calib.toml``: ``[cam_1] name size matrix distortions rotation translation
fisheye`` + ``[metadata]``; rotation is a Rodrigues vector; metres by default; read and write."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import tomli_w

from mvpose.engine.checkpoint import atomic_write_text
from mvpose.geometry.calibration.common import (
    CalibrationError,
    agree_units,
    as_params,
    check_unique_names,
    checked_camera,
    field_array,
    pinhole_only,
    read_text,
    tomllib,
    units_scale,
)
from mvpose.geometry.camera import Cameras

__all__ = ["POSE2SIM_CAMERA_KEYS", "read_pose2sim_calibration", "write_pose2sim_calibration"]

# A Pose2Sim / anipose table holding any of these fields is a camera ([metadata] holds none).
POSE2SIM_CAMERA_KEYS = ("matrix", "distortions", "rotation", "translation")


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
    text = read_text(path)
    try:
        doc = tomllib.loads(text)
    except ValueError as err:
        raise CalibrationError(f"{path}: not valid TOML: {err}") from err
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    declared = doc.get("units", meta.get("units"))
    field = "units" if "units" in doc else "[metadata] units"
    if declared is not None:
        units_scale(str(declared), f"{path}: field '{field}'")
    units = agree_units(units, None if declared is None else str(declared), f"{path}: field '{field}'") or "m"
    scale = units_scale(units, f"{path}: units")
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
        K = field_array(table, "matrix", where, (3, 3))
        dist = field_array(table, "distortions", where)
        R = cv2.Rodrigues(field_array(table, "rotation", where, (3,)))[0]
        t = field_array(table, "translation", where, (3,)) * scale
        size = field_array(table, "size", where, (2,))
        fields = {"K": "matrix", "dist": "distortions", "R": "rotation", "t": "translation"}
        params.append(checked_camera(where, name, K, dist, R, t, size, fields))
    if not params:
        tables = [k for k, v in doc.items() if isinstance(v, Mapping)]
        raise CalibrationError(
            f"{path}: no camera tables (tables with fields {list(POSE2SIM_CAMERA_KEYS)}); found tables {tables}"
        )
    check_unique_names(params, str(path))
    return {"": params}


def write_pose2sim_calibration(path: str | Path, rig: Cameras | Sequence[Mapping[str, Any]], units: str = "m") -> None:
    """Write one rig as a Pose2Sim ``Calib.toml`` (``[cam_1]`` ... then ``[metadata]``), atomically.

    ``distortions`` holds 4 values (k1 k2 p1 p2) as Pose2Sim writes them, or 5 when k3 is non-zero;
    ``translation`` is in ``units`` (Pose2Sim: metres).
    """
    scale = units_scale(units, f"{path}: units")
    floats = lambda v: [float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]  # noqa: E731
    doc: dict[str, Any] = {}
    for i, p in enumerate(as_params(rig), start=1):
        pinhole_only(p, "pose2sim")
        dist = np.asarray(p["dist"], dtype=np.float64)
        doc[f"cam_{i}"] = {
            "name": str(p["name"]),
            "size": floats(p["size"]),
            "matrix": [floats(row) for row in np.asarray(p["K"], dtype=np.float64)],
            "distortions": floats(dist[:4] if dist[4] == 0 else dist),
            "rotation": floats(cv2.Rodrigues(np.asarray(p["R"], dtype=np.float64))[0]),
            "translation": floats(np.asarray(p["t"], dtype=np.float64) / scale),
            "fisheye": False,
        }
    doc["metadata"] = {"adjusted": False, "error": 0.0}
    atomic_write_text(Path(path), tomli_w.dumps(doc))
