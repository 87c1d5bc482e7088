"""Calibration files: read the formats practitioners and datasets use, write three of them.

Every reader returns ``{rig_name: [camera params]}`` (rig name ``""`` for single-rig files), one
camera's params in the convention of :mod:`mvpose.geometry.calibration.common`. One module per
format (layouts and units in ``mvpose/calibration/README.md``):

- :mod:`~mvpose.geometry.calibration.mvpose_format` JSON or TOML, ``format = "mvpose-calibration"``,
  mm, one or several rigs; read/write.
- :mod:`~mvpose.geometry.calibration.pose2sim` Pose2Sim / anipose ``Calib.toml``; read/write.
- :mod:`~mvpose.geometry.calibration.opencv` ``cv2.FileStorage`` YAML or XML; read/write.
- :mod:`~mvpose.geometry.calibration.qualisys` QTM ``.qca.txt`` export; read only.

:mod:`~mvpose.geometry.calibration.formats` detects the format of a file and dispatches
(:func:`read_calibration`, :func:`load_calibration`, :func:`write_calibration`,
:func:`convert_calibration`); :mod:`~mvpose.geometry.calibration.summary` prints a rig as a table.
Dataset cameras live beside their readers: Human3.6M in :mod:`mvpose.data.h36m`, Ski-Pose in
:mod:`mvpose.data.skipose`.
"""

from mvpose.geometry.calibration.common import (
    RECOGNISED,
    RIG_SPREAD_MM,
    RIG_SPREAD_TYPICAL_MM,
    UNITS_MM,
    CalibrationError,
    cameras_from_params,
    params_from_cameras,
    rig_units_hint,
    tomllib,
)
from mvpose.geometry.calibration.formats import (
    READ_FORMATS,
    WRITE_FORMATS,
    calibration_units,
    convert_calibration,
    detect_format,
    load_calibration,
    read_calibration,
    write_calibration,
)
from mvpose.geometry.calibration.mvpose_format import (
    FORMAT_TAG,
    camera_params_from_dict,
    read_mvpose_calibration,
    write_mvpose_calibration,
)
from mvpose.geometry.calibration.opencv import read_opencv_calibration, write_opencv_calibration
from mvpose.geometry.calibration.pose2sim import (
    POSE2SIM_CAMERA_KEYS,
    read_pose2sim_calibration,
    write_pose2sim_calibration,
)
from mvpose.geometry.calibration.qualisys import QUALISYS_TO_OPENCV, read_qualisys_calibration
from mvpose.geometry.calibration.summary import calibration_summary

__all__ = [
    "CalibrationError",
    "FORMAT_TAG",
    "POSE2SIM_CAMERA_KEYS",
    "QUALISYS_TO_OPENCV",
    "READ_FORMATS",
    "RECOGNISED",
    "RIG_SPREAD_MM",
    "RIG_SPREAD_TYPICAL_MM",
    "UNITS_MM",
    "WRITE_FORMATS",
    "calibration_summary",
    "calibration_units",
    "camera_params_from_dict",
    "cameras_from_params",
    "convert_calibration",
    "detect_format",
    "load_calibration",
    "params_from_cameras",
    "read_calibration",
    "read_mvpose_calibration",
    "read_opencv_calibration",
    "read_pose2sim_calibration",
    "read_qualisys_calibration",
    "rig_units_hint",
    "tomllib",
    "write_calibration",
    "write_mvpose_calibration",
    "write_opencv_calibration",
    "write_pose2sim_calibration",
]
