"""Pictures of a processed capture: per-camera overlays of the reprojected skeleton and a 3D skeleton plot.

Overlays draw, on each camera's frames, the final 3D skeleton projected through the calibration (lines) and
the 2D keypoints (dots: used views filled, excluded views in red). The frames come from the camera's video
(written back as ``<camera>.mp4``), its image folder, or, without either, a grey canvas of the calibrated
size (both written as ``<camera>/<frame>.jpg``). Cameras are rendered in parallel processes (``workers``).
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mvpose.capture.frames import image_frames, video_frames
from mvpose.capture.io import atomic_path
from mvpose.capture.keypoints import default_workers, find_camera_sources
from mvpose.frames import VIDEO_SUFFIXES
from mvpose.skeletons import get_skeleton

if TYPE_CHECKING:
    from mvpose.capture.types import CaptureResult

__all__ = ["PERSON_BGR", "draw_overlay", "plot_skeleton_3d", "render_camera", "render_capture", "render_people"]

log = logging.getLogger(__name__)

SKELETON_BGR = (60, 220, 60)
USED_BGR = (255, 200, 0)
EXCLUDED_BGR = (0, 0, 255)
# Several people: skeleton and used keypoints of person m in PERSON_BGR[m % 8] (excluded keypoints stay red).
PERSON_BGR = ((60, 220, 60), (255, 160, 0), (0, 200, 255), (255, 0, 200), (200, 255, 0), (0, 120, 255),
              (160, 80, 255), (255, 255, 255))


def draw_overlay(
    image: np.ndarray, projected: np.ndarray, keypoints: np.ndarray, used: np.ndarray,
    limbs: Sequence[tuple[int, int]], min_confidence: float = 0.0, colour: tuple[int, int, int] = SKELETON_BGR,
    used_colour: tuple[int, int, int] = USED_BGR,
) -> np.ndarray:
    """Draw one frame's overlay (of one person) in place.

    Args:
        image: (H, W, 3) uint8 BGR.
        projected: (J, 2) reprojected 3D joints (NaN where missing).
        keypoints: (J, 3) 2D keypoints ``(x, y, confidence)``.
        used: (J,) bool, the keypoints that entered the triangulation.
        limbs: joint index pairs.
        min_confidence: keypoints below it are not drawn.
        colour, used_colour: BGR of the skeleton and of the used keypoints.
    """
    scale = max(1, round(max(image.shape[:2]) / 640))
    for a, b in limbs:
        pa, pb = projected[a], projected[b]
        if np.isfinite(pa).all() and np.isfinite(pb).all() and np.abs(np.r_[pa, pb]).max() < 1e5:
            cv2.line(image, tuple(np.round(pa).astype(int)), tuple(np.round(pb).astype(int)), colour, 2 * scale, cv2.LINE_AA)
    ok = np.isfinite(keypoints[:, :2]).all(axis=-1) & (keypoints[:, 2] >= min_confidence) & (keypoints[:, 2] > 0)
    for j in np.flatnonzero(ok):
        dot = used_colour if used[j] else EXCLUDED_BGR
        cv2.circle(image, tuple(np.round(keypoints[j, :2]).astype(int)), 3 * scale, dot, -1, cv2.LINE_AA)
    return image


def render_camera(
    out: str, source: str | None, size: tuple[int, int], camera_frames: np.ndarray, capture_frames: np.ndarray,
    projected: np.ndarray, keypoints: np.ndarray, used: np.ndarray, limbs: Sequence[tuple[int, int]],
    fps: float, min_confidence: float, progress: bool = False, colours: Sequence[tuple[int, int, int]] | None = None,
) -> str:
    """Render one camera (runs in a worker process; plain arrays in, output path out).

    Args:
        out: output path without suffix; ``.mp4`` is added for a video source, a folder is made otherwise.
        source: video file, image folder or None (grey canvas of ``size``).
        camera_frames: (N,) camera frame numbers to draw; ``capture_frames`` (N,) name the output images.
        projected: (N, J, 2); keypoints: (N, J, 3); used: (N, J); or, for M people, (N, M, J, 2), (N, M, J, 3),
            (N, M, J).
        progress: a progress bar over the frames.
        colours: M BGR colours, one per person (None: the single-person colours).
    """
    if projected.ndim == 3:
        projected, keypoints, used = projected[:, None], keypoints[:, None], used[:, None]
    styles = [(SKELETON_BGR, USED_BGR)] if colours is None else [(c, c) for c in colours]
    W, H = int(size[0]), int(size[1])
    src = None if source is None else Path(source)
    if src is not None and src.is_file():
        frames = video_frames(src, camera_frames)
    elif src is not None and src.is_dir():
        frames = image_frames(src, camera_frames)
    else:
        frames = (None for _ in camera_frames)
    as_video = src is not None and src.is_file()
    target = Path(out + ".mp4") if as_video else Path(out)
    with atomic_path(target, is_dir=not as_video) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H)) if as_video else None
        bar = tqdm(frames, total=len(camera_frames), desc=f"render {Path(out).name}", unit="frame",
                   disable=not progress, leave=False)
        for i, frame in enumerate(bar):
            if frame is None:
                frame = np.full((H, W, 3), 60, np.uint8)
            elif frame.shape[1] != W or frame.shape[0] != H:
                frame = cv2.resize(frame, (W, H))
            for m, (colour, used_colour) in enumerate(styles):
                draw_overlay(frame, projected[i, m], keypoints[i, m], used[i, m], limbs, min_confidence, colour,
                             used_colour)
            if writer is not None:
                writer.write(frame)
            else:
                cv2.imwrite(str(tmp / f"{int(capture_frames[i]):06d}.jpg"), frame)
        if writer is not None:
            writer.release()
    return str(target)


def plot_skeleton_3d(
    path: str | Path, points3d: np.ndarray, limbs: Sequence[tuple[int, int]], titles: Sequence[str],
    labels: Sequence[str] | None = None,
) -> Path:
    """Matplotlib 3D plots of a few skeletons side by side (world mm, z up), with equal axes.

    Args:
        points3d: (N, J, 3) the frames to draw; or (N, M, J, 3) for M people, each in its colour
            (:data:`PERSON_BGR`) with a legend of ``labels``.
        titles: N titles.
        labels: M names of the people.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    several = points3d.ndim == 4
    n = len(points3d)
    fig = plt.figure(figsize=(4 * n, 4.4))
    for i, (frame, title) in enumerate(zip(points3d, titles)):
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        people = frame if several else frame[None]
        for m, P in enumerate(people):
            ok = np.isfinite(P).all(axis=-1)
            line = tuple(c / 255 for c in PERSON_BGR[m % len(PERSON_BGR)][::-1]) if several else "tab:green"
            for a, b in limbs:
                if ok[a] and ok[b]:
                    ax.plot(*P[[a, b]].T, color=line, lw=2)
            ax.scatter(*P[ok].T, s=8, color=line if several else "tab:blue",
                       label=labels[m] if several and labels and ok.any() else None)
        allp = people.reshape(-1, 3)
        ok = np.isfinite(allp).all(axis=-1)
        if several and labels and ok.any():
            ax.legend(loc="upper left", fontsize=7)
        if ok.any():
            P = allp
            mid = (P[ok].max(0) + P[ok].min(0)) / 2
            half = max((P[ok].max(0) - P[ok].min(0)).max() / 2, 100.0)
            ax.set(xlim=(mid[0] - half, mid[0] + half), ylim=(mid[1] - half, mid[1] + half),
                   zlim=(mid[2] - half, mid[2] + half))
        ax.set_box_aspect((1, 1, 1))
        ax.set(title=title, xlabel="x (mm)", ylabel="y (mm)", zlabel="z (mm)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)


def render_capture(
    result: "CaptureResult", out_dir: str | Path, *, videos: str | Path | None = None,
    images: str | Path | None = None, plot_frames: Sequence[int] | None = None, every: int = 1,
) -> dict[str, Path]:
    """Overlays for every camera and ``skeleton3d.png`` into ``out_dir``.

    Args:
        result: a processed capture.
        videos, images: folders with one video / image folder per camera (by name); grey canvases otherwise.
        plot_frames: capture frame numbers for the 3D plot (default: four spread over the sequence).
        every: draw every ``every``-th frame in the overlays.

    Returns:
        ``{"overlay_<camera>": path, "skeleton3d": path}``.
    """
    return _render(result, result.points3d[:, None], result.keypoints[:, None], result.used[:, None], None, out_dir,
                   videos=videos, images=images, plot_frames=plot_frames, every=every)


def render_people(
    result: Any, out_dir: str | Path, *, videos: str | Path | None = None,
    images: str | Path | None = None, plot_frames: Sequence[int] | None = None, every: int = 1,
) -> dict[str, Path]:
    """:func:`render_capture` for several people: each person's skeleton and used keypoints in its colour
    (:data:`PERSON_BGR`, in the order of ``result.ids``), all people in each overlay and 3D plot.

    Args:
        result: a :class:`mvpose.capture.multi.PeopleResult` (not imported here: multi imports this module).
    """
    return _render(result, result.points3d, result.keypoints, result.used, list(result.ids), out_dir,
                   videos=videos, images=images, plot_frames=plot_frames, every=every)


def _render(
    result, points3d: np.ndarray, keypoints: np.ndarray, used: np.ndarray, labels: list[str] | None,
    out_dir: str | Path, *, videos, images, plot_frames, every: int,
) -> dict[str, Path]:
    """Render M people: points3d (T, M, J, 3), keypoints (T, M, V, J, 3), used (T, M, V, J); ``labels`` None
    draws the single-person style."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cap = result.capture
    skeleton = get_skeleton(cap.joint_set)
    sources: dict[str, Path] = {}
    if images is not None:
        sources.update(find_camera_sources(images, ()))
    if videos is not None:
        sources.update(find_camera_sources(videos, VIDEO_SUFFIXES))
    rows = np.arange(0, len(cap.frame_index), max(1, every))
    X = torch.from_numpy(np.ascontiguousarray(points3d[rows]))  # (N, M, J, 3)
    projected = cap.cameras.project(X.unsqueeze(-3)).numpy()  # (N, M, V, J, 2), NaN where the joint is missing
    colours = None if labels is None else [PERSON_BGR[m % len(PERSON_BGR)] for m in range(len(labels))]
    fps = result.fps or 30.0
    jobs = []
    for v, name in enumerate(cap.names):
        if name not in sources:
            log.info("render: no video or images for camera %s; drawing on a grey canvas", name)
        offset = result.options.offsets.get(name, 0)
        size = tuple(cap.cameras.image_size[v].round().int().tolist())
        jobs.append((str(out_dir / name), str(sources[name]) if name in sources else None, size,
                     cap.frame_index[rows] + offset, cap.frame_index[rows], projected[:, :, v],
                     keypoints[rows, :, v], used[rows, :, v], skeleton.limbs, fps, result.options.min_confidence))
    workers = min(default_workers(result.options.workers), len(jobs))
    progress = result.options.progress
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            done = list(tqdm(pool.map(render_camera, *zip(*jobs), [False] * len(jobs), [colours] * len(jobs)),
                             total=len(jobs), desc="render", unit="camera", disable=not progress, leave=False))
    else:
        done = [render_camera(*job, progress=progress, colours=colours) for job in jobs]
    paths = {f"overlay_{name}": Path(p) for name, p in zip(cap.names, done)}
    index = {int(f): i for i, f in enumerate(cap.frame_index)}
    if plot_frames is None:
        pick = np.linspace(0, len(cap.frame_index) - 1, min(4, len(cap.frame_index))).round().astype(int)
    else:
        missing = [f for f in plot_frames if f not in index]
        if missing:
            raise ValueError(f"plot frames {missing} are not in the capture (frames {cap.frame_index[0]}..{cap.frame_index[-1]})")
        pick = np.array([index[f] for f in plot_frames])
    plotted = points3d[pick] if labels is not None else points3d[pick, 0]
    paths["skeleton3d"] = plot_skeleton_3d(out_dir / "skeleton3d.png", plotted, skeleton.limbs,
                                           [f"frame {cap.frame_index[i]}" for i in pick], labels)
    return paths
