"""One registry of named model configurations.

``register_model(name)`` decorates a factory ``(**overrides) -> nn.Module``; the model it
returns carries ``model.config``, a plain dict of its constructor arguments, to which
:func:`build_model` adds ``name``. So ``build_model(**model.config)`` rebuilds the same
architecture (what checkpoints store).

The PPT family below follows paper 001 section 4.1.2 and the official configs (TokenPose /
PPT repositories): D = 192, 8 heads, MLP ratio 3, 256 visual tokens, keep ratio 0.7.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from mvpose.models.multiview import MultiViewPPT
from mvpose.models.ppt import PPT

__all__ = ["register_model", "build_model", "list_models", "model_factory"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a factory ``(**overrides) -> nn.Module`` under ``name``."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"register_model: {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered under ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"build_model: unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name]


def build_model(name: str, **cfg: Any) -> nn.Module:
    """Build the registered model ``name`` with ``cfg`` overriding its defaults.

    The returned model's ``config`` holds ``name`` and every constructor argument.
    """
    model = model_factory(name)(**cfg)
    model.config = {"name": name, **getattr(model, "config", cfg)}
    return model


def _register_config(name: str, cls: type[nn.Module], **defaults: Any) -> None:
    register_model(name)(lambda **cfg: cls(**{**defaults, **cfg}))


# Single-view, COCO 256x192: a 4x3 patch on the 64x48 stride-4 map gives 16x16 = 256 tokens.
_COCO = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48), patch_size=(4, 3),
             dim=192, heads=8, mlp_ratio=3.0)
# TokenPose-S scales attention logits by D^-0.5; the HRNet-based variants by (D/heads)^-0.5.
_S = dict(_COCO, backbone="stem", depth=12, scale_with_head=False)
_B = dict(_COCO, backbone="hrnet_w32", depth=12, scale_with_head=True)
# L/D6: depth 6 with HTI before the 2nd, 4th and 5th layers (paper 001, section 4.1.2; the
# official code keeps its default (3, 6, 9), i.e. one HTI at layer 3 for depth 6).
_L = dict(_COCO, backbone="hrnet_w48", depth=6, scale_with_head=True)

_register_config("tokenpose_s", PPT, **_S, keep_ratio=1.0, prune_layers=())
_register_config("ppt_s", PPT, **_S, keep_ratio=0.7, prune_layers=(3, 6, 9))
_register_config("tokenpose_b", PPT, **_B, keep_ratio=1.0, prune_layers=())
_register_config("ppt_b", PPT, **_B, keep_ratio=0.7, prune_layers=(3, 6, 9))
_register_config("ppt_l", PPT, **_L, keep_ratio=0.7, prune_layers=(1, 3, 4))

# Multi-view (Human3.6M, 256x256, 4x4 patches -> 16x16 tokens, 64x64 heatmaps): the first 9
# layers per view, HTI before the 4th and 7th, the last 3 layers fuse the views (paper text;
# its 9.7 GMACs confirm it). The official code splits 10 + 2 with HTI at (3, 6, 9):
# build_model("mv_ppt_s", fusion_layers=2, prune_layers=(3, 6, 9)).
_H36M = dict(num_joints=17, image_size=(256, 256), heatmap_size=(64, 64), patch_size=(4, 4),
             dim=192, heads=8, mlp_ratio=3.0, depth=12, keep_ratio=0.7, prune_layers=(3, 6),
             fusion_layers=3, use_3d_pe=True)
_register_config("mv_ppt_s", MultiViewPPT, **_H36M, backbone="stem", scale_with_head=False)
_register_config("mv_ppt_b", MultiViewPPT, **_H36M, backbone="hrnet_w32", scale_with_head=True)

# Tiny CPU demo models: 128x128 input, narrow one-block stem, 16x16 tokens, 4 layers of 64.
_TINY = dict(num_joints=17, image_size=(128, 128), heatmap_size=(32, 32), patch_size=(2, 2),
             backbone="stem", backbone_options={"width": 32, "blocks": 1}, dim=64, depth=4, heads=4,
             mlp_ratio=2.0, keep_ratio=0.7, scale_with_head=True)
_register_config("ppt_tiny", PPT, **_TINY, prune_layers=(1, 2))
_register_config("mv_ppt_tiny", MultiViewPPT, **_TINY, prune_layers=(1, 2), fusion_layers=1, use_3d_pe=True)

# ----------------------------------------------------------------------------------------
# Monocular baselines (papers 000, 002, 003), COCO 256x192 unless said otherwise.
from mvpose.models.hrpvt import HRPVT  # noqa: E402
from mvpose.models.lite_hrnet import LiteHRNet  # noqa: E402
from mvpose.models.prior import CropPrior  # noqa: E402
from mvpose.models.sharpose import SHaRPose  # noqa: E402
from mvpose.models.vitranspose import ViTransPose  # noqa: E402

# Lite-HRNet-18 / -30 (official configs): the lightweight estimator guiding ViTransPose.
_LITE = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48), stem_channels=32,
             widths=(40, 80, 160, 320), num_blocks=2, reduce_ratio=8)
_register_config("lite_hrnet_18", LiteHRNet, **_LITE, num_modules=(2, 4, 2))
_register_config("lite_hrnet_30", LiteHRNet, **_LITE, num_modules=(3, 8, 3))

# ViTransPose-S/-B: ViT-S/B on 16x16 patches with ViTPose's classic decoder (``vitranspose_b``
# is ViTPose-B); ``_bfs`` / ``_bone`` select patches around the Lite-HRNet-18 keypoints (give it
# trained weights with guide_checkpoint=PATH, or pass guide_keypoints to forward), ``_jointtok``
# with learnable joint tokens.
_VITP = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48), patch_size=16, depth=12,
             heads=12, mlp_ratio=4.0, qkv_bias=True, skeleton="coco")
for _size, _dim in (("s", 384), ("b", 768)):
    _register_config(f"vitranspose_{_size}", ViTransPose, **_VITP, dim=_dim, selection="none")
    _register_config(f"vitranspose_{_size}_bfs", ViTransPose, **_VITP, dim=_dim, selection="neighbors",
                     num_neighbors=4, guide="lite_hrnet_18")
    _register_config(f"vitranspose_{_size}_bone", ViTransPose, **_VITP, dim=_dim, selection="skeleton",
                     num_neighbors=0, guide="lite_hrnet_18")
    _register_config(f"vitranspose_{_size}_jointtok", ViTransPose, **_VITP, dim=_dim, selection="joint_tokens",
                     keep_ratio=0.7, prune_layers=(3, 6, 9))

# SHaRPose-Small/-Base (official configs): coarse stage at half the input size (128x96), fine
# stage at the input size (256x192), 16x16 patches.
_SHARP = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48),
              patch_size=16, depth=12, heads=12, mlp_ratio=4.0, qkv_bias=True, quality_threshold=0.99)
_register_config("sharpose_s", SHaRPose, **_SHARP, dim=384, alpha=0.5)
_register_config("sharpose_b", SHaRPose, **_SHARP, dim=768, alpha=0.4)

# HRPVT on PVT v2-b2 with SimCC (k = 2): v1 = HRPM v1 stem; v2 = stem + HRPM v2 after every
# layer of stage 1 (see mvpose.models.flops for why this is the variant of the abstract).
_HRPVT = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48), backbone="b2", split_ratio=2.0)
_register_config("hrpvt_v1", HRPVT, **_HRPVT, stem="hrpm", insertion="none")
_register_config("hrpvt_v2", HRPVT, **_HRPVT, stem="hrpm", insertion="layer")

# Tiny CPU variants (128x96 input) for tests and demos.
_TINY_MONO = dict(num_joints=17, image_size=(128, 96), heatmap_size=(32, 24))
_register_config("lite_hrnet_tiny", LiteHRNet, **_TINY_MONO, stem_channels=16, widths=(16, 32, 64, 128),
                 num_modules=(1, 1, 1), num_blocks=1, reduce_ratio=4)
_TINY_VITP = dict(_TINY_MONO, patch_size=16, dim=64, depth=2, heads=4, mlp_ratio=2.0, decoder_channels=32,
                  skeleton="coco", prune_layers=(0,))
_register_config("vitranspose_tiny", ViTransPose, **_TINY_VITP)
# Guided by lite_hrnet_tiny: train it first and pass guide_checkpoint=PATH (docs/baselines.md).
_register_config("vitranspose_tiny_bfs", ViTransPose, **_TINY_VITP, selection="neighbors", num_neighbors=1,
                 guide="lite_hrnet_tiny")
_register_config("vitranspose_tiny_bone", ViTransPose, **_TINY_VITP, selection="skeleton", num_neighbors=0,
                 guide="lite_hrnet_tiny")
_register_config("sharpose_tiny", SHaRPose, **_TINY_MONO, patch_size=16, dim=64, depth=2, heads=4,
                 mlp_ratio=2.0, alpha=0.5, attention_start=0)
_register_config("hrpvt_tiny", HRPVT, **_TINY_MONO, backbone="b0",
                 backbone_options={"dims": (16, 32, 64, 128), "heads": (1, 2, 4, 8), "depths": (1, 1, 1, 1)},
                 stem="hrpm", insertion="layer", stem_channels=8)
# Reference: input-independent heatmaps, the average crop (see mvpose.models.prior).
_register_config("crop_prior", CropPrior, num_joints=17, image_size=(128, 128), heatmap_size=(32, 32))
