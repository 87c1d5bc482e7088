"""COCO person keypoints (single view) for the monocular baselines, read through pycocotools.

Layout::

    ROOT/annotations/person_keypoints_{train,val}2017.json
    ROOT/images/{train,val}2017/*.jpg     (or ROOT/{train,val}2017/*.jpg)

One sample per person instance with at least one labelled keypoint, not a crowd, and a box of
positive size after clipping to the image (HRNet's selection). The crop box comes from the
annotated box: widened to the crop's aspect ratio and enlarged 1.25 times.

COCO has no calibration. Each image gets a nominal pinhole camera (focal length = the longer image
side, principal point at the image centre, ``R = I``, ``t = 0``, no distortion) so that the crop
camera and token rays of the common sample format stay defined; ``has_3d`` is False.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mvpose.data import transforms as tf
from mvpose.data.dataset import (
    DatasetError,
    Group,
    MultiViewDataset,
    Reading,
    ViewRecord,
    check_images_exist,
    read_dataset,
)
from mvpose.data.registry import register_dataset
from mvpose.skeletons import get_skeleton

__all__ = ["COCODataset", "read_coco", "annotation_file", "image_folder", "nominal_intrinsics"]

log = logging.getLogger(__name__)

SPLITS = {"train": "train2017", "val": "val2017", "validation": "val2017", "test": "val2017",
          "train2017": "train2017", "val2017": "val2017"}
NUM_KEYPOINTS = 17


def annotation_file(root: str | Path, split: str) -> Path:
    return Path(root) / "annotations" / f"person_keypoints_{SPLITS[split]}.json"


def image_folder(root: str | Path, split: str) -> Path:
    """``ROOT/images/<split>2017`` if it exists, else ``ROOT/<split>2017``."""
    root = Path(root)
    nested = root / "images" / SPLITS[split]
    return nested if nested.is_dir() else root / SPLITS[split]


def nominal_intrinsics(width: float, height: float) -> np.ndarray:
    """(3, 3) stand-in intrinsics for an uncalibrated image (see module doc)."""
    f = float(max(width, height))
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def _clean_box(ann: dict, width: int, height: int) -> np.ndarray | None:
    """Box clipped to the image, in pixel-centre coordinates (a box ``w`` pixels wide spans ``w - 1``)."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1.0)), min(height - 1.0, y1 + max(0.0, h - 1.0))
    if ann.get("area", 1.0) <= 0 or x2 < x1 or y2 < y1:
        return None
    return np.array([x1, y1, x2 - x1, y2 - y1])


@register_dataset("coco")
def read_coco(
    root: str | Path,
    split: str = "train",
    views: int | Sequence[int] | None = None,
    frame_stride: int = 1,
    check_files: bool = True,
    input_hw: Sequence[int] = (256, 256),
) -> Reading:
    """Read a COCO keypoint split into single-view groups (V = 1).

    Args:
        root: COCO folder. split: "train" or "val".
        views: must be None or 1 (single-view data).
        frame_stride: keep every n-th instance (default 1: all).
        check_files: check that every image exists.
        input_hw: the crop ``(H, W)`` the samples will have: person boxes are widened to its aspect.

    Group fields: ``frame`` = ``image_id``; ``image_id`` and ``annotation_id`` also as extra fields.

    Returns:
        The :class:`~mvpose.data.dataset.Reading` with the pycocotools ground truth (``coco``) for
        keypoint AP; no 3D ground truth, so no MPJPE breakdown.

    Raises:
        DatasetError: a missing or malformed annotation file, or an empty split.
    """
    if split not in SPLITS:
        raise DatasetError(f"COCO: unknown split {split!r}; use one of {sorted(SPLITS)}")
    if views not in (None, 1, [0], (0,)):
        raise DatasetError(f"COCO: single-view data, views must be None or 1, got {views!r}")
    root = Path(root)
    path = annotation_file(root, split)
    folder = image_folder(root, split)
    split = SPLITS[split]
    if not path.is_file():
        raise DatasetError(f"{path}: COCO keypoint annotation file not found")
    from pycocotools.coco import COCO

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):  # pycocotools prints its progress
            coco = COCO(str(path))
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: not a COCO annotation file ({type(err).__name__}: {err})") from err
    log.debug("%s", buf.getvalue().strip())
    person = [c["id"] for c in coco.loadCats(coco.getCatIds()) if c.get("name") == "person"]
    if not person:
        raise DatasetError(f"{path}: no 'person' category")

    aspect = float(input_hw[1]) / float(input_hw[0])
    groups = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        width, height = int(info["width"]), int(info["height"])
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=person, iscrowd=False)):
            where = f"{path} annotation {ann.get('id')}"
            if ann.get("num_keypoints", 0) == 0:
                continue
            kps = np.asarray(ann.get("keypoints", []), dtype=np.float64)
            if kps.shape != (3 * NUM_KEYPOINTS,):
                raise DatasetError(f"{where}: field 'keypoints' must hold {3 * NUM_KEYPOINTS} numbers, found {kps.size}")
            box = _clean_box(ann, width, height)
            if box is None:
                continue
            center, scale = tf.box_to_center_scale(box, aspect, padding=1.25)
            kps = kps.reshape(NUM_KEYPOINTS, 3)
            view = ViewRecord(
                image=folder / info["file_name"], joints_2d=kps[:, :2], joints_vis=(kps[:, 2] > 0).astype(np.float64),
                center=center, scale=scale, K=nominal_intrinsics(width, height), R=np.eye(3), t=np.zeros(3),
                dist=np.zeros(5), camera_id=0, image_sizes=((width, height),),
            )
            groups.append(
                Group(views=[view], joints_3d=None, frame=int(image_id),
                      extra={"image_id": int(image_id), "annotation_id": int(ann["id"])})
            )
    if not groups:
        raise DatasetError(f"{path}: the split is empty (no person instance with keypoints)")
    if int(frame_stride) < 1:
        raise DatasetError(f"COCO: frame_stride must be >= 1, got {frame_stride}")
    groups = groups[:: int(frame_stride)]
    log.info("%s: %d person instances", path, len(groups))
    if check_files:
        check_images_exist(groups, f"COCO {split} ({path})")
    return Reading(groups, get_skeleton("coco"), [0], name=f"coco-{split}", split=split, root=root, coco=coco)


def COCODataset(root: str | Path, split: str = "train", views: int | Sequence[int] | None = None,
                **options: Any) -> MultiViewDataset:
    """COCO keypoint samples with V = 1 (format in :mod:`mvpose.data.dataset`): :func:`read_coco` into a
    :class:`~mvpose.data.dataset.MultiViewDataset`; ``options`` go to the reader or the dataset (both
    take ``input_hw``)."""
    return read_dataset(read_coco, root, split, views, **options)
