"""Frame files: the suffixes of images and videos, and the frame number in a file name.

A leaf module (standard library only), shared by board calibration and the capture pipeline.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "frame_number"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm")

_DIGITS = re.compile(r"(\d+)")


def frame_number(name: str) -> int | None:
    """Last run of digits in a file name (``cam1_000000000042_keypoints.json`` -> 42), None if none."""
    runs = _DIGITS.findall(Path(name).name)
    return int(runs[-1]) if runs else None
