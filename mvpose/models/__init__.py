"""Models: shared transformer blocks, CNN backbones, PPT / TokenPose, multi-view PPT,
the model registry and the parameter / MAC counter."""

from mvpose.models.blocks import Attention, Mlp, TransformerBlock, sine_positional_encoding_2d
from mvpose.models.multiview import MultiViewPPT, token_pixel_centers
from mvpose.models.ppt import PPT, keep_ratio_schedule
from mvpose.models.registry import build_model, list_models, register_model

__all__ = [
    "Attention",
    "Mlp",
    "TransformerBlock",
    "sine_positional_encoding_2d",
    "PPT",
    "keep_ratio_schedule",
    "MultiViewPPT",
    "token_pixel_centers",
    "build_model",
    "list_models",
    "register_model",
]
