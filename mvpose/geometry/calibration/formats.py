"""Any calibration file: format detection, read / load / write / convert by format name."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from mvpose.geometry.calibration.common import (
    RECOGNISED,
    CalibrationError,
    agree_units,
    cameras_from_params,
    read_text,
    rig_units_hint,
    tomllib,
)
from mvpose.geometry.calibration.mvpose_format import FORMAT_TAG, read_mvpose_calibration, write_mvpose_calibration
from mvpose.geometry.calibration.opencv import _open_filestorage, read_opencv_calibration, write_opencv_calibration
from mvpose.geometry.calibration.pose2sim import POSE2SIM_CAMERA_KEYS, read_pose2sim_calibration, write_pose2sim_calibration
from mvpose.geometry.calibration.qualisys import read_qualisys_calibration
from mvpose.geometry.calibration.summary import calibration_summary
from mvpose.geometry.camera import Cameras

__all__ = [
    "READ_FORMATS", "WRITE_FORMATS", "detect_format", "read_calibration", "calibration_units", "load_calibration",
    "write_calibration", "convert_calibration",
]

# The package's logger: the capture issue log files its warnings under the kind "calibration".
logger = logging.getLogger("mvpose.geometry.calibration")

READ_FORMATS = ("mvpose", "pose2sim", "opencv", "qualisys")
WRITE_FORMATS = ("mvpose", "pose2sim", "opencv")


def detect_format(path: str | Path) -> str:
    """Name the format of a calibration file (one of ``READ_FORMATS``) by suffix and content."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".qca.txt"):
        return "qualisys"
    text = read_text(path)
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
        agree_units(units, "mm", f"{path}: {fmt} calibrations are in mm")
        rigs = readers[fmt](path)
    used = calibration_units(path, fmt, units)
    # What the user can do about it depends on the format: these two leave the unit open, the others fix mm.
    remedy = ("state the unit: units='m'|'cm'|'mm' in the file, or `--calibration-units`" if fmt in ("pose2sim", "opencv")
              else f"{fmt} calibrations are in mm by definition: convert the file's translations to mm")
    for name, params in rigs.items():
        hint = rig_units_hint(params, used) if params else None
        if hint:
            rig = f" rig {name!r}" if name else ""
            logger.warning("%s%s: %s (%s)", path, rig, hint, remedy)
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
        doc = tomllib.loads(read_text(Path(path)))
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


def convert_calibration(src: str | Path, dst: str | Path, to: str = "mvpose", rig: str | None = None,
                        units: str | None = None) -> str:
    """Convert a calibration file (any readable format) to ``to``, written atomically.

    Args:
        src: input file; format detected.
        dst: output file; ``.json``/``.toml`` for mvpose, ``.toml`` for pose2sim, ``.yml``/``.xml`` for opencv.
        to: ``"mvpose"``, ``"pose2sim"`` or ``"opencv"``.
        rig: rig to take from a multi-rig file; required when writing a single-rig format.
        units: length unit of ``src``'s translations where its format does not fix it (as :func:`read_calibration`,
            ``--calibration-units``); the output is written in its format's own unit.

    Returns:
        A summary: what was written, then one table per rig.
    """
    src, dst = Path(src), Path(dst)
    fmt_in = detect_format(src)
    rigs = read_calibration(src, fmt_in, units=units)
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
