"""The one sample format of every dataset, multi-view grouping, collate and the dataset factory.

The readers register themselves (:mod:`mvpose.data.registry`); this module imports none of them.

A reader (Human3.6M, Ski-Pose, COCO) parses its files into a :class:`Reading` of :class:`Group` s:
one group is one moment seen by ``V`` cameras (one camera for single-view data), each view a
:class:`ViewRecord` (image path, 2D joints in original pixels, crop box, camera). The one dataset
class, :class:`MultiViewDataset`, turns a group into a sample; the readers are thin functions.

Sample (a dict; ``V`` views first, ``J`` joints, crop ``H x W``, heatmap ``Hh x Wh``, ``N`` tokens):

per view
    ``image`` (V, 3, H, W) float32, RGB normalised with the ImageNet mean / std.
    ``target`` (V, J, Hh, Wh) float32 UDP Gaussian heatmaps (``target_type`` "heatmap" or "both").
    ``target_x`` (V, J, W k), ``target_y`` (V, J, H k) float32 SimCC labels ("simcc" or "both").
    ``target_weight`` (V, J) float32: labelled (all mocap joints, hidden or not, when the reader sets
    ``supervise_hidden``; else visible), inside the crop and (heatmaps) window on the map.
    ``K`` (V, 3, 3), ``R`` (V, 3, 3), ``t`` (V, 3), ``dist`` (V, 5) float32: the crop camera
    (``x_cam = R X + t`` in mm, OpenCV distortion), exact under any crop / rotation / flip.
    ``image_size`` (V, 2) crop ``(W, H)``.
    ``K_orig`` (V, 3, 3), ``image_size_orig`` (V, 2): the original-image camera (same R, t, dist).
    ``rays`` (V, N, 3) float32 unit world rays through the token centres
    (:func:`mvpose.data.transforms.token_centers` of the ``token_grid``), lens distortion removed.
    ``joints_2d`` (V, J, 2) original-image pixels; ``joints_2d_crop`` (V, J, 2) crop pixels.
    ``joints_vis`` (V, J) float32 annotation visibility (whether or not inside the crop).
    ``affine`` (V, 2, 3) float32 original -> crop pixels; ``center``, ``scale`` (V, 2); ``rotation`` (V,).
    ``camera_ids`` (V,) int64 camera index within the dataset's rig.

per sample
    ``joints_3d`` (J, 3) float32 world mm (zeros when ``has_3d`` is False, e.g. COCO).
    ``has_3d``, ``flipped`` bool; ``subject``, ``action``, ``subaction``, ``frame``, ``index`` int64
    (0-d); ``action_name`` str; ``image_paths`` list[str] (V). Readers may add int fields (COCO:
    ``image_id``, ``annotation_id``).

Horizontal flip is one decision for all views of a sample. After a flip every per-joint array is in
*channel* order: channel ``j`` holds the physical joint ``flip_index[j]`` (left and right swapped), for
the 2D joints, visibility, targets and ``joints_3d`` alike, so projecting ``joints_3d`` with the crop
camera still lands on ``joints_2d_crop``.

Augmentation is deterministic: the draws of sample ``index`` come from
``numpy.random.default_rng([seed, epoch, index])``, so they do not depend on the DataLoader's worker
count or order. The epoch travels with the index: a training loader samples through
:class:`EpochSampler`, whose items are ``(epoch, index)``; persistent DataLoader workers hold their own
copy of the dataset, so :meth:`MultiViewDataset.set_epoch` in the main process would not reach them
(it sets the epoch of plain integer indices, e.g. without workers).

Geometry is computed in float64; the sample's tensors are float32 except the integer ids and flags.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mvpose.data import targets as tg
from mvpose.data import transforms as tf
from mvpose.data.rays import RAY_MODES, official_rays
from mvpose.data.registry import DATASETS, dataset_reader
from mvpose.geometry.camera import Cameras

__all__ = [
    "DatasetError",
    "ViewRecord",
    "Group",
    "Reading",
    "MultiViewDataset",
    "SingleViewDataset",
    "EpochSampler",
    "collate",
    "sample_cameras",
    "select_views",
    "check_images_exist",
    "image_size",
    "build_dataset",
    "read_dataset",
    "DATASETS",
]

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


@dataclass
class ViewRecord:
    """One camera's view of a group.

    Attributes:
        image: image file.
        joints_2d: (J, 2) original-image pixels.
        joints_vis: (J,) 0/1.
        center: (2,) crop box centre, pixels. scale: (2,) box size / 200.
        K, R, t, dist: original-image camera (``t`` in mm, ``dist`` OpenCV order).
        camera_id: index within the dataset's rig.
        image_sizes: accepted ``(W, H)`` sizes of the image file (empty: not checked).
    """

    image: Path
    joints_2d: np.ndarray
    joints_vis: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    dist: np.ndarray
    camera_id: int
    image_sizes: tuple[tuple[int, int], ...]


@dataclass
class Group:
    """One moment seen by ``V`` cameras."""

    views: list[ViewRecord]
    joints_3d: np.ndarray | None  # (J, 3) world mm
    subject: int = 0
    action: int = 0
    subaction: int = 0
    frame: int = 0
    action_name: str = ""
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class Reading:
    """One split of a dataset as a reader parsed it: the groups, and what they are.

    A reader (``read_h36m``, ``read_skipose``, ``read_coco``) returns it; :meth:`MultiViewDataset.from_reading`
    turns it into samples.

    Attributes:
        groups: one per sample. skeleton: their joint set. camera_ids: rig ids of each group's views.
        name: for messages (``"h36m-train"``). split: the reader's split name. root: the dataset folder.
        breakdown: how evaluation breaks MPJPE down: ``"action"``, ``"sequence"`` or None.
        supervise_hidden: labels of hidden joints are valid (motion capture), so train on them.
        incomplete_groups: moments left out because a chosen camera lacks them (reader-specific keys).
        coco: the pycocotools ground truth of a COCO split (None otherwise).
    """

    groups: list[Group]
    skeleton: Any
    camera_ids: list[int]
    name: str
    split: str
    root: Path
    breakdown: str | None = None
    supervise_hidden: bool = False
    incomplete_groups: list = field(default_factory=list)
    coco: Any = None


def select_views(views: int | Sequence[int] | None, num_cameras: int, where: str) -> list[int]:
    """Camera ids chosen by ``views``: None -> all, int N -> the first N, a list -> those ids in order."""
    if views is None:
        return list(range(num_cameras))
    if isinstance(views, (int, np.integer)):
        if not 1 <= int(views) <= num_cameras:
            raise DatasetError(f"{where}: views={views} but the rig has {num_cameras} cameras (ids 0..{num_cameras - 1})")
        return list(range(int(views)))
    ids = [int(v) for v in views]
    bad = [v for v in ids if not 0 <= v < num_cameras]
    if not ids or bad or len(set(ids)) != len(ids):
        raise DatasetError(
            f"{where}: views={list(views)} must be distinct camera ids in 0..{num_cameras - 1}"
            + (f"; out of range: {bad}" if bad else "")
        )
    return ids


def _read_image(rec: ViewRecord) -> np.ndarray:
    image = cv2.imread(str(rec.image), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        what = "missing" if not rec.image.exists() else "not a readable image"
        raise DatasetError(f"{rec.image}: image file is {what}")
    size = (image.shape[1], image.shape[0])
    if rec.image_sizes and size not in rec.image_sizes:
        expected = " or ".join(f"{w}x{h}" for w, h in rec.image_sizes)
        raise DatasetError(f"{rec.image}: image is {size[0]}x{size[1]} (WxH), expected {expected} for camera {rec.camera_id}")
    return image


def image_size(path: Path) -> tuple[int, int]:
    """``(W, H)`` of an image file; DatasetError naming the file when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: image file is {'missing' if not Path(path).exists() else 'not a readable image'}")
    return image.shape[1], image.shape[0]


def check_images_exist(groups: Sequence[Group], where: str) -> None:
    """Fail naming the missing image files (first few) of the selected groups."""
    missing = [str(v.image) for g in groups for v in g.views if not v.image.is_file()]
    if missing:
        shown = "\n  ".join(missing[:5])
        raise DatasetError(f"{where}: {len(missing)} image file(s) missing, e.g.\n  {shown}")


class MultiViewDataset(Dataset):
    """Groups -> samples in the format of the module doc.

    Args:
        groups: one entry per sample.
        skeleton: joint set of the groups (flip pairs, half-body split).
        camera_ids: rig camera ids of the views in each group (same for every group).
        input_hw: crop ``(H, W)``.
        heatmap_hw: heatmap ``(Hh, Wh)``; default ``input_hw / 4``.
        token_grid: token grid ``(h, w)`` for ``rays``; default ``input_hw / 16``.
        sigma: heatmap Gaussian sigma (heatmap pixels).
        target_type: "heatmap", "simcc" or "both".
        simcc_split: SimCC bins per crop pixel. simcc_sigma: SimCC sigma in bins.
        augment: apply the training augmentation.
        augment_config: its parameters (an AugmentConfig or a dict of its fields).
        seed: base seed of the augmentation.
        name: dataset name for messages.
        rays: ``"exact"`` (the crop's own map, undistorted, float64) or ``"official"`` (the official
            multi-view PPT formula: HRNet crop map, no undistortion, float32); see :mod:`mvpose.data.rays`.
            ``"official"`` refuses flip augmentation (the official code never flips).
    """

    # What a reader tells of its groups (:class:`Reading`; set by :meth:`from_reading`).
    breakdown: str | None = None  # how evaluation breaks MPJPE down: "action", "sequence" or None
    coco: Any = None  # the COCO reader's pycocotools ground truth, for keypoint AP (None for the other readers)
    split: str = ""
    root: Path | None = None
    incomplete_groups: Sequence = ()

    def __init__(
        self,
        groups: list[Group],
        skeleton,
        camera_ids: Sequence[int],
        *,
        input_hw: Sequence[int] = (256, 256),
        heatmap_hw: Sequence[int] | None = None,
        token_grid: Sequence[int] | None = None,
        sigma: float = 2.0,
        target_type: str = "heatmap",
        simcc_split: float = 2.0,
        simcc_sigma: float = 6.0,
        augment: bool = False,
        augment_config: tf.AugmentConfig | Mapping[str, Any] | None = None,
        seed: int = 0,
        name: str = "dataset",
        supervise_hidden: bool = False,
        rays: str = "exact",
    ) -> None:
        if rays not in RAY_MODES:
            raise ValueError(f"{name}: rays must be one of {RAY_MODES}, got {rays!r}")
        if target_type not in ("heatmap", "simcc", "both"):
            raise ValueError(f"{name}: target_type must be 'heatmap', 'simcc' or 'both', got {target_type!r}")
        self.groups = groups
        self.skeleton = skeleton
        self.camera_ids = list(camera_ids)
        self.input_hw = tuple(int(v) for v in input_hw)
        self.heatmap_hw = tuple(int(v) for v in (heatmap_hw or (self.input_hw[0] // 4, self.input_hw[1] // 4)))
        self.token_grid = tuple(int(v) for v in (token_grid or (self.input_hw[0] // 16, self.input_hw[1] // 16)))
        self.sigma = float(sigma)
        self.target_type = target_type
        self.simcc_split = float(simcc_split)
        self.simcc_sigma = float(simcc_sigma)
        self.augment = bool(augment)
        # Motion-capture labels (Human3.6M, Ski-Pose) are valid for hidden joints too, and hidden
        # joints are exactly where fusion helps: train on them. COCO's v=0 means "not labelled".
        self.supervise_hidden = bool(supervise_hidden)
        if isinstance(augment_config, Mapping):  # from a config file
            augment_config = tf.AugmentConfig(**augment_config)
        self.augment_config = augment_config or tf.AugmentConfig()
        self.rays = rays
        if rays == "official" and self.augment and self.augment_config.flip_prob > 0:
            raise ValueError(f"{name}: rays 'official' cannot follow flipped crops (the official code never flips); "
                             f"set augment_config.flip_prob to 0 (found {self.augment_config.flip_prob})")
        self.seed = int(seed)
        self.epoch = 0
        self.name = name
        self.tokens = tf.token_centers(self.input_hw, self.token_grid)
        self.lower_body = tf.lower_body_mask(skeleton.canonical)
        self.flip_index = np.asarray(skeleton.flip_index)

    @classmethod
    def from_reading(cls, reading: Reading, **options: Any) -> "MultiViewDataset":
        """Samples of a reader's :class:`Reading`; ``options`` as for the constructor (``supervise_hidden``
        defaults to the reading's)."""
        options.setdefault("supervise_hidden", reading.supervise_hidden)
        dataset = cls(reading.groups, reading.skeleton, reading.camera_ids, name=reading.name, **options)
        dataset.breakdown, dataset.coco = reading.breakdown, reading.coco
        dataset.split, dataset.root, dataset.incomplete_groups = reading.split, reading.root, reading.incomplete_groups
        return dataset

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return len(self.groups)

    @property
    def num_views(self) -> int:
        return len(self.camera_ids)

    @property
    def num_joints(self) -> int:
        return self.skeleton.num_joints

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the augmentation draws of integer indices (``(epoch, index)`` items carry their own)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ samples
    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``index``, or ``(epoch, index)`` to draw the augmentation of that epoch (:class:`EpochSampler`)."""
        epoch, index = index if isinstance(index, tuple) else (None, index)
        return self.load(index, epoch=epoch)

    def annotations(self, index: int) -> dict[str, Any]:
        """Labels and original cameras of group ``index`` without reading images (for evaluation)."""
        g = self.groups[index]
        st = lambda a: torch.as_tensor(np.stack([getattr(v, a) for v in g.views]), dtype=torch.float64)  # noqa: E731
        return {
            "joints_3d": torch.as_tensor(g.joints_3d if g.joints_3d is not None else np.zeros((self.num_joints, 3))),
            "joints_2d": st("joints_2d"),
            "joints_vis": st("joints_vis"),
            "K_orig": st("K"),
            "R": st("R"),
            "t": st("t"),
            "dist": st("dist"),
            "subject": g.subject,
            "action": g.action,
            "subaction": g.subaction,
            "frame": g.frame,
            "action_name": g.action_name,
            "camera_ids": [v.camera_id for v in g.views],
        }

    def _rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(index)])

    def load(self, index: int, views: Sequence[int] | None = None, epoch: int | None = None) -> dict[str, Any]:
        """Sample of group ``index`` with the views at positions ``views`` (default: all), augmented with the
        draws of ``epoch`` (default: :meth:`set_epoch`'s)."""
        group = self.groups[index]
        recs = [group.views[v] for v in views] if views is not None else group.views
        V = len(recs)
        H, W = self.input_hw
        images = [_read_image(r) for r in recs]
        joints = np.stack([r.joints_2d for r in recs]).astype(np.float64)  # (V, J, 2)
        vis = np.stack([r.joints_vis for r in recs]).astype(np.float64)  # (V, J)
        center = np.stack([r.center for r in recs]).astype(np.float64)
        scale = np.stack([r.scale for r in recs]).astype(np.float64)

        aug = tf.ViewAugmentation.identity(V)
        if self.augment:
            cfg = self.augment_config
            aug = tf.sample_augmentation(self._rng(index, epoch), cfg, V)
            for v in range(V):
                if aug.half_body[v] and (vis[v] > 0).sum() > cfg.half_body_min_joints:
                    box = tf.half_body_center_scale(joints[v], vis[v] > 0, self.lower_body, bool(aug.half_body_upper[v]), W / H)
                    if box is not None:
                        center[v], scale[v] = box
            scale = scale * aug.scale[:, None]
        affine = tf.crop_affine(center, scale, aug.rotation, self.input_hw)  # (V, 2, 3)
        perm = np.arange(self.num_joints)
        if aug.flip:
            affine = tf.hflip_affine(affine, W)
            perm = self.flip_index

        crops = []
        for v, img in enumerate(images):
            crop = tf.warp_image(img, affine[v], self.input_hw)
            if self.augment:
                crop = tf.color_jitter(crop, aug.jitter[v])
            crops.append(crop)

        joints = joints[:, perm]
        vis = vis[:, perm]
        joints_crop = tf.affine_points(joints, affine)
        # Cross-View-Fusion convention: a joint outside the crop is not trained on.
        inside = (joints_crop >= 0).all(-1) & (joints_crop[..., 0] < W) & (joints_crop[..., 1] < H)
        labelled = np.ones_like(vis) if self.supervise_hidden else vis
        weight = torch.from_numpy(labelled * inside)
        joints_crop_t = torch.from_numpy(joints_crop)

        sample: dict[str, Any] = {"image": tf.image_to_tensor(np.stack(crops))}
        if self.target_type in ("heatmap", "both"):
            sample["target"], weight = tg.heatmap_targets(joints_crop_t, weight, self.input_hw, self.heatmap_hw, self.sigma)
        if self.target_type in ("simcc", "both"):
            sample["target_x"], sample["target_y"], weight = tg.simcc_targets(
                joints_crop_t, weight, self.input_hw, self.simcc_split, self.simcc_sigma
            )
        sample["target_weight"] = weight.float()

        cams = Cameras.from_params(
            np.stack([r.K for r in recs]), np.stack([r.R for r in recs]), np.stack([r.t for r in recs]),
            np.stack([r.dist for r in recs]), np.array([[img.shape[1], img.shape[0]] for img in images], dtype=np.float64),
        )
        crop_cams = cams.crop(torch.from_numpy(affine), (W, H))
        if self.rays == "official":
            R = np.stack([r.R for r in recs])
            C = -np.einsum("vji,vj->vi", R, np.stack([r.t for r in recs]))  # camera centres
            rays = official_rays(np.stack([r.K for r in recs]), R, C, center, scale, aug.rotation, self.input_hw, self.token_grid)
        else:
            rays = crop_cams.pixel_rays(self.tokens.expand(V, -1, -1))
        f32 = lambda x: torch.as_tensor(x).float()  # noqa: E731
        joints_3d = group.joints_3d[perm] if group.joints_3d is not None else np.zeros((self.num_joints, 3))
        sample.update(
            K=f32(crop_cams.K), R=f32(crop_cams.R), t=f32(crop_cams.t), dist=f32(crop_cams.dist),
            image_size=f32(crop_cams.image_size), K_orig=f32(cams.K), image_size_orig=f32(cams.image_size),
            rays=f32(rays), joints_2d=f32(joints), joints_2d_crop=f32(joints_crop), joints_vis=f32(vis),
            affine=f32(affine), center=f32(center), scale=f32(scale), rotation=f32(aug.rotation),
            camera_ids=torch.tensor([r.camera_id for r in recs], dtype=torch.int64),
            joints_3d=f32(joints_3d), has_3d=torch.tensor(group.joints_3d is not None),
            flipped=torch.tensor(aug.flip),
            subject=torch.tensor(group.subject), action=torch.tensor(group.action),
            subaction=torch.tensor(group.subaction), frame=torch.tensor(group.frame),
            index=torch.tensor(int(index)), action_name=group.action_name,
            image_paths=[str(r.image) for r in recs],
        )
        for key, value in group.extra.items():
            sample[key] = torch.tensor(int(value))
        return sample


class SingleViewDataset(Dataset):
    """Every view of a multi-view dataset as its own single-view sample (V = 1), for monocular models.

    Index ``i`` is view ``i % V`` of group ``i // V``.
    """

    def __init__(self, base: MultiViewDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base) * self.base.num_views

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = index if isinstance(index, tuple) else (None, index)
        V = self.base.num_views
        return self.base.load(index // V, [index % V], epoch=epoch)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getattr__(self, name: str):
        if name == "base":  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.base, name)


class EpochSampler(Sampler):
    """Items ``(epoch, index)`` for a dataset's ``__getitem__``: the indices of ``sampler`` with the epoch set by
    :meth:`set_epoch` attached, so that DataLoader workers, persistent ones included, draw that epoch's
    augmentation (they hold a copy of the dataset made when they started).

    Args:
        sampler: the index sampler (e.g. a ``DistributedSampler``); its ``set_epoch`` is called as well.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch: tensors gain a batch dim first, other values become lists.

    All samples need the same number of views (use one ``views`` setting per dataset).
    """
    if not samples:
        raise ValueError("collate: empty batch")
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"collate: field '{key}' has different shapes in one batch: {sorted(shapes)}")
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


def sample_cameras(sample: Mapping[str, torch.Tensor], crop: bool = True) -> Cameras:
    """Cameras of a sample or batch: the crop cameras, or the original-image cameras (``crop=False``).

    Batch shape is ``(V,)`` for a sample and ``(B, V)`` for a batch.
    """
    K = sample["K"] if crop else sample["K_orig"]
    size = sample["image_size"] if crop else sample["image_size_orig"]
    return Cameras(K, sample["R"], sample["t"], sample["dist"], size)


# Config-file spellings (mvpose.engine.config: sizes as [H, W]) -> option names.
_OPTION_ALIASES = {"image_size": "input_hw", "heatmap_size": "heatmap_hw", "every": "frame_stride"}


def build_dataset(
    name: str,
    root: str | Path,
    split: str = "train",
    views: int | Sequence[int] | None = None,
    single_view: bool = False,
    **options: Any,
) -> MultiViewDataset | SingleViewDataset:
    """Build a dataset by name.

    Args:
        name: a registered dataset (:data:`mvpose.data.registry.DATASETS`: "h36m", "skipose", "coco").
        root: dataset root folder (layouts in docs/data.md).
        split: "train" or "validation" / "test" (Ski-Pose "train" / "test", COCO "train" / "val").
        views: None (all cameras), N (the first N) or a list of camera ids.
        single_view: serve each view as its own sample (monocular baselines on multi-view data).
        options: reader options (e.g. ``frame_stride``) and :class:`MultiViewDataset` options
            (``input_hw``, ``heatmap_hw``, ``token_grid``, ``target_type``, ``augment``, ``seed`` ...).
            ``augment`` defaults to True for the training split. The config spellings
            ``image_size`` / ``heatmap_size`` (``[H, W]``) and ``every`` are accepted as aliases of
            ``input_hw`` / ``heatmap_hw`` and ``frame_stride``.
    """
    for alias, option in _OPTION_ALIASES.items():
        if alias in options:
            if option in options:
                raise TypeError(f"build_dataset: give {option!r} or its alias {alias!r}, not both")
            options[option] = options.pop(alias)
    options.setdefault("augment", split == "train")
    dataset = read_dataset(dataset_reader(name), root, split, views, **options)
    return SingleViewDataset(dataset) if single_view else dataset


def read_dataset(
    reader: Callable[..., Reading], root: str | Path, split: str = "train", views: int | Sequence[int] | None = None,
    **options: Any,
) -> MultiViewDataset:
    """``reader(root, split, views, ...)`` into a :class:`MultiViewDataset`.

    Each option goes to whichever takes it, the reader (e.g. ``frame_stride``) or the dataset (e.g.
    ``augment``); one both take (COCO's ``input_hw``) goes to both.

    Raises:
        TypeError: an option neither takes (the message names it and the reader).
    """
    read_params = inspect.signature(reader).parameters
    data_params = inspect.signature(MultiViewDataset.__init__).parameters
    unknown = sorted(k for k in options if k not in read_params and k not in data_params)
    if unknown:
        raise TypeError(f"{reader.__name__}: unknown option(s) {unknown}; the reader takes {sorted(read_params)[:20]}, "
                        f"the dataset {sorted(k for k in data_params if k not in ('self', 'groups', 'skeleton', 'camera_ids'))}")
    reading = reader(root, split, views, **{k: v for k, v in options.items() if k in read_params})
    return MultiViewDataset.from_reading(reading, **{k: v for k, v in options.items() if k in data_params})
