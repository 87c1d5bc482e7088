"""One camera's frames: a video file or an image folder, numbered the same way for detection and rendering.

Image folders are numbered by the last digits of the file names (:func:`mvpose.frames.frame_number`), or
by their sorted order when a name has none or two names share a number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from mvpose.frames import IMAGE_SUFFIXES, frame_number

__all__ = ["FrameSource", "open_frame_source", "video_frames", "image_frames", "index_image_folder"]

log = logging.getLogger(__name__)


def video_frames(path: Path, wanted: np.ndarray) -> Iterator[np.ndarray | None]:
    """Frames ``wanted`` (increasing camera frame numbers) of a video, None past its end or before 0."""
    cap = cv2.VideoCapture(str(path))
    pos = 0
    try:
        for f in wanted:
            if f < 0:
                yield None
                continue
            while pos < f and cap.grab():
                pos += 1
            ok, frame = cap.read() if pos == f else (False, None)
            pos += int(ok)
            yield frame if ok else None
    finally:
        cap.release()


def index_image_folder(folder: Path) -> dict[int, Path]:
    """Camera frame number -> image file of an image folder: the last digits of each file name, or
    the sorted order when a name has none or two names share a number. Detection and rendering
    both number frames through this, so overlays land on the frames the joints came from."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    numbers = [frame_number(p.name) for p in files]
    if any(n is None for n in numbers) or len(set(numbers)) < len(numbers):
        numbers = list(range(len(files)))
    return dict(zip(numbers, files))


def image_frames(folder: Path, wanted: np.ndarray) -> Iterator[np.ndarray | None]:
    """Frames ``wanted`` (camera frame numbers) of an image folder (:func:`index_image_folder`), None where there is none."""
    by_number = index_image_folder(folder)
    for f in wanted:
        path = by_number.get(int(f))
        yield None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)


@dataclass
class FrameSource:
    """One camera's frames: a video file or an image folder.

    Attributes:
        frames: (F,) camera frame numbers present (videos: ``0..count-1``; images: the last digits of the
            file names, or their sorted order when a name has none).
        size: ``(width, height)`` of the frames; None when nothing could be read.
    """

    name: str
    path: Path
    frames: np.ndarray
    size: tuple[int, int] | None
    files: dict[int, Path] = field(default_factory=dict)

    @property
    def is_video(self) -> bool:
        return self.path.is_file()

    def read(self, wanted: np.ndarray) -> Iterator[np.ndarray | None]:
        """Frames ``wanted`` (increasing camera frame numbers), None where there is none."""
        if self.is_video:
            yield from video_frames(self.path, wanted)
            return
        for f in wanted:
            path = self.files.get(int(f))
            image = None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)
            if path is not None and image is None:
                log.warning("camera %s: cannot read image %s; frame %d counts as missing", self.name, path, int(f))
            yield image


def open_frame_source(name: str, path: str | Path) -> FrameSource:
    """Index a camera's video or image folder without decoding it (one image is read for its size)."""
    path = Path(path)
    if path.is_file():
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                return FrameSource(name, path, np.zeros(0, np.int64), None)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            if count <= 0:  # some containers do not store it: count by demuxing
                count = 0
                while cap.grab():
                    count += 1
        finally:
            cap.release()
        return FrameSource(name, path, np.arange(count, dtype=np.int64), size if count else None)
    by_number = index_image_folder(path)
    size = None
    for p in list(by_number.values())[:3]:
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if image is not None:
            size = (image.shape[1], image.shape[0])
            break
    return FrameSource(name, path, np.array(sorted(by_number), dtype=np.int64), size, by_number)
