"""Dataset readers (Human3.6M, Ski-Pose, COCO), the common sample format, crops, augmentation, targets.

The sample format is documented in :mod:`mvpose.data.dataset`.
"""

from mvpose.data.dataset import (
    DATASETS,
    DatasetError,
    EpochSampler,
    Group,
    MultiViewDataset,
    Reading,
    SingleViewDataset,
    ViewRecord,
    build_dataset,
    collate,
    read_dataset,
    sample_cameras,
)
from mvpose.data.coco import COCODataset, read_coco
from mvpose.data.h36m import H36MDataset, read_h36m
from mvpose.data.skipose import SKIPOSE_JOINTS, SkiPoseDataset, read_skipose
from mvpose.data.targets import crop_to_heatmap, heatmap_targets, heatmap_to_crop, simcc_targets
from mvpose.data.transforms import AugmentConfig, token_centers

__all__ = [
    "DATASETS",
    "AugmentConfig",
    "DatasetError",
    "EpochSampler",
    "COCODataset",
    "H36MDataset",
    "SKIPOSE_JOINTS",
    "SkiPoseDataset",
    "Group",
    "MultiViewDataset",
    "Reading",
    "SingleViewDataset",
    "ViewRecord",
    "build_dataset",
    "read_coco",
    "read_dataset",
    "read_h36m",
    "read_skipose",
    "collate",
    "crop_to_heatmap",
    "heatmap_targets",
    "heatmap_to_crop",
    "sample_cameras",
    "simcc_targets",
    "token_centers",
]
