"""Fixtures that write small datasets in the published on-disk formats (Human3.6M H36M-Toolbox pickles,
Ski-Pose ``labels.h5`` + ``ski_centers.csv``, COCO keypoint JSON) to temporary folders.

The writers use their own projection (``cv2.projectPoints``) and camera conversions, independent of
``mvpose``, so reader tests compare two implementations. ``scripts/bench_data.py`` imports the writers
when the synthetic generator is not available.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
H36M_CALIBRATION = REPO / "mvpose" / "calibration" / "h36m.json"
H36M_DAMAGED = {(9, 5, 2), (9, 10, 2), (9, 13, 1)}


# --------------------------------------------------------------------------- helpers
def _blank_image(width: int, height: int, ext: str, value: int = 40) -> bytes:
    ok, buf = cv2.imencode(ext, np.full((height, width, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def _project(points: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """OpenCV projection with distortion (k1, k2, p1, p2, k3): (J, 3) world -> (J, 2) pixels."""
    rvec = cv2.Rodrigues(R)[0]
    out, _ = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, t.reshape(3, 1), K, dist)
    return out.reshape(-1, 2)


def random_pose(rng: np.random.Generator, root: np.ndarray, extent: float, num_joints: int = 17) -> np.ndarray:
    """A (J, 3) cloud of joints around ``root`` (joint 0 is the root), z up; sized ``extent``."""
    offsets = rng.uniform(-0.25, 0.25, size=(num_joints, 3)) * extent
    offsets[:, 2] = rng.uniform(-0.5, 0.45, size=num_joints) * extent
    offsets[0] = 0.0
    return root + offsets


# --------------------------------------------------------------------------- Human3.6M
def h36m_toolbox_cameras(subject: int) -> list[dict[str, np.ndarray]]:
    """The 4 cameras of a subject as H36M-Toolbox annotation dicts (``T`` = centre, k (3,1), p (2,1))."""
    rig = json.loads(H36M_CALIBRATION.read_text())["rigs"][f"S{subject}"]["cameras"]
    out = []
    for cam in rig:
        K, R, t, d = (np.asarray(cam[k], dtype=np.float64) for k in ("K", "R", "t", "dist"))
        out.append({
            "R": R, "T": (-R.T @ t).reshape(3, 1),
            "fx": np.array([K[0, 0]]), "fy": np.array([K[1, 1]]), "cx": np.array([K[0, 2]]), "cy": np.array([K[1, 2]]),
            "k": np.array([d[0], d[1], d[4]]).reshape(3, 1), "p": np.array([d[2], d[3]]).reshape(2, 1),
            "name": cam["name"], "size": tuple(cam["size"]),
        })
    return out


def _toolbox_projection(points: np.ndarray, cam: dict) -> np.ndarray:
    K = np.array([[cam["fx"][0], 0, cam["cx"][0]], [0, cam["fy"][0], cam["cy"][0]], [0, 0, 1.0]])
    R = cam["R"]
    t = -R @ cam["T"].reshape(3)
    k, p = cam["k"].reshape(3), cam["p"].reshape(2)
    return _project(points, K, R, t, np.array([k[0], k[1], p[0], p[1], k[2]]))


def _universal_stand_in(X_cam: np.ndarray) -> np.ndarray:
    """A stand-in for ``D3_Positions_mono_universal``: camera frame, root kept, limbs scaled by 0.9."""
    return X_cam[0] + 0.9 * (X_cam - X_cam[0])


def h36m_image_name(s: int, a: int, sa: int, cam: int, frame: int) -> str:
    base = f"s_{s:02d}_act_{a:02d}_subact_{sa:02d}_ca_{cam + 1:02d}"
    return f"{base}/{base}_{frame:06d}.jpg"


def write_h36m(
    root: Path,
    split: str,
    subjects: Iterable[int],
    actions: Iterable[int],
    subactions: Iterable[int],
    frames: Iterable[int],
    *,
    drop: Iterable[tuple[int, int, int, int, int]] = (),
    seed: int = 0,
    mutate: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Write ``root/annot/h36m_<split>.pkl`` and blank images in the H36M-Toolbox layout.

    Fields have the toolbox's meaning: ``joints_3d_camera`` is the pose in the camera frame (mm),
    ``joints_3d`` a universal-skeleton stand-in in the camera frame (NOT the world pose).

    Records come in the toolbox's order (subject, action, subaction, camera, frame). ``drop`` lists
    ``(subject, action, subaction, frame, camera)`` records to leave out; ``mutate`` edits the record
    list before it is pickled. Returns the records as written.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    images = {}
    drop = set(drop)
    frames = list(frames)
    records = []
    for s in subjects:
        cams = h36m_toolbox_cameras(s)
        for a in actions:
            for sa in subactions:
                poses = {f: random_pose(rng, np.array([rng.uniform(-300, 300), rng.uniform(-300, 300), 950.0]), 1800.0) for f in frames}
                for c, cam in enumerate(cams):
                    for f in frames:
                        if (s, a, sa, f, c) in drop:
                            continue
                        X = poses[f]
                        uv = _toolbox_projection(X, cam)
                        lo, hi = uv.min(0), uv.max(0)
                        name = h36m_image_name(s, a, sa, c, f)
                        path = root / "images" / name
                        path.parent.mkdir(parents=True, exist_ok=True)
                        if cam["size"] not in images:
                            images[cam["size"]] = _blank_image(*cam["size"], ".jpg")
                        path.write_bytes(images[cam["size"]])
                        R, T = cam["R"], cam["T"].reshape(3)
                        X_cam = (X - T) @ R.T
                        records.append({
                            "image": name,
                            "joints_2d": uv,
                            # H36M-Toolbox semantics: joints_3d is the universal-skeleton pose in the
                            # camera frame (deliberately not the world pose X); the world is R^T X_cam + T.
                            "joints_3d": _universal_stand_in(X_cam),
                            "joints_3d_camera": X_cam,
                            "joints_vis": np.ones((17, 3)),
                            "video_id": 0,
                            "image_id": f,
                            "subject": s,
                            "action": a,
                            "subaction": sa,
                            "camera_id": c,
                            "source": "h36m",
                            "camera": {k: v for k, v in cam.items() if k not in ("name", "size")},
                            "center": (lo + hi) / 2.0,
                            "scale": np.full(2, (hi - lo).max() * 1.2 / 200.0),
                            "box": np.array([lo[0], lo[1], hi[0], hi[1]]),
                        })
    if mutate is not None:
        mutate(records)
    (root / "annot").mkdir(parents=True, exist_ok=True)
    with open(root / "annot" / f"h36m_{split}.pkl", "wb") as f:
        pickle.dump(records, f)
    return records


# --------------------------------------------------------------------------- Ski-Pose
def _look_at(C: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera rotation of a camera at C looking at target, image y down, world z up."""
    z = target - C
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def write_skipose(
    root: Path,
    split: str,
    seqs: Iterable[int] = (1, 2),
    frames: Iterable[int] = (0, 1, 2),
    *,
    drop: Iterable[tuple[int, int, int]] = (),
    seed: int = 0,
    units: float = 1.0,
    image_side: int = 256,
    centers_in_parent: bool = True,
    fields: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> dict[tuple[int, int], np.ndarray]:
    """Write ``root/<split>/labels.h5``, PNG images and ``ski_centers.csv`` (root's parent by default).

    Units are metres (``units`` scales every length, to fake wrong units). ``drop`` lists
    ``(seq, frame, cam)`` images to leave out; ``fields`` edits the h5 arrays before writing.

    Returns:
        ``{(seq, frame): (17, 3) world joints in metres}``.
    """
    import h5py

    root = Path(root)
    rng = np.random.default_rng(seed)
    drop = set(drop)
    png = _blank_image(image_side, image_side, ".png")
    rows: dict[str, list] = {k: [] for k in ("seq", "cam", "frame", "subj", "3D", "2D", "cam_intrinsic", "cam_position", "R_cam_2_world")}
    truth, centers = {}, []
    for seq in seqs:
        for frame in frames:
            root_w = np.array([10.0 * seq + 2.0 * frame, 3.0 * frame, 1.0])
            X = random_pose(rng, root_w, 1.8)
            truth[(seq, frame)] = X
            centers.append(f"{seq} {frame} {root_w[0] * units} {root_w[1] * units} {root_w[2] * units}")
            for cam in range(6):
                if (seq, frame, cam) in drop:
                    continue
                angle = np.pi / 3 * cam + rng.uniform(-0.2, 0.2)
                dist = rng.uniform(20.0, 40.0)
                C = root_w + np.array([dist * np.cos(angle), dist * np.sin(angle), rng.uniform(2.0, 6.0)])
                R = _look_at(C, root_w + rng.uniform(-0.3, 0.3, 3))
                f = 100.0 * dist * rng.uniform(0.8, 1.2)
                K = np.array([[f, 0, image_side / 2 + rng.uniform(-5, 5)], [0, f, image_side / 2 + rng.uniform(-5, 5)], [0, 0, 1.0]])
                uv = _project(X, K, R, -R @ C, np.zeros(5))
                Kn = K.copy()
                Kn[:2] /= image_side
                rows["seq"].append(seq)
                rows["cam"].append(cam)
                rows["frame"].append(frame)
                rows["subj"].append(seq % 3)
                rows["3D"].append(((X - root_w) @ R.T * units).reshape(-1))
                rows["2D"].append((uv / image_side).reshape(-1))
                rows["cam_intrinsic"].append(Kn.reshape(-1))
                rows["cam_position"].append(C * units)
                rows["R_cam_2_world"].append(R.T.reshape(-1))
                path = root / split / f"seq_{seq:03d}" / f"cam_{cam:02d}" / f"image_{frame:06d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png)
    arrays = {k: np.asarray(v, dtype=np.int32 if k in ("seq", "cam", "frame", "subj") else np.float32) for k, v in rows.items()}
    if fields is not None:
        fields(arrays)
    (root / split).mkdir(parents=True, exist_ok=True)
    with h5py.File(root / split / "labels.h5", "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    csv_dir = root.parent if centers_in_parent else root
    csv_dir.mkdir(parents=True, exist_ok=True)
    with open(csv_dir / "ski_centers.csv", "a") as f:
        f.write("\n".join(centers) + "\n")
    return truth


# --------------------------------------------------------------------------- COCO
COCO_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]


def write_coco(root: Path, split: str = "val2017", num_images: int = 3, seed: int = 0) -> dict[str, Any]:
    """Write ``root/annotations/person_keypoints_<split>.json`` and images under ``root/images/<split>``.

    Each image has two people with keypoints, one person without keypoints and one crowd region
    (the last two must be skipped by the reader). Returns the JSON document.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    images, anns = [], []
    for i in range(num_images):
        W, H = 320 + 40 * i, 240 + 20 * i
        name = f"{i + 1:012d}.jpg"
        path = root / "images" / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_blank_image(W, H, ".jpg"))
        images.append({"id": i + 1, "file_name": name, "width": W, "height": H})
        for p in range(4):
            x, y = rng.uniform(10, W / 2), rng.uniform(10, H / 2)
            w, h = rng.uniform(30, W / 2 - 10), rng.uniform(40, H / 2 - 10)
            kps = np.zeros((17, 3))
            if p < 2:
                kps[:, 0] = rng.uniform(x, x + w, 17)
                kps[:, 1] = rng.uniform(y, y + h, 17)
                kps[:, 2] = rng.choice([1, 2], 17)
                kps[3] = 0.0  # an unlabelled keypoint
            anns.append({
                "id": 100 * (i + 1) + p, "image_id": i + 1, "category_id": 1, "bbox": [x, y, w, h],
                "area": w * h, "iscrowd": int(p == 3), "num_keypoints": int((kps[:, 2] > 0).sum()),
                "keypoints": kps.reshape(-1).tolist(), "segmentation": [[x, y, x + w, y, x + w, y + h]],
            })
    doc = {
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": COCO_KEYPOINTS,
                        "skeleton": [[16, 14], [14, 12]]}],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(doc))
    return doc


# --------------------------------------------------------------------------- fixtures
H36M_TRAIN = dict(subjects=(1, 5), actions=(2, 3), subactions=(1, 2), frames=range(1, 7))
H36M_VALID = dict(subjects=(9, 11), actions=(2, 5, 10, 13), subactions=(1, 2), frames=range(1, 11))
H36M_VALID_DROP = [(11, 2, 1, 3, 2)]  # one incomplete group: S11 Directions-1 frame 3 lacks camera 2


@pytest.fixture(scope="session")
def h36m_root(tmp_path_factory) -> Path:
    """Human3.6M-format root with both splits (validation holds the damaged S9 sequences)."""
    root = tmp_path_factory.mktemp("h36m")
    write_h36m(root, "train", **H36M_TRAIN, seed=1)
    write_h36m(root, "validation", **H36M_VALID, drop=H36M_VALID_DROP, seed=2)
    return root


@pytest.fixture
def h36m_small(tmp_path) -> Callable[..., Path]:
    """Factory: a fresh 2-frame, 1-sequence Human3.6M-format root, optionally mutated."""

    def make(**kw) -> Path:
        root = tmp_path / "h36m_small"
        write_h36m(root, "train", subjects=(1,), actions=(2,), subactions=(1,), frames=(1, 2), **kw)
        return root

    return make


@pytest.fixture(scope="session")
def skipose_root(tmp_path_factory) -> tuple[Path, dict]:
    """Ski-Pose-format root (train split; ski_centers.csv in the parent) and the true world joints (m)."""
    root = tmp_path_factory.mktemp("ski") / "Ski-PosePTZ-CameraDataset-png"
    truth = write_skipose(root, "train", drop=[(2, 1, 4)], seed=3)
    return root, truth


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("coco")
    return root, write_coco(root, "val2017")


# --------------------------------------------------------------------------- pictures
def panel_ink(path: Path, rows: int, cols: int, white: int = 235) -> np.ndarray:
    """(rows, cols) fraction of non-white pixels in each cell of a figure cut into equal cells: a panel
    that was drawn is mostly ink, an empty one (axis off) is white."""
    img = cv2.imread(str(path))
    assert img is not None, f"{path}: not an image"
    ink = img.min(axis=-1) < white
    H, W = ink.shape
    return np.array([[ink[r * H // rows:(r + 1) * H // rows, c * W // cols:(c + 1) * W // cols].mean()
                      for c in range(cols)] for r in range(rows)])


def colour_pixels(path: Path, rgb: tuple[int, int, int], tol: int = 10) -> int:
    """How many pixels of a picture lie within ``tol`` of the colour ``rgb`` in every channel."""
    img = cv2.imread(str(path))[..., ::-1].astype(int)
    return int((np.abs(img - np.array(rgb)) <= tol).all(axis=-1).sum())


# Matplotlib's first two default colours (tab:blue, tab:orange): one per report in a bar plot.
BAR_COLOURS = ((31, 119, 180), (255, 127, 14))
