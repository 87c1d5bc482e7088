"""Contact sheet of a generated dataset, read back from the files that were written.

Rows are frames, columns are the camera views, with the ground-truth skeleton drawn over each
image: right limbs orange, left limbs blue, spine and head green; visible joints filled, hidden
joints (``joints_vis`` 0) hollow. Drawing from the written files checks writers and images agree.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mvpose.safe_load import load_pickle
from mvpose.skeletons import H36M

__all__ = ["write_preview", "draw_skeleton"]

_RIGHT, _LEFT, _MID = (0, 140, 255), (255, 120, 0), (0, 200, 0)


_SIDES = {j: j[0] for j in H36M.joints if j[0] in "rl" and j != "root"}


def _limb_colour(a: int, b: int) -> tuple[int, int, int]:
    sides = {_SIDES.get(H36M.joints[a]), _SIDES.get(H36M.joints[b])}
    return _RIGHT if "r" in sides else _LEFT if "l" in sides else _MID


def draw_skeleton(img: np.ndarray, joints_2d: np.ndarray, visible: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
    """Draw H36M-17 joints ``(17, 2)`` (pixels of the unscaled image) on ``img`` scaled by ``scale``."""
    pts = (np.asarray(joints_2d, dtype=np.float64) + 0.5) * scale - 0.5
    p = np.round(pts * 16).astype(np.int32)
    for a, b in H36M.limbs:
        cv2.line(img, tuple(p[a]), tuple(p[b]), _limb_colour(a, b), 1, cv2.LINE_AA, shift=4)
    for j in range(len(pts)):
        vis = True if visible is None else bool(visible[j])
        cv2.circle(img, tuple(p[j]), 2 * 16, (255, 255, 255) if vis else (0, 0, 255), -1 if vis else 1, cv2.LINE_AA, shift=4)
    return img


def _tile(path: Path, joints_2d, visible, label: str, tile: int) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: image listed in the annotations is missing or unreadable")
    scale = tile / img.shape[1]
    img = cv2.resize(img, (tile, int(round(img.shape[0] * scale))), interpolation=cv2.INTER_LINEAR)
    draw_skeleton(img, joints_2d, visible, scale)
    cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _pick(keys: list, rows: int) -> list:
    if len(keys) <= rows:
        return keys
    return [keys[int(i)] for i in np.linspace(0, len(keys) - 1, rows).round()]


def _h36m_rows(root: Path, rows: int, tile: int) -> list[np.ndarray]:
    records = []
    for name in ("h36m_train.pkl", "h36m_validation.pkl"):
        path = root / "annot" / name
        if path.is_file():
            records += load_pickle(path)
    groups: dict = {}
    for rec in records:
        groups.setdefault((rec["subject"], rec["action"], rec["subaction"], rec["image_id"]), {})[rec["camera_id"]] = rec
    out = []
    for key in _pick(sorted(groups), rows):
        recs = groups[key]
        tiles = []
        for cam in sorted(recs):
            r = recs[cam]
            label = f"S{r['subject']} act{r['action']} sub{r['subaction']} #{r['image_id']} cam{cam}"
            tiles.append(_tile(root / "images" / r["image"], r["joints_2d"], r["joints_vis"][:, 0] > 0, label, tile))
        out.append(np.concatenate(tiles, axis=1))
    return out


def _skipose_rows(out_dir: Path, rows: int, tile: int) -> list[np.ndarray]:
    import h5py

    from mvpose.data.synth.writers import SKIPOSE_IMAGE_SIZE, SKIPOSE_ROOT_NAME

    root = out_dir / SKIPOSE_ROOT_NAME
    groups: dict = {}
    for split in ("train", "test"):
        path = root / split / "labels.h5"
        if not path.is_file():
            continue
        with h5py.File(path, "r") as f:
            seq, cam, frame, pose2d = f["seq"][:], f["cam"][:], f["frame"][:], f["2D"][:]
        for i in range(len(seq)):
            groups.setdefault((split, int(seq[i]), int(frame[i])), {})[int(cam[i])] = pose2d[i].reshape(-1, 2) * SKIPOSE_IMAGE_SIZE
    out = []
    for key in _pick(sorted(groups), rows):
        split, seq, frame = key
        tiles = []
        for cam, joints in sorted(groups[key].items()):
            path = root / split / f"seq_{seq:03d}" / f"cam_{cam:02d}" / f"image_{frame:06d}.png"
            tiles.append(_tile(path, joints, None, f"{split} seq{seq} #{frame} cam{cam}", tile))
        out.append(np.concatenate(tiles, axis=1))
    return out


def write_preview(out: str | Path, fmt: str, path: str | Path | None = None, rows: int = 4, tile: int = 256) -> Path:
    """Write ``out/preview.png`` (or ``path``): ``rows`` frames spread over the dataset, all views."""
    out = Path(out)
    strips = _h36m_rows(out, rows, tile) if fmt == "h36m" else _skipose_rows(out, rows, tile)
    if not strips:
        raise ValueError(f"{out}: no annotated frames to preview")
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0))) for s in strips]
    sheet = np.concatenate(strips, axis=0)
    path = Path(path) if path is not None else out / "preview.png"
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"{path}: could not write the preview image")
    return path
