"""Qualisys Track Manager ``.qca.txt`` calibration exports (XML); read only."""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mvpose.geometry.calibration.common import CalibrationError, _check_rotation, check_unique_names, checked_camera, read_text

__all__ = ["QUALISYS_TO_OPENCV", "read_qualisys_calibration"]

logger = logging.getLogger("mvpose.geometry.calibration")  # the package's: issue kind "calibration"

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
    return checked_camera(where, name, K, dist, R, -R @ C, size, fields)


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
        root = ET.fromstring(read_text(path))
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
    check_unique_names(params, str(path))
    return {"": params}
