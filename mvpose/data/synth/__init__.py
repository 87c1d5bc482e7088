"""Synthetic multi-view humans in the exact Human3.6M and Ski-Pose on-disk formats.

``generate(out, fmt="h36m")`` renders the real Human3.6M camera rigs watching a volumetric body
perform the 15 actions; ``fmt="skipose"`` renders a skier followed by six pan-tilt-zoom cameras.
The output is read by the same readers as the real datasets. Same arguments, same bytes.

Example (a tiny set for a test)::

    from mvpose.data.synth import generate
    generate(tmp_path, fmt="h36m", subjects=(1, 9), frames=2, actions=(2, 3), image_size=128, seed=0)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from mvpose.data.synth.writers import (
    H36M_SUBJECTS,
    H36M_TRAIN_SUBJECTS,
    H36M_VALIDATION_SUBJECTS,
    SKIPOSE_FROM_H36M,
    SKIPOSE_JOINTS,
    SKIPOSE_ROOT_NAME,
    SKIPOSE_TEST_SUBJECTS,
    H36MTask,
    SkiTask,
    body_shape_for_subject,
    render_h36m_sequence,
    render_ski_sequence,
    write_h36m_annotations,
    write_skipose_annotations,
)

__all__ = [
    "generate",
    "SynthSummary",
    "FORMATS",
    "DEFAULT_FRAMES",
    "DEFAULT_FRAME_STEP",
    "DEFAULT_IMAGE_SIZE",
    "SKIPOSE_JOINTS",
    "SKIPOSE_FROM_H36M",
    "SKIPOSE_ROOT_NAME",
    "SKIPOSE_SUBJECTS",
    "SKIPOSE_TEST_SUBJECTS",
    "H36M_SUBJECTS",
    "H36M_TRAIN_SUBJECTS",
    "H36M_VALIDATION_SUBJECTS",
    "body_shape_for_subject",
]

log = logging.getLogger(__name__)

FORMATS = ("h36m", "skipose")
DEFAULT_FRAMES = {"h36m": 4, "skipose": 8}
DEFAULT_FRAME_STEP = 40  # frames of the 50 Hz source between two written frames (0.8 s)
DEFAULT_IMAGE_SIZE = 256
SKIPOSE_SUBJECTS = (1, 2, 3, 4, 5, 6)
H36M_ACTION_IDS = tuple(range(2, 17))


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote.

    Attributes:
        root: dataset root to give the reader (``out`` for Human3.6M, ``out/Ski-PosePTZ-CameraDataset-png``
            for Ski-Pose).
        fmt: ``"h36m"`` or ``"skipose"``.
        images: number of images written.
        sequences: number of rendered sequences.
        seconds: wall time.
        bytes: size on disk of everything written.
        preview: the contact sheet, when asked for.
    """

    root: Path
    fmt: str
    images: int
    sequences: int
    seconds: float
    bytes: int
    preview: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _run(fn: Callable, tasks: list, workers: int) -> Iterable:
    """Map ``fn`` over ``tasks`` in order, on ``workers`` processes (see :mod:`mvpose.parallel`)."""
    if workers <= 1 or len(tasks) <= 1:
        return map(fn, tasks)
    from mvpose.parallel import worker_context

    count = min(workers, len(tasks))
    pool = worker_context(preload=[__name__]).Pool(count, initializer=_init_worker)

    def results():
        try:
            yield from pool.imap(fn, tasks, chunksize=1)
        finally:
            pool.terminate()
            pool.join()

    return results()


def _ints(values, name: str, allowed: Sequence[int] | None = None) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if not out:
        raise ValueError(f"{name}: need at least one value")
    if allowed is not None:
        bad = [v for v in out if v not in allowed]
        if bad:
            raise ValueError(f"{name}: {bad} not allowed; choose from {list(allowed)}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: duplicate values in {list(out)}")
    return out


def _disk_bytes(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def generate(
    out: str | Path,
    fmt: str = "h36m",
    subjects: Sequence[int] | None = None,
    frames: int | None = None,
    actions: Sequence[int] | None = None,
    subactions: Sequence[int] = (1, 2),
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    workers: int | None = None,
    preview: bool = False,
    frame_step: int = DEFAULT_FRAME_STEP,
    calibration: str | Path | None = None,
    jpeg_quality: int = 85,
    runs: int = 1,
    occlusion: bool = False,
) -> SynthSummary:
    """Render a synthetic multi-view dataset into ``out``.

    Args:
        out: output folder (created). Human3.6M: ``out/annot``, ``out/images``; Ski-Pose:
            ``out/Ski-PosePTZ-CameraDataset-png/{train,test}`` and ``out/ski_centers.csv``.
        fmt: ``"h36m"`` or ``"skipose"``.
        subjects: Human3.6M subjects (default 1,5,6,7,8,9,11; 1,5,6,7,8 train, 9,11 validation),
            or skier ids (default 1..6; 5 and 6 go to ``test``).
        frames: frames per sequence and camera (default 4 for Human3.6M, 8 for Ski-Pose).
        actions: Human3.6M action ids 2..16 (default all 15).
        subactions: Human3.6M subactions (default 1, 2).
        image_size: Human3.6M image side S; the real 1000-pixel intrinsics are scaled by S/1000.
            Ski-Pose images are always 256 x 256, as published.
        seed: everything random derives from it (and from subject, action, subaction, sequence).
        workers: processes rendering sequences in parallel (None: all CPUs, at most one per
            sequence). Output bytes do not depend on it.
        preview: also write ``out/preview.png``.
        frame_step: source frames (50 Hz) between written frames; image ids are 1, 1 + step, ...
        calibration: Human3.6M rig file (default: the shipped ``mvpose/calibration/h36m.json``).
        jpeg_quality: Human3.6M JPEG quality.
        runs: Ski-Pose sequences per skier.
        occlusion: Human3.6M only: in every frame 1-2 of the 4 cameras get an object between them
            and the person that hides limbs (:func:`mvpose.data.synth.scene.occluder_between`);
            hidden joints are marked in ``joints_vis`` as always. Everything else (poses, rooms,
            cameras, appearance) is the same as without it, from its own random generator.

    Returns:
        a :class:`SynthSummary`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt: unknown format {fmt!r}; choose one of {FORMATS}")
    frames = DEFAULT_FRAMES[fmt] if frames is None else int(frames)
    if frames < 1:
        raise ValueError(f"frames: need at least 1 frame per sequence, got {frames}")
    if frame_step < 1:
        raise ValueError(f"frame_step: must be >= 1, got {frame_step}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    start = time.perf_counter()
    if fmt == "h36m":
        if not 32 <= int(image_size) <= 2048:
            raise ValueError(f"image_size: must be within 32..2048 pixels, got {image_size}")
        subjects = _ints(subjects or H36M_SUBJECTS, "subjects", H36M_SUBJECTS)
        actions = _ints(actions or H36M_ACTION_IDS, "actions", H36M_ACTION_IDS)
        subactions = _ints(subactions, "subactions", (1, 2))
        tasks = [
            H36MTask(str(out), s, a, sa, frames, int(frame_step), int(image_size), int(seed),
                     None if calibration is None else str(calibration), int(jpeg_quality), bool(occlusion))
            for s in subjects for a in actions for sa in subactions
        ]
        records = []
        for i, recs in enumerate(_run(render_h36m_sequence, tasks, workers)):
            records += recs
            log.info("rendered sequence %d/%d", i + 1, len(tasks))
        annot = write_h36m_annotations(out, records)
        written = [out / "images" / r["image"] for r in records] + list(annot)
        root, n_images = out, len(records)
    else:
        if int(image_size) != 256:
            raise ValueError(f"image_size: Ski-Pose images are 256 x 256 as published, got {image_size}")
        if actions is not None:
            raise ValueError("actions: only the Human3.6M format has actions; leave it out for skipose")
        if occlusion:
            raise ValueError("occlusion: only the Human3.6M format has the occlusion setting; leave it out for skipose")
        subjects = _ints(subjects or SKIPOSE_SUBJECTS, "subjects")
        unknown = [s for s in subjects if s not in SKIPOSE_SUBJECTS]
        if unknown:
            raise ValueError(f"subjects: Ski-Pose has skiers {SKIPOSE_SUBJECTS} (test split: "
                             f"{tuple(SKIPOSE_TEST_SUBJECTS)}), got {unknown}")
        if runs < 1:
            raise ValueError(f"runs: need at least one run per skier, got {runs}")
        tasks = []
        for s in subjects:
            for r in range(runs):
                split = "test" if s in SKIPOSE_TEST_SUBJECTS else "train"
                tasks.append(SkiTask(str(out), split, len(tasks) + 1, s, frames, int(frame_step), int(seed)))
        splits: dict[str, list] = {"train": [], "test": []}
        for task, rows in zip(tasks, _run(render_ski_sequence, tasks, workers)):
            splits[task.split].append(rows)
            log.info("rendered ski sequence %d/%d", task.seq, len(tasks))
        annot = write_skipose_annotations(out, splits)
        root = out / SKIPOSE_ROOT_NAME
        n_images = sum(len(r["seq"]) for rows in splits.values() for r in rows)
        images = []
        for split, parts in splits.items():
            for rows in parts:
                for seq, cam, frame in zip(rows["seq"], rows["cam"], rows["frame"]):
                    images.append(root / split / f"seq_{seq:03d}" / f"cam_{cam:02d}" / f"image_{frame:06d}.png")
        written = images + list(annot)
    seconds = time.perf_counter() - start
    preview_path = None
    if preview:
        from mvpose.data.synth.preview import write_preview

        preview_path = write_preview(out, fmt)
    return SynthSummary(root, fmt, n_images, len(tasks), seconds, _disk_bytes(written), preview_path)
