"""HRPVT: High-Resolution Pyramid Vision Transformer (paper 003).

PVT v2 (:mod:`mvpose.models.pvt`) encodes the person crop; a SimCC head
(:mod:`mvpose.models.simcc`) reads the stride-32 map of the last stage directly (no
upsampling layers); the High-Resolution Pyramid Module (HRPM) adds convolutional inductive
biases at high resolution:

- HRPM v1 (``stem="hrpm"``, paper Fig. 2) replaces the first overlapping patch embedding: a
  stride-2 convolution and five more 3x3 convolutions chained with hybrid dilation rates
  give six maps of growing receptive field at H/2 x W/2; concatenated (6 x 16 = 96
  channels), a stride-2 convolution fuses and compresses them to the first stage's width at
  H/4 x W/4, then LayerNorm, as the token sequence of stage 1.
- HRPM v2 (paper Fig. 3) works on a stage's token map (C channels, h x w): a deconvolution to
  2h x 2w with C/2 channels, three chained hybrid-dilated 3x3 convolutions whose outputs are
  summed, a stride-2 convolution back to C x h x w, plus a residual connection. It is
  inserted after the first stage (``insertion="vanilla"``), after every encoder layer of the
  first stage (``"layer"``, for small baselines) or after every stage (``"stage"``).

The paper gives the dilation rates only as "hybrid dilated"; we use the HDC pattern
(1, 2, 5) (Wang et al., 2018), repeated for v1's six convolutions.

Output (``output_kind = "simcc"``): ``simcc_x (B, J, W k)``, ``simcc_y (B, J, H k)``,
``keypoints (B, J, 2)`` in input pixels and ``confidence (B, J)``; no heatmaps. Train with
:meth:`HRPVT.loss` on the ``target_x`` / ``target_y`` labels of the data pipeline
(``target_type: simcc``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from mvpose.models.base import PoseModel, batch_field
from mvpose.models.lite_hrnet import TINY_MONO
from mvpose.models.pvt import PVTv2, to_map, to_tokens
from mvpose.models.registry import register_config
from mvpose.models.simcc import SimCCHead, decode_simcc, simcc_loss

__all__ = ["HRPMStem", "HRPMv2", "HRPVT"]


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class HRPMStem(nn.Module):
    """HRPM v1: hierarchical hybrid-dilated stem. (B, 3, H, W) -> tokens (B, H/4 * W/4, dim).

    Args:
        dim: output channels (the first PVT stage's width).
        channels: channels of each of the pyramid maps.
        dilations: dilation of each chained convolution; the first one also has stride 2.
    """

    def __init__(self, dim: int, channels: int = 16, dilations: Sequence[int] = (1, 2, 5, 1, 2, 5)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            _conv_bn_relu(3 if i == 0 else channels, channels, 2 if i == 0 else 1, d) for i, d in enumerate(dilations)
        )
        self.fuse = nn.Conv2d(channels * len(dilations), dim, 3, 2, 1)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        maps, x = [], images
        for conv in self.convs:
            x = conv(x)
            maps.append(x)
        y = self.fuse(torch.cat(maps, dim=1))
        return self.norm(to_tokens(y)), (y.shape[2], y.shape[3])


class HRPMv2(nn.Module):
    """HRPM v2: residual high-resolution pyramid on a (B, C, h, w) map -> (B, C, h, w).

    Args:
        channels: C (even).
        dilations: rates of the chained convolutions at 2h x 2w, whose outputs are summed.
    """

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 5)) -> None:
        super().__init__()
        half = channels // 2
        self.up = nn.Sequential(
            nn.ConvTranspose2d(channels, half, 4, 2, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True)
        )
        self.convs = nn.ModuleList(_conv_bn_relu(half, half, 1, d) for d in dilations)
        self.down = nn.Sequential(nn.Conv2d(half, channels, 3, 2, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(x)
        total = torch.zeros_like(y)
        for conv in self.convs:
            y = conv(y)
            total = total + y
        return x + self.down(total)


class HRPVT(PoseModel):
    """PVT v2 + HRPM + SimCC.

    Args:
        num_joints: J.
        image_size: input (H, W), divisible by 32.
        heatmap_size: accepted for the engine's common configuration and ignored.
        backbone: PVT v2 preset (``b0``..``b3``); backbone_options: overrides of it.
        stem: ``hrpm`` (HRPM v1) or ``patch`` (PVT v2's own first patch embedding).
        insertion: HRPM v2 placement: ``none``, ``vanilla``, ``layer`` or ``stage``.
        stem_channels: channels of each HRPM v1 pyramid map.
        stem_dilations: HRPM v1 dilations; hrpm_dilations: HRPM v2 dilations.
        split_ratio: SimCC bins per pixel k.
    """

    output_kind = "simcc"

    def __init__(
        self,
        num_joints: int = 17,
        image_size: Sequence[int] = (256, 192),
        heatmap_size: Sequence[int] | None = None,
        backbone: str = "b2",
        backbone_options: dict | None = None,
        stem: str = "hrpm",
        insertion: str = "none",
        stem_channels: int = 16,
        stem_dilations: Sequence[int] = (1, 2, 5, 1, 2, 5),
        hrpm_dilations: Sequence[int] = (1, 2, 5),
        split_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        self.config = dict(
            num_joints=num_joints, image_size=list(image_size),
            heatmap_size=list(heatmap_size) if heatmap_size is not None else None,
            backbone=backbone,
            backbone_options={k: list(v) if isinstance(v, tuple) else v for k, v in (backbone_options or {}).items()},
            stem=stem, insertion=insertion,
            stem_channels=stem_channels, stem_dilations=list(stem_dilations),
            hrpm_dilations=list(hrpm_dilations), split_ratio=split_ratio,
        )
        if stem not in ("hrpm", "patch"):
            raise ValueError(f"HRPVT: stem must be 'hrpm' or 'patch', found {stem!r}")
        if insertion not in ("none", "vanilla", "layer", "stage"):
            raise ValueError(f"HRPVT: insertion must be none, vanilla, layer or stage, found {insertion!r}")
        ih, iw = image_size
        if ih % 32 or iw % 32:
            raise ValueError(f"HRPVT: image_size {tuple(image_size)} must be divisible by 32")
        self.num_joints = num_joints
        self.image_size = (ih, iw)
        self.split_ratio = float(split_ratio)
        self.insertion = insertion
        self.backbone = PVTv2(backbone, **(backbone_options or {}))
        dims = self.backbone.dims
        self.stem = HRPMStem(dims[0], stem_channels, stem_dilations) if stem == "hrpm" else None
        if self.stem is not None:
            self.backbone.patch_embeds[0] = nn.Identity()  # replaced: not counted as parameters
        if insertion == "layer":
            self.hrpm = nn.ModuleList(HRPMv2(dims[0], hrpm_dilations) for _ in self.backbone.stages[0])
        elif insertion == "stage":
            self.hrpm = nn.ModuleList(HRPMv2(d, hrpm_dilations) for d in dims)
        elif insertion == "vanilla":
            self.hrpm = nn.ModuleList([HRPMv2(dims[0], hrpm_dilations)])
        else:
            self.hrpm = nn.ModuleList()
        stride = self.backbone.strides[-1]
        self.head = SimCCHead(dims[-1], (ih // stride, iw // stride), num_joints, image_size, split_ratio)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> last-stage map (B, C_4, H/32, W/32)."""
        bb = self.backbone
        x = images
        for i in range(len(bb.stages)):
            if i == 0 and self.stem is not None:
                tokens, hw = self.stem(x)
            else:
                tokens, hw = bb.patch_embeds[i](x)
            if i == 0 and self.insertion == "layer":
                for block, hrpm in zip(bb.stages[0], self.hrpm):
                    tokens = to_tokens(hrpm(to_map(block(tokens, hw), hw)))
                x = to_map(bb.norms[0](tokens), hw)
            else:
                x = bb.run_stage(i, tokens, hw)
            if self.insertion == "stage" or (self.insertion == "vanilla" and i == 0):
                x = self.hrpm[i](x)
        return x

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict SimCC logits and decoded keypoints.

        Args:
            images: (B, 3, H, W).

        Returns:
            dict with ``simcc_x`` (B, J, W k), ``simcc_y`` (B, J, H k), ``keypoints`` (B, J, 2)
            ``(x, y)`` input pixels and ``confidence`` (B, J).
        """
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, *self.image_size):
            raise ValueError(
                f"HRPVT: expected images of shape (B, 3, {self.image_size[0]}, {self.image_size[1]}), "
                f"found {tuple(images.shape)}"
            )
        simcc_x, simcc_y = self.head(self.features(images))
        keypoints, confidence = decode_simcc(simcc_x, simcc_y, self.split_ratio)
        return {"simcc_x": simcc_x, "simcc_y": simcc_y, "keypoints": keypoints, "confidence": confidence}

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """SimCC KL loss (:func:`mvpose.models.simcc.simcc_loss`) of ``simcc_x`` / ``simcc_y``
        ``(B, V, J, W k / H k)`` against the batch's ``target_x`` / ``target_y`` 1D labels of the same
        shapes, weighted by ``target_weight (B, V, J)``; scalar."""
        x, y = outputs["simcc_x"].flatten(0, 1), outputs["simcc_y"].flatten(0, 1)
        return simcc_loss(x, y, batch_field(batch, "target_x", x), batch_field(batch, "target_y", x),
                          batch_field(batch, "target_weight", x))

    def predict(
        self, outputs: Mapping[str, torch.Tensor], input_hw: tuple[int, int], decode: str = "udp"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The SimCC argmax joints ``keypoints (B, V, J, 2)`` (crop pixels) and ``confidence
        (B, V, J)`` of the forward pass, on the CPU (``decode`` is for heatmaps and not used)."""
        return outputs["keypoints"].float().cpu(), outputs["confidence"].float().cpu()


# ----------------------------------------------------------------------------------------
# Registered configurations. HRPVT on PVT v2-b2 with SimCC (k = 2): v1 = HRPM v1 stem; v2 = stem
# + HRPM v2 after every layer of stage 1 (see mvpose.models.flops for why this is the variant of
# the abstract); a tiny CPU variant (128x96 input).
_HRPVT = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48), backbone="b2", split_ratio=2.0)
register_config("hrpvt_v1", HRPVT, **_HRPVT, stem="hrpm", insertion="none")
register_config("hrpvt_v2", HRPVT, **_HRPVT, stem="hrpm", insertion="layer")
register_config("hrpvt_tiny", HRPVT, **TINY_MONO, backbone="b0",
                backbone_options={"dims": (16, 32, 64, 128), "heads": (1, 2, 4, 8), "depths": (1, 1, 1, 1)},
                stem="hrpm", insertion="layer", stem_channels=8)
