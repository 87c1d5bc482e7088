"""Capture outputs: HDF5 poses, OpenSim / Pose2Sim TRC markers, JSON summaries; every file written atomically.

``poses3d.h5`` layout (T frames, V cameras, J joints)::

    poses3d             (T, J, 3) float64  world millimetres, NaN where missing
    points2d            (T, V, J, 2) float64  the 2D keypoints of the chosen person (after frame offsets)
    confidence          (T, V, J) float64  detector confidences (0 where missing)
    reprojection_error  (T, V, J) float64  pixels, final 3D point vs 2D keypoint (NaN where either is missing)
    used                (T, V, J) bool     views that entered the triangulation
    filled              (T, J) bool        joints filled by gap interpolation (not measured)
    person              (T, V) int64       index of the chosen detection in the frame, -1 where none
    frame_index         (T,) int64         frame numbers of the capture
    attrs: joint_set, joints, cameras, units = "mm", fps, options (JSON)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["atomic_path", "read_trc", "write_h5", "write_json", "write_text", "write_trc", "zup_to_yup"]


@contextlib.contextmanager
def atomic_path(path: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only if the block succeeds.

    Readers never see a half-written file (or folder, with ``is_dir``). The temporary name keeps the suffix,
    so tools that pick a codec from it (``cv2.VideoWriter``) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    if is_dir:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    try:
        yield tmp
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON; NaN and infinity become ``null`` (JSON has neither)."""
    return write_text(path, json.dumps(_jsonable(obj), indent=1) + "\n")


def write_h5(path: str | Path, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> Path:
    """Write named arrays (compressed) and attributes to an HDF5 file atomically.

    Lists of strings in ``attrs`` are stored as string arrays; dicts as JSON text.
    """
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, arr in arrays.items():
                arr = np.asarray(arr)
                f.create_dataset(name, data=arr, compression="gzip" if arr.size > 1024 else None, compression_opts=1 if arr.size > 1024 else None)
            for key, value in attrs.items():
                if isinstance(value, Mapping):
                    value = json.dumps(_jsonable(value))
                elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                    value = np.array(value, dtype=h5py.string_dtype())
                elif value is None:
                    value = "none"
                f.attrs[key] = value
    return Path(path)


def zup_to_yup(points: np.ndarray) -> np.ndarray:
    """World Z-up ``(X, Y, Z)`` -> OpenSim Y-up ``(Y, Z, X)`` (a rotation; Pose2Sim's ``zup2yup``)."""
    return np.asarray(points)[..., [1, 2, 0]]


def write_trc(
    path: str | Path,
    points_mm: np.ndarray,
    names: Sequence[str],
    fps: float,
    frame_index: np.ndarray | None = None,
    z_up: bool = True,
) -> Path:
    """Write a TRC marker file as OpenSim and Pose2Sim read it: metres, tab-separated, Y up.

    Header (five lines)::

        PathFileType  4  (X/Y/Z)  <file name>
        DataRate  CameraRate  NumFrames  NumMarkers  Units  OrigDataRate  OrigDataStartFrame  OrigNumFrames
        <fps>  <fps>  <T>  <J>  m  <fps>  <first frame>  <T>
        Frame#  Time  <name 1>  <tab><tab>  <name 2> ...
        <tab><tab>  X1  Y1  Z1  X2  Y2  Z2 ...

    then one row per frame: ``Frame#`` (1-based), time in seconds from the first frame, ``x y z`` per marker.
    Missing markers are empty fields (OpenSim reads them as missing).

    Args:
        points_mm: (T, J, 3) world millimetres.
        names: J marker names.
        fps: frame rate.
        frame_index: (T,) capture frame numbers (default 0..T-1): the time column follows them.
        z_up: the world is Z-up (mvpose's convention): rotate to OpenSim's Y-up as Pose2Sim does.
    """
    pts = np.asarray(points_mm, dtype=np.float64) / 1000.0
    T, J, _ = pts.shape
    if len(names) != J:
        raise ValueError(f"write_trc: {len(names)} marker names for {J} markers")
    if z_up:
        pts = zup_to_yup(pts)
    frames = np.arange(T) if frame_index is None else np.asarray(frame_index)
    time = (frames - frames[0]) / fps if T else frames.astype(float)
    rate = f"{fps:g}"
    lines = [
        f"PathFileType\t4\t(X/Y/Z)\t{Path(path).name}",
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
        f"{rate}\t{rate}\t{T}\t{J}\tm\t{rate}\t{int(frames[0]) if T else 0}\t{T}",
        "Frame#\tTime\t" + "\t\t\t".join(names) + "\t\t",
        "\t\t" + "\t".join(f"X{i + 1}\tY{i + 1}\tZ{i + 1}" for i in range(J)),
    ]
    cells = np.char.mod("%.6f", pts.reshape(T, J * 3))
    cells[~np.isfinite(pts.reshape(T, J * 3))] = ""
    rows = ["\t".join([str(i + 1), f"{t:.6f}", *row]) for i, (t, row) in enumerate(zip(time, cells.tolist()))]
    return write_text(path, "\n".join(lines + rows) + "\n")


def read_trc(path: str | Path) -> tuple[dict[str, str], list[str], np.ndarray, np.ndarray]:
    """Read a TRC file written by :func:`write_trc` (or OpenSim / Pose2Sim).

    Returns:
        header: the fields of lines 2-3 (``DataRate``, ``NumFrames``, ``Units``, ...).
        names: marker names.
        time: (T,) seconds.
        points: (T, J, 3) in the file's units and axes, NaN where empty.
    """
    lines = Path(path).read_text().splitlines()
    if len(lines) < 5 or not lines[0].startswith("PathFileType"):
        raise ValueError(f"{path}: not a TRC file (first line must start with 'PathFileType')")
    header = dict(zip(lines[1].split("\t"), lines[2].split("\t")))
    names = [n for n in lines[3].split("\t")[2:] if n]
    J = len(names)
    rows = [line.split("\t") for line in lines[5:] if line.strip()]
    data = np.array([[float(v) if v.strip() else np.nan for v in (r + [""] * (2 + 3 * J - len(r)))[:2 + 3 * J]] for r in rows])
    data = data.reshape(len(rows), 2 + 3 * J)
    return header, names, data[:, 1], data[:, 2:].reshape(-1, J, 3)
