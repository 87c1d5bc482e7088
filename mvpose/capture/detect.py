"""2D joints from an mvpose model run on the frames of a recorded capture (`mvpose triangulate --checkpoint`).

The model path ends where the keypoints path starts: it produces the same synchronised
``(T, V, 1, J, 3)`` detections ``(x, y, confidence)`` in original pixels as the keypoint readers, wrapped
in a :class:`~mvpose.capture.pipeline.Capture`, so person selection, robust triangulation, temporal
processing, outputs, report and pictures are shared.

Per batch of ``batch_size`` capture frames (all views of each):

1. read the frames of every camera (camera frame ``i + offset`` for capture frame ``i``; threads per
   camera decode the next batch while the model runs);
2. a person box per view: from the box file of that camera when it has a box for the frame; otherwise the
   bounding box of the previous frames' 3D pose reprojected into the view (its centroid moved on at the
   last measured velocity, so the frames of a batch do not lag); when no pose is known (first frame, or the
   person was lost for ``reinit_after`` frames), the model first runs on the whole frames, letterboxed to
   its input, and those keypoints are triangulated to start the track;
3. the box is made the aspect of the model input and padded (``padding``, 1.25 like HRNet's person
   crops), cropped with :func:`mvpose.data.transforms.crop_affine` (UDP pixel convention), and the crops
   go through the model as the training data did: single-view models see the ``B x V`` crops as one batch,
   multi-view PPT sees the ``V`` views of a frame as one sample with the world rays of the crop cameras
   (:func:`mvpose.engine.evaluate.forward_views`);
4. heatmaps (or SimCC keypoints) are decoded (the model's ``predict``, :class:`mvpose.models.base.PoseModel`) and
   mapped back to original pixels through the inverse crop affine;
5. the batch is triangulated (:func:`mvpose.capture.pipeline.triangulate_frames`, the capture's options)
   to move the track on.

Box files (``--boxes DIR``), one per camera named as the camera (``DIR/<camera>.csv`` or ``.json``), in
original pixels of the camera's own frames (camera frame numbers, before ``--offsets``):

- CSV with a header naming at least ``frame,x0,y0,x1,y1`` (other columns are ignored; with a ``score``
  column the highest-scoring row of a frame is used, otherwise the first);
- JSON: a list of ``{"frame": 12, "box": [x0, y0, x1, y1], "score": 0.9}`` (``score`` optional).

Several people (``--people``): a ``person`` column / key names the person of each box; each person is then
followed on its own, with its own crops and track, from frames decoded once for all of them
(:func:`detect_captures`, called by :func:`mvpose.capture.multi.detect_people`).

A frame without a box in the file falls back to tracking. The boxes used are written back as
``OUT/boxes/<camera>.csv`` in the same format (with a ``source`` column, ``file`` or ``track``), so a run can
be repeated with exactly the same crops.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import json
import logging
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mvpose.capture.frames import FrameSource, open_frame_source
from mvpose.capture.issues import IssueLog
from mvpose.capture.keypoints import find_camera_sources, resolve_joint_set
from mvpose.capture.stages import check_image_bounds, check_offsets, frame_axis, match_cameras, triangulate_frames
from mvpose.capture.types import Capture, CaptureError, CaptureOptions
from mvpose.data import transforms as tf
from mvpose.engine.decode import crop_to_original
from mvpose.engine.evaluate import forward_views, is_multiview
from mvpose.frames import VIDEO_SUFFIXES
from mvpose.geometry.calibration import calibration_units, load_calibration
from mvpose.geometry.camera import Cameras
from mvpose.skeletons import get_skeleton

__all__ = [
    "BOX_COLUMNS",
    "BOX_SOURCES",
    "DetectOptions",
    "Detection",
    "Detector",
    "FrameSource",
    "box_file_people",
    "boxes_around",
    "detect_capture",
    "detect_captures",
    "infer",
    "load_detector",
    "open_frame_source",
    "read_box_file",
    "write_detection",
]

log = logging.getLogger(__name__)

BOX_COLUMNS = ("frame", "x0", "y0", "x1", "y1")
# Where a view's crop came from; index = code in Detection.box_source (0: no crop, the frame was missing).
BOX_SOURCES = ("none", "file", "track", "frame")
# Joint set of the checkpoint's training data (config ``dataset.name``); Ski-Pose is index-aligned with H36M.
_DATASET_JOINTS = {"h36m": "h36m", "synth": "h36m", "skipose": "h36m", "coco": "coco"}
# Smallest box side (px) made from joints: a pose seen end-on must still give a usable crop.
MIN_BOX_PX = 16.0


class _Timer:
    def __init__(self, timings: dict[str, float], key: str) -> None:
        self.timings, self.key = timings, key

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.key] = self.timings.get(self.key, 0.0) + time.perf_counter() - self.start


@dataclass
class DetectOptions:
    """Options of the model path (the CLI flags ``--checkpoint``, ``--boxes``, ``--batch-size``, ``--device``).

    Attributes:
        checkpoint: model checkpoint written by ``mvpose train``.
        boxes: folder with one box file per camera (see module doc); None: tracked boxes only.
        batch_size: capture frames per forward pass (each with its V views). Tracked boxes come from the
            pose before the batch, so larger batches run faster but follow fast motion less closely.
        device: torch device (``cpu``, ``cuda``, ``cuda:1``).
        padding: box enlargement before cropping (HRNet's 1.25).
        reinit_after: frames without a tracked pose after which the whole-frame pass runs again.
        min_track_joints: triangulated joints a frame needs to move the track on (None: max(4, J // 2)).
        search_refine: extra crop passes on the frame of a whole-frame search, each around the pose of the
            previous pass, before the frame's final crop pass.
    """

    checkpoint: str | Path
    boxes: str | Path | None = None
    batch_size: int = 8
    device: str = "cpu"
    padding: float = 1.25
    reinit_after: int = 10
    min_track_joints: int | None = None
    search_refine: int = 2

    stage: ClassVar[str] = "detect"  # a KeypointSource (mvpose.capture.types): run_capture times load() as detect_s

    def load(
        self,
        calibration: str | Path,
        options: CaptureOptions,
        *,
        rig: str | None = None,
        videos: str | Path | None = None,
        images: str | Path | None = None,
        timings: dict[str, float] | None = None,
        issues: IssueLog | None = None,
    ) -> Capture:
        """The capture the model finds in the frames: :func:`detect_capture` with these options."""
        return detect_capture(calibration, self, options, rig=rig, videos=videos, images=images, timings=timings,
                              issues=issues)

    def write(self, capture: Capture, out_dir: str | Path) -> dict[str, Path]:
        """``detection.json`` and ``boxes/<camera>.csv`` (:func:`write_detection`)."""
        return write_detection(capture.detection, out_dir) if capture.detection is not None else {}

    def check(self) -> None:
        if self.batch_size < 1:
            raise CaptureError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.padding >= 1.0:
            raise CaptureError(f"box padding must be >= 1, got {self.padding}")
        if self.search_refine < 0:
            raise CaptureError(f"search_refine must be >= 0, got {self.search_refine}")
        if self.reinit_after < 1:
            raise CaptureError(f"reinit_after must be >= 1, got {self.reinit_after}")
        try:
            dev = torch.device(self.device)
        except RuntimeError:
            raise CaptureError(f"device: expected cpu, cuda or cuda:N, got {self.device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CaptureError(f"device {self.device!r}: CUDA is not available on this machine (use --device cpu)")


# --------------------------------------------------------------------------------------------- model
@dataclass
class Detector:
    """A loaded checkpoint and what inference needs to know about it.

    Attributes:
        input_hw: model input ``(H, W)``.
        token_grid: ``(h, w)`` token grid of the rays given to multi-view models (None otherwise).
        decode: heatmap decoding of the checkpoint's evaluation config.
    """

    model: torch.nn.Module
    name: str
    input_hw: tuple[int, int]
    num_joints: int
    joint_set: str
    multiview: bool
    token_grid: tuple[int, int] | None
    decode: str
    device: torch.device
    checkpoint: str

    @property
    def aspect(self) -> float:
        """Width / height of the model input."""
        return self.input_hw[1] / self.input_hw[0]


def load_detector(checkpoint: str | Path, device: str | torch.device = "cpu", joints: str | None = None) -> Detector:
    """Load a checkpoint for inference and name the joint set it predicts.

    The joint set follows the training data (``h36m`` for Human3.6M, Ski-Pose and the synthetic set,
    ``coco`` for COCO); ``joints`` names it explicitly (checked against the model's joint count).
    """
    from mvpose.engine.runner import load_model

    dev = torch.device(device)
    model, cfg = load_model(checkpoint, dev)
    mcfg = dict(getattr(model, "config", None) or cfg["model"])
    input_hw = tuple(int(v) for v in mcfg.get("image_size") or cfg["dataset"]["image_size"])
    J = int(mcfg.get("num_joints") or cfg["model"].get("num_joints", 17))
    dataset = str(cfg["dataset"].get("name", "")).lower()
    where = f"checkpoint {checkpoint}"
    if joints is not None:
        joint_set = resolve_joint_set(J, joints, where)
    elif dataset in _DATASET_JOINTS and get_skeleton(_DATASET_JOINTS[dataset]).num_joints == J:
        joint_set = _DATASET_JOINTS[dataset]
    else:
        raise CaptureError(f"{where}: a model of {J} joints trained on dataset {dataset!r}; the joint set is not "
                           "known, name it with --joints")
    multiview = is_multiview(model)
    grid = getattr(model, "token_grid", None)
    return Detector(model, str(mcfg.get("name", cfg["model"]["name"])), (input_hw[0], input_hw[1]), J, joint_set,
                    multiview, tuple(grid) if multiview and grid is not None else None,
                    str(cfg.get("eval", {}).get("decode", "udp")), dev, str(checkpoint))


def _crop_batch(
    detector: Detector, images: Sequence[Sequence[np.ndarray | None]], boxes: np.ndarray, padding: np.ndarray,
    cameras: Cameras, frames: np.ndarray,
) -> dict[str, Any]:
    """Crops of N samples of V views in the sample format of :mod:`mvpose.data.dataset`.

    Args:
        images: N lists of V frames (None: missing).
        boxes: (N, V, 4) ``x0, y0, x1, y1`` original pixels.
        padding: (N, V) box enlargement.
        cameras: rig ``(V,)``.
        frames: (N,) capture frame numbers.

    Returns:
        ``image (N, V, 3, H, W)``, ``affine (N, V, 2, 3)`` float64, ``view_mask (N, V)``, ``frame (N,)``,
        ``camera_ids (N, V)`` and, for multi-view models, ``rays (N, V, h*w, 3)`` of the crop cameras.
    """
    H, W = detector.input_hw
    N, V = boxes.shape[:2]
    xywh = np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)
    center, scale = tf.box_to_center_scale(xywh, detector.aspect, 1.0)
    affine = tf.crop_affine(center, scale * padding[..., None], 0.0, (H, W))  # (N, V, 2, 3)
    crops = torch.zeros(N, V, 3, H, W)
    mask = torch.zeros(N, V, dtype=torch.bool)
    for n, v in itertools.product(range(N), range(V)):
        if images[n][v] is not None:
            crops[n, v] = tf.image_to_tensor(tf.warp_image(images[n][v], affine[n, v], (H, W)))
            mask[n, v] = True
    batch = {
        "image": crops, "affine": torch.from_numpy(affine), "view_mask": mask,
        "frame": torch.as_tensor(frames, dtype=torch.int64),
        "camera_ids": torch.arange(V).expand(N, V),
    }
    if detector.multiview:
        tokens = tf.token_centers((H, W), detector.token_grid)  # (h*w, 2)
        crop_cams = cameras.crop(batch["affine"], (W, H))  # (N, V)
        batch["rays"] = crop_cams.pixel_rays(tokens.to(crop_cams.dtype).expand(N, V, -1, -1)).float()
    return batch


@torch.no_grad()
def infer(detector: Detector, batch: dict[str, Any]) -> np.ndarray:
    """Run the model on a crop batch and map the joints back to original pixels.

    Returns:
        (N, V, J, 3) ``(x, y, confidence)``; NaN ``x, y`` and confidence 0 for missing views and for joints
        whose heatmap peak is not positive (nothing found), as the keypoint readers mark missing joints.
    """
    out = forward_views(detector.model, batch, detector.device)
    xy, conf = detector.model.predict(out, detector.input_hw, detector.decode)  # the model contract
    xy = crop_to_original(xy.double(), batch["affine"].double())
    conf = conf.double()
    ok = batch["view_mask"][..., None] & (conf > 0) & xy.isfinite().all(dim=-1)
    xy = torch.where(ok[..., None], xy, torch.full_like(xy, float("nan")))
    return torch.cat([xy, torch.where(ok, conf, torch.zeros_like(conf))[..., None]], dim=-1).numpy()


# --------------------------------------------------------------------------------------------- boxes
def _box_rows(path: str | Path) -> list[tuple[int, float, list[float], str]]:
    """Rows ``(frame, score, box, person)`` of a box file (see module doc); person ``""`` when not given."""
    path = Path(path)
    rows: list[tuple[int, float, list[float], str]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(path.read_text()))
        fields = [f.strip() for f in reader.fieldnames or []]
        missing = [c for c in BOX_COLUMNS if c not in fields]
        if missing:
            raise CaptureError(f"{path}: box file needs a header with columns {','.join(BOX_COLUMNS)}; "
                               f"missing {','.join(missing)} (found {','.join(fields) or 'no header'})")
        for i, raw in enumerate(reader, start=2):
            rec = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(rec.values()):
                continue
            try:
                rows.append((int(rec["frame"]), float(rec.get("score") or 0.0), [float(rec[c]) for c in BOX_COLUMNS[1:]],
                             rec.get("person", "")))
            except ValueError:
                raise CaptureError(f"{path} line {i}: expected an integer frame and numbers x0,y0,x1,y1, found "
                                   f"{','.join(rec.get(c, '') for c in BOX_COLUMNS)}") from None
    elif path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text())
        except ValueError as err:
            raise CaptureError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(doc, list):
            raise CaptureError(f"{path}: expected a list of {{\"frame\", \"box\": [x0, y0, x1, y1]}} records")
        for i, rec in enumerate(doc):
            try:
                box = [float(v) for v in rec["box"]]
                if len(box) != 4:
                    raise ValueError
                rows.append((int(rec["frame"]), float(rec.get("score", 0.0)), box, str(rec.get("person", "")).strip()))
            except (KeyError, TypeError, ValueError):
                raise CaptureError(f"{path} record {i}: expected {{\"frame\": int, \"box\": [x0, y0, x1, y1]}}, "
                                   f"found {json.dumps(rec)[:120]}") from None
    else:
        raise CaptureError(f"{path}: box files are .csv or .json")
    return rows


def read_box_file(path: str | Path, person: str | None = None) -> dict[int, np.ndarray]:
    """One camera's box file (CSV or JSON, see module doc) -> ``{camera frame: (4,) x0, y0, x1, y1}``.

    Args:
        person: only the boxes of this person (the file's ``person`` column / key); None: every box.

    Raises:
        CaptureError naming the file, the row or field, and what was expected.
    """
    out: dict[int, np.ndarray] = {}
    best: dict[int, float] = {}
    for frame, score, box, who in _box_rows(path):
        if person is not None and who != person:
            continue
        b = np.asarray(box, dtype=np.float64)
        if not np.isfinite(b).all():
            continue
        if not (b[2] > b[0] and b[3] > b[1]):
            raise CaptureError(f"{path}: frame {frame}: box {box} needs x1 > x0 and y1 > y0")
        if frame not in out or score > best[frame]:
            out[frame], best[frame] = b, score
    return out


def box_file_people(folder: str | Path, names: Sequence[str], calibrated: Sequence[str]) -> list[str]:
    """The person ids of a box folder's files (the ``person`` column / key), sorted (numbers numerically).

    Raises:
        CaptureError: as :func:`read_box_file`, or a box without a person id.
    """
    sources = _box_sources(folder, calibrated)
    found: set[str] = set()
    for name in names:
        if name in sources:
            for frame, _, _, who in _box_rows(sources[name]):
                if not who:
                    raise CaptureError(f"{sources[name]}: frame {frame}: several people need a person id per box "
                                       "(a 'person' column in CSV, a \"person\" key in JSON)")
                found.add(who)
    return sorted(found, key=lambda p: (not p.isdigit(), int(p) if p.isdigit() else 0, p))


def _box_sources(folder: str | Path, calibrated: Sequence[str]) -> dict[str, Path]:
    sources = find_camera_sources(folder, (".csv", ".json"))
    unknown = [n for n in sources if n not in calibrated]
    if unknown:
        raise CaptureError(f"boxes {folder}: {', '.join(unknown)} not in the calibration (names must match exactly); "
                           f"calibration cameras: {', '.join(calibrated)}; box files: {', '.join(sources)}")
    if not sources:
        raise CaptureError(f"boxes {folder}: no <camera>.csv or <camera>.json box file")
    return sources


def _read_boxes(folder: str | Path | None, names: Sequence[str], calibrated: Sequence[str],
                person: str | None = None) -> dict[str, dict[int, np.ndarray]]:
    if folder is None:
        return {}
    sources = _box_sources(folder, calibrated)
    return {n: read_box_file(sources[n], person) for n in names if n in sources}


def boxes_around(points: np.ndarray, valid: np.ndarray, min_size: float = MIN_BOX_PX) -> np.ndarray:
    """Bounding boxes of the valid points.

    Args:
        points: (..., J, 2) pixels.
        valid: (..., J) bool.
        min_size: smallest side (the box grows around its centre).

    Returns:
        (..., 4) ``x0, y0, x1, y1``; NaN where fewer than two points are valid.
    """
    p = np.where(valid[..., None], points, np.nan)
    enough = valid.sum(axis=-1) >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN boxes, masked below
        lo, hi = np.nanmin(p, axis=-2), np.nanmax(p, axis=-2)
    c, half = (lo + hi) / 2, np.maximum(hi - lo, min_size) / 2
    box = np.concatenate([c - half, c + half], axis=-1)
    return np.where(enough[..., None], box, np.nan)


# --------------------------------------------------------------------------------------------- tracking
class _Track:
    """The last two measured 3D poses; predicts later frames at constant centroid velocity."""

    def __init__(self, min_joints: int, max_age: int) -> None:
        self.min_joints, self.max_age = min_joints, max_age
        self.frames: list[int] = []
        self.poses: list[np.ndarray] = []

    def update(self, frames: np.ndarray, points3d: np.ndarray) -> np.ndarray:
        """Take the frames whose pose has enough joints; returns (N,) bool, the frames taken."""
        good = np.isfinite(points3d).all(axis=-1).sum(axis=-1) >= self.min_joints
        for f, X in zip(frames[good], points3d[good]):
            if self.frames and self.frames[-1] == int(f):  # the crops' pose replaces the search's
                self.frames, self.poses = self.frames[:-1], self.poses[:-1]
            self.frames, self.poses = (self.frames + [int(f)])[-2:], (self.poses + [X])[-2:]
        return good

    def lost(self, frame: int) -> bool:
        return not self.frames or frame - self.frames[-1] > self.max_age

    def predict(self, frames: np.ndarray) -> np.ndarray | None:
        """(N,) frames -> (N, J, 3) predicted poses, None when lost."""
        if self.lost(int(frames[0])):
            return None
        X, f1 = self.poses[-1], self.frames[-1]
        velocity = np.zeros(3)
        if len(self.frames) == 2 and f1 - self.frames[0] <= self.max_age:
            both = np.isfinite(X).all(-1) & np.isfinite(self.poses[0]).all(-1)
            if both.any():
                velocity = (X[both].mean(0) - self.poses[0][both].mean(0)) / (f1 - self.frames[0])
        return X[None] + (np.asarray(frames) - f1)[:, None, None] * velocity


def _tracked_boxes(points3d: np.ndarray, cameras: Cameras, sizes: np.ndarray) -> np.ndarray:
    """(N, J, 3) poses -> (N, V, 4) boxes of their reprojection; NaN where unusable.

    A box needs two joints in front of the camera and must overlap the image; a box far larger than the
    image means a pose that went wrong, so it counts as lost.
    """
    X = torch.from_numpy(points3d).unsqueeze(-3)  # (N, 1, J, 3)
    uv = cameras.project(X).numpy()
    depth = cameras.depth(X).numpy()
    valid = (depth > 0) & np.isfinite(uv).all(-1)
    boxes = boxes_around(uv, valid)
    size = sizes[None]  # (1, V, 2)
    overlaps = (boxes[..., 2:] > 0).all(-1) & (boxes[..., :2] < size).all(-1)
    sane = (boxes[..., 2:] - boxes[..., :2] < 4 * size).all(-1)
    return np.where((overlaps & sane)[..., None], boxes, np.nan)


# --------------------------------------------------------------------------------------------- capture
class BoxTracker:
    """Where the model path crops each frame and view, and the 3D pose that moves the crops on.

    A view's box comes from its box file, else from the tracked pose reprojected into the view
    (:func:`_tracked_boxes`), else the whole frame (letterboxed). Each :meth:`run_pass` crops, runs the
    model, triangulates (the capture's options) and moves the track (:class:`_Track`) on.

    Args:
        frame_index: (T,) capture frame numbers. file_boxes: (T, V, 4) boxes of the box files, NaN where
            none. frame_sizes: (V, 2) frame ``(W, H)``. timings: accumulates ``detect_crop_s``,
            ``detect_model_s`` and ``detect_track_s``.
    """

    def __init__(self, detector: Detector, detect: DetectOptions, options: CaptureOptions, cameras: Cameras,
                 frame_index: np.ndarray, file_boxes: np.ndarray, frame_sizes: np.ndarray,
                 timings: dict[str, float]) -> None:
        self.detector, self.cameras, self.timings, self.padding = detector, cameras, timings, detect.padding
        self.frame_index, self.file_boxes, self.frame_sizes = frame_index, file_boxes, frame_sizes
        V = len(frame_sizes)
        self.whole = np.concatenate([np.full((V, 2), -0.5), frame_sizes - 0.5], axis=-1)  # (V, 4) letterbox boxes
        self.track = _Track(detect.min_track_joints or max(4, detector.num_joints // 2), detect.reinit_after)
        self.tri_opts = dataclasses.replace(options, progress=False)

    def lost(self, frame: int) -> bool:
        """No tracked pose recent enough for capture frame ``frame``."""
        return self.track.lost(frame)

    def run_pass(self, rows: list, box: np.ndarray, pad: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        """Crop, infer and triangulate some frames, moving the track on; returns their (N, V, J, 3)."""
        with _Timer(self.timings, "detect_crop_s"):
            batch = _crop_batch(self.detector, rows, box, pad, self.cameras, numbers)
        with _Timer(self.timings, "detect_model_s"):
            kp = infer(self.detector, batch)
        with _Timer(self.timings, "detect_track_s"):
            X, _ = triangulate_frames(torch.from_numpy(kp), self.cameras, self.tri_opts)
            self.track.update(numbers, X.numpy())
        return kp

    def choose_boxes(self, s: int, e: int, avail: np.ndarray, has_file: np.ndarray) -> tuple[np.ndarray, ...]:
        """Boxes (n, V, 4), paddings (n, V) and sources (n, V) of capture rows ``s:e``: file, track, whole."""
        with _Timer(self.timings, "detect_track_s"):
            pred = self.track.predict(self.frame_index[s:e])
            tracked = (_tracked_boxes(pred, self.cameras, self.frame_sizes) if pred is not None
                       else np.full((e - s, len(self.frame_sizes), 4), np.nan))
        use_track = avail & ~has_file & np.isfinite(tracked).all(-1)
        box = np.where(has_file[..., None], self.file_boxes[s:e], np.where(use_track[..., None], tracked, self.whole[None]))
        pad = np.where(has_file | use_track, self.padding, 1.0)
        return box, pad, np.where(has_file, 1, np.where(use_track, 2, 3)) * avail


@dataclass
class Detection:
    """What the model path did, for ``detection.json`` and ``boxes/<camera>.csv``.

    Attributes:
        boxes: (T, V, 4) boxes cropped (before padding), NaN where the view was missing.
        box_source: (T, V) int8 index into :data:`BOX_SOURCES`.
        camera_frames: (T, V) camera frame numbers.
        info: model, options, counts and timings.
    """

    boxes: np.ndarray
    box_source: np.ndarray
    camera_frames: np.ndarray
    names: list[str]
    info: dict[str, Any]


class _Prefetch:
    """Frames of every camera in capture order; with a thread pool the next ``chunk`` frames of each camera
    are decoded while the model runs (OpenCV releases the GIL while decoding)."""

    def __init__(self, readers: list[Iterator], total: int, chunk: int, pool: ThreadPoolExecutor | None) -> None:
        self.readers, self.left, self.chunk, self.pool = readers, total, chunk, pool
        self.rows: list[list[np.ndarray | None]] = []
        self._request()

    def _request(self) -> None:
        n = min(self.chunk, self.left)
        self.left -= n
        take = lambda it: list(itertools.islice(it, n))  # noqa: E731
        if n == 0:
            self.pending: list[Future | list] = []
        elif self.pool is None:
            self.pending = [take(r) for r in self.readers]
        else:
            self.pending = [self.pool.submit(take, r) for r in self.readers]

    def take(self, n: int) -> list[list[np.ndarray | None]]:
        """The next ``n`` frames, each a list of V images (None: that camera has no such frame)."""
        while len(self.rows) < n:
            per_cam = [p.result() if isinstance(p, Future) else p for p in self.pending]
            self._request()
            self.rows += [list(row) for row in zip(*per_cam)]
        out, self.rows = self.rows[:n], self.rows[n:]
        return out


def detect_capture(
    calibration: str | Path,
    detect: DetectOptions,
    options: CaptureOptions,
    *,
    rig: str | None = None,
    videos: str | Path | None = None,
    images: str | Path | None = None,
    timings: dict[str, float] | None = None,
    issues: IssueLog | None = None,
    person: str | None = None,
) -> Capture:
    """Run a model over a capture's videos or image folders and return it like :func:`load_capture` does.

    Args:
        calibration: calibration file; its camera names name the videos / image folders.
        detect: model options.
        options: capture options (``joints``, ``offsets``, ``workers`` and ``progress`` here; the triangulation
            options also steer the tracking).
        videos: folder with one video per camera (or one image folder per camera).
        images: folder with one image folder per camera.
        timings: filled with ``detect_read_s``, ``detect_crop_s``, ``detect_model_s``, ``detect_track_s``.
        issues: the log to add to (a new one by default); warnings logged meanwhile are added to it.
        person: follow only this person of the box files (their ``person`` column / key): crops come from its
            boxes and its reprojected track, never from the whole frame (which would find anyone); views with
            neither are left out. None: the single-person behaviour of the module doc.

    Returns:
        A :class:`~mvpose.capture.pipeline.Capture` with ``people (T, V, 1, J, 3)`` and ``detection``.
    """
    return detect_captures(calibration, detect, options, [person], rig=rig, videos=videos, images=images,
                           timings=timings, issues=issues)[0]


def detect_captures(
    calibration: str | Path,
    detect: DetectOptions,
    options: CaptureOptions,
    persons: Sequence[str | None],
    *,
    rig: str | None = None,
    videos: str | Path | None = None,
    images: str | Path | None = None,
    timings: dict[str, float] | None = None,
    issues: IssueLog | None = None,
) -> list[Capture]:
    """:func:`detect_capture` for several people of the box files at once: every frame is decoded once and
    each person is cropped, inferred and tracked from it on its own.

    Args:
        persons: the box files' person ids to follow (``[None]``: the single-person behaviour).
        Others: as :func:`detect_capture`.

    Returns:
        One :class:`~mvpose.capture.pipeline.Capture` per entry of ``persons``, in that order.
    """
    detect.check()
    timings = {} if timings is None else timings
    if (videos is None) == (images is None):
        raise CaptureError("the model path needs the frames: give --videos DIR or --images DIR (one of them)")
    if not persons:
        raise ValueError("detect_captures: persons is empty")
    folder, what = (videos, "video") if videos is not None else (images, "image folder")
    where = f"{'videos' if videos is not None else 'images'} {folder}"
    issues = IssueLog() if issues is None else issues
    with issues.capture_logging():
        return _detect_capture(calibration, detect, options, rig, folder, what, where, videos, images, timings, issues,
                               list(persons))


@dataclass
class _Followed:
    """One person followed through the frames: its tracker (which holds its box-file boxes) and results so far."""

    person: str | None
    tracker: BoxTracker
    keypoints: np.ndarray  # (T, V, J, 3)
    boxes: np.ndarray  # (T, V, 4)
    source: np.ndarray  # (T, V) int8
    step: int = 1
    whole_passes: int = 0
    refine_passes: int = 0
    forwarded: int = 0

    @property
    def label(self) -> str:
        return "" if self.person is None else f"person {self.person}: "


def _detect_capture(calibration, detect, options, rig, folder, what, where, videos, images, timings, issues,
                    persons) -> list[Capture]:
    rig_cams = load_calibration(calibration, rig=rig, units=options.calibration_units)
    entries = find_camera_sources(folder, VIDEO_SUFFIXES if videos is not None else ())
    names = match_cameras(rig_cams.names, list(entries), where, issues, what=what)
    offsets = dict(options.offsets)
    check_offsets(offsets, names)
    box_files = [_read_boxes(detect.boxes, names, rig_cams.names, person) for person in persons]
    detector = load_detector(detect.checkpoint, detect.device, options.joints)
    cameras = rig_cams[names].to(dtype=torch.float64)
    sources = [open_frame_source(n, entries[n]) for n in names]
    calib_size = cameras.image_size.round().int().tolist()
    for src, (cw, ch) in zip(sources, calib_size):
        if src.size is None:
            issues.add(f"camera {src.name}: no frame could be read from {src.path}", kind="cameras")
        elif tuple(src.size) != (cw, ch):
            issues.add(f"camera {src.name}: frames are {src.size[0]}x{src.size[1]} but the calibration is for "
                       f"{cw}x{ch}; keypoints are in frame pixels, so is the calibration for another resolution?",
                       kind="calibration")
    readable = [src.name for src in sources if src.size is not None]
    if len(readable) < max(2, options.min_views):
        unreadable = [f"{src.name} ({src.path})" for src in sources if src.size is None]
        absent = [n for n in rig_cams.names if n not in names]
        raise CaptureError(
            f"{where}: {len(readable)} camera(s) with readable frames ({', '.join(readable) or 'none'}); triangulation "
            f"needs {max(2, options.min_views)}"
            + (f"; no frame could be read from {', '.join(unreadable)}" if unreadable else "")
            + (f"; no video / image folder for {', '.join(absent)}" if absent else ""))
    frame_index = frame_axis([s.frames for s in sources], [offsets.get(s.name, 0) for s in sources])
    if not len(frame_index):
        raise CaptureError(f"{where}: no camera has a readable frame")
    T, V, J = len(frame_index), len(names), detector.num_joints
    cam_frames = frame_index[:, None] + np.array([offsets.get(n, 0) for n in names])[None]  # (T, V)
    for v, src in enumerate(sources):
        have = np.isin(cam_frames[:, v], src.frames).sum()
        if 0 < have < T:
            issues.add(f"camera {src.name}: frames for {have} of {T} capture frames ({src.path.name}); "
                       "the other frames use the remaining views", kind="frames", count=int(T - have))
    frame_sizes = np.array([s.size or (cw, ch) for s, (cw, ch) in zip(sources, calib_size)], dtype=np.float64)

    followed = []
    for person, files in zip(persons, box_files):
        file_boxes = np.full((T, V, 4), np.nan)
        for name, per_frame in files.items():
            v = names.index(name)
            for t, f in enumerate(cam_frames[:, v].tolist()):
                if f in per_frame:
                    file_boxes[t, v] = per_frame[f]
        unused = [n for n in files if not np.isfinite(file_boxes[:, names.index(n)]).any()]
        tracker = BoxTracker(detector, detect, options, cameras, frame_index, file_boxes, frame_sizes, timings)
        keypoints = np.full((T, V, J, 3), np.nan)
        keypoints[..., 2] = 0.0
        one = _Followed(person, tracker, keypoints, np.full((T, V, 4), np.nan), np.zeros((T, V), np.int8))
        if unused:
            issues.add(f"{one.label}boxes {detect.boxes}: no box of camera(s) {', '.join(unused)} falls on a capture frame")
        followed.append(one)
    B = detect.batch_size
    workers = min(V, options.workers if options.workers is not None else V)

    readers = [src.read(cam_frames[:, v]) for v, src in enumerate(sources)]
    bar = tqdm(total=T, desc="detect", unit="frame", disable=not options.progress, leave=False)
    wall = time.perf_counter()
    try:
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
            ahead = _Prefetch(readers, T, B, pool)
            s = 0
            while s < T:
                # After a (re)start the batches grow 1, 2, 4, ...: the track gets a velocity before a whole
                # batch is cropped around one pose. The frames are decoded once for everyone followed, so a
                # step is the shortest any of them asks for.
                lost = [one.tracker.lost(int(frame_index[s])) for one in followed]
                e = min(s + min(1 if was_lost else one.step for one, was_lost in zip(followed, lost)), T)
                with _Timer(timings, "detect_read_s"):
                    frames = ahead.take(e - s)
                for one, was_lost in zip(followed, lost):
                    _follow(one, detect, frames, s, e, was_lost, frame_index, V)
                    one.step = min(2 if was_lost else 2 * one.step, B)
                bar.update(e - s)
                s = e
    finally:
        bar.close()
        for r in readers:
            r.close()
    elapsed = time.perf_counter() - wall
    units = calibration_units(calibration, units=options.calibration_units)
    captures = []
    for one in followed:
        missing_all = [n for v, n in enumerate(names) if not (one.keypoints[:, v, :, 2] > 0).any()]
        for n in missing_all:
            issues.add(f"{one.label}camera {n}: the model found no joint in any frame", kind="cameras")
        people = one.keypoints[:, :, None]  # (T, V, 1, J, 3): one person, as the readers give it
        check_image_bounds(people, cameras, names, issues)
        counts = {n: {BOX_SOURCES[c]: int((one.source[:, v] == c).sum()) for c in range(1, len(BOX_SOURCES))}
                  for v, n in enumerate(names)}
        info = {
            "checkpoint": detector.checkpoint, "model": detector.name, "multiview": detector.multiview,
            "input_size_hw": list(detector.input_hw), "joint_set": detector.joint_set, "device": str(detector.device),
            "batch_size": B, "padding": detect.padding, "frames": T, "forward_samples": one.forwarded,
            "whole_frame_passes": one.whole_passes, "search_refine_passes": one.refine_passes, "boxes": counts,
            "people_followed_together": len(followed),
            "frames_per_s": T / elapsed if elapsed > 0 else None,
            "timings_s": {"total": elapsed,
                          **{k[len("detect_"):-2]: v for k, v in timings.items() if k.startswith("detect_")}},
        }
        capture = Capture(cameras, list(names), frame_index, people, detector.joint_set, issues,
                          {s.name: str(s.path) for s in sources})
        capture.detection = Detection(one.boxes, one.source, cam_frames, list(names), info)
        capture.units = units
        captures.append(capture)
    log.info("detect: %d frames x %d views%s in %.1f s (%.1f frames/s), %d whole-frame passes", T, V,
             f" x {len(followed)} people" if len(followed) > 1 else "", elapsed, T / elapsed if elapsed > 0 else 0.0,
             sum(one.whole_passes for one in followed))
    return captures


def _follow(one: _Followed, detect: DetectOptions, frames: list, s: int, e: int, lost: bool, frame_index: np.ndarray,
            V: int) -> None:
    """Capture rows ``s:e`` of one person: choose the crops (box file, track, or a whole-frame search when
    the single person is lost), run the model, triangulate, move the track on; fills ``one``'s arrays."""
    tracker = one.tracker
    avail = np.array([[img is not None for img in row] for row in frames])  # (n, V)
    has_file = np.isfinite(tracker.file_boxes[s:e]).all(-1) & avail
    seen = np.flatnonzero(avail.sum(axis=1) >= 2)  # frames that can be triangulated
    searched = None
    if one.person is not None:
        # One of several people: no whole-frame search, no whole-frame crop (it would find anyone).
        _, _, code = tracker.choose_boxes(s, e, avail, has_file)
        avail &= code != 3
        frames = [[img if ok else None for img, ok in zip(row, ok_row)] for row, ok_row in zip(frames, avail)]
    elif lost and (avail & ~has_file).any() and len(seen):
        # No pose to crop around: find the person on the whole frame, triangulate, track; then crop
        # that frame around the pose found, which sharpens it (coarse to fine).
        i = searched = seen[0]
        kp0 = tracker.run_pass(frames[i:i + 1], tracker.whole[None], np.ones((1, V)), frame_index[s + i:s + i + 1])
        one.whole_passes += 1
        for _ in range(detect.search_refine):
            if tracker.lost(int(frame_index[s + i])):
                break
            box, pad, _ = tracker.choose_boxes(s + i, s + i + 1, avail[i:i + 1], has_file[i:i + 1])
            tracker.run_pass(frames[i:i + 1], box, pad, frame_index[s + i:s + i + 1])
            one.refine_passes += 1
    box, pad, src_code = tracker.choose_boxes(s, e, avail, has_file)
    keep = avail.any(axis=1)  # frames with at least one view
    if searched is not None and tracker.lost(int(frame_index[s + searched])) and not has_file[searched].any():
        # the search found no one: its whole-frame answer is the answer for that frame
        one.keypoints[s + searched], keep[searched] = kp0[0], False
    keep = np.flatnonzero(keep)
    if len(keep):
        one.keypoints[s + keep] = tracker.run_pass([frames[n] for n in keep], box[keep], pad[keep], frame_index[s + keep])
        one.forwarded += len(keep)
    one.boxes[s:e] = np.where(avail[..., None], box, np.nan)
    one.source[s:e] = src_code


def write_detection(detection: Detection, out_dir: str | Path) -> dict[str, Path]:
    """Write ``detection.json`` and ``boxes/<camera>.csv`` (camera frame numbers; readable by ``--boxes``)."""
    from mvpose.capture.io import write_json, write_text

    out = Path(out_dir)
    paths = {"detection": write_json(out / "detection.json", detection.info)}
    for v, name in enumerate(detection.names):
        rows = [",".join([*BOX_COLUMNS, "source"])]
        for t in np.flatnonzero(np.isin(detection.box_source[:, v], (1, 2))):
            x0, y0, x1, y1 = detection.boxes[t, v]
            rows.append(f"{int(detection.camera_frames[t, v])},{x0:.2f},{y0:.2f},{x1:.2f},{y1:.2f},"
                        f"{BOX_SOURCES[detection.box_source[t, v]]}")
        paths[f"boxes_{name}"] = write_text(out / "boxes" / f"{name}.csv", "\n".join(rows) + "\n")
    return paths
