"""The crop prior: a reference "model" that never looks at the image.

It learns one heatmap per joint, shared by every crop, so after training it predicts where each
joint lies on average in a person-centred crop (the mode of the training crops). Any model that
really localises joints must beat it; a model that only matches it has learned the crop, not
the person. On the synthetic set it reaches the root, belly, neck and head (the crop is centred
on the person) but not the limbs, which is why the comparison tables list it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mvpose.models.base import PoseModel
from mvpose.models.registry import register_config

__all__ = ["CropPrior"]


class CropPrior(PoseModel):
    """Learned, input-independent heatmaps.

    Args:
        num_joints: J.
        image_size: (H, W) of the input crops (checked, otherwise unused).
        heatmap_size: (h, w) of the heatmaps.
    """

    def __init__(self, num_joints: int = 17, image_size: Sequence[int] = (128, 128), heatmap_size: Sequence[int] = (32, 32)) -> None:
        super().__init__()
        self.image_size = tuple(int(s) for s in image_size)
        self.heatmap_size = tuple(int(s) for s in heatmap_size)
        self.heatmaps = nn.Parameter(torch.zeros(num_joints, *self.heatmap_size))
        self.config = {"num_joints": num_joints, "image_size": list(self.image_size), "heatmap_size": list(self.heatmap_size)}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (B, 3, H, W) -> ``heatmaps`` (B, J, h, w), the same for every crop."""
        if images.dim() != 4 or tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"CropPrior: expected images of shape (B, 3, {self.image_size[0]}, {self.image_size[1]}), found {tuple(images.shape)}")
        return {"heatmaps": self.heatmaps.expand(images.shape[0], -1, -1, -1)}


# Reference: input-independent heatmaps, the average crop.
register_config("crop_prior", CropPrior, num_joints=17, image_size=(128, 128), heatmap_size=(32, 32))
