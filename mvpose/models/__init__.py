"""Models: shared transformer blocks, CNN backbones, PPT / TokenPose, multi-view PPT, the
baselines, the model registry and the parameter / MAC counter.

Each model module registers its configurations beside its class (:mod:`mvpose.models.registry`);
importing this package imports every model module, so the registry is complete whenever any
part of :mod:`mvpose.models` is in use.
"""

from mvpose.models.blocks import Attention, Mlp, TransformerBlock, sine_positional_encoding_2d
from mvpose.models.hrpvt import HRPVT
from mvpose.models.lite_hrnet import LiteHRNet
from mvpose.models.multiview import MultiViewPPT, token_pixel_centers
from mvpose.models.ppt import PPT, keep_ratio_schedule
from mvpose.models.prior import CropPrior
from mvpose.models.registry import build_model, list_models, register_config, register_model
from mvpose.models.sharpose import SHaRPose
from mvpose.models.vitranspose import ViTransPose

__all__ = [
    "Attention",
    "Mlp",
    "TransformerBlock",
    "sine_positional_encoding_2d",
    "PPT",
    "keep_ratio_schedule",
    "MultiViewPPT",
    "token_pixel_centers",
    "LiteHRNet",
    "ViTransPose",
    "SHaRPose",
    "HRPVT",
    "CropPrior",
    "build_model",
    "list_models",
    "register_config",
    "register_model",
]
