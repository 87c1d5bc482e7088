"""Lite-HRNet (Yu et al., CVPR 2021): the lightweight pose estimator that guides ViTransPose's
patch selection (paper 000 uses Lite-HRNet-18), registered as a model of its own.

Architecture, following the official configuration of Lite-HRNet-18 at 256x192:

- stem: 3x3 stride-2 convolution (32 channels), then a shuffle block that halves the
  resolution again (stride 4, 32 channels);
- three stages of 2 / 3 / 4 parallel branches (widths 40, 80, 160, 320; each new branch is a
  stride-2 depthwise-separable transition of the lowest one), made of 2 / 4 / 2 modules;
  each module is 2 *conditional channel weighting* blocks followed by the HRNet fusion of
  all resolutions;
- conditional channel weighting: half of the channels pass unchanged; the other half is
  reweighted across resolutions (pool every branch to the smallest size, 1x1 convs,
  sigmoid weights per branch), filtered by a 3x3 depthwise convolution and reweighted
  spatially (squeeze-excitation); then the halves are concatenated and channel-shuffled;
- an iterative head sums the branches from low to high resolution through depthwise-
  separable convolutions; a 1x1 convolution gives the heatmaps at stride 4.

Lite-HRNet-30 has 3 / 8 / 3 modules. The official fusion adds the identity branch twice (its
loop starts from ``out[0]`` and adds ``out[0]`` again); here every branch is added once.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mvpose.models.base import PoseModel
from mvpose.models.registry import register_config

__all__ = ["LiteHRNet", "channel_shuffle", "heatmap_argmax"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups: (B, C, H, W) -> (B, C, H, W)."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def heatmap_argmax(heatmaps: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
    """Peak of every heatmap in input pixels (UDP scaling, as the data pipeline encodes).

    Args:
        heatmaps: (..., J, Hh, Wh).
        image_size: input ``(H, W)``.

    Returns:
        (..., J, 2) ``(x, y)`` in input pixels.
    """
    hh, wh = heatmaps.shape[-2:]
    idx = heatmaps.flatten(-2).argmax(dim=-1)
    xy = torch.stack((idx % wh, torch.div(idx, wh, rounding_mode="floor")), dim=-1).to(heatmaps.dtype)
    scale = torch.tensor(
        [(image_size[1] - 1) / max(wh - 1, 1), (image_size[0] - 1) / max(hh - 1, 1)],
        dtype=heatmaps.dtype, device=heatmaps.device,
    )
    return xy * scale


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _dw_pw(cin: int, cout: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """3x3 depthwise (+BN) then 1x1 pointwise (+BN, optional ReLU)."""
    return nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin, relu=False), _conv_bn(cin, cout, 1, relu=relu))


class Stem(nn.Module):
    """Stride-4 stem: 3x3/2 convolution, then a shuffle block with a stride-2 depthwise step on
    each half of the channels. (B, 3, H, W) -> (B, out, H/4, W/4)."""

    def __init__(self, channels: int = 32, out_channels: int = 32, expand_ratio: float = 1.0) -> None:
        super().__init__()
        half = channels // 2
        mid = int(round(channels * expand_ratio))
        same = channels == out_channels
        self.conv1 = _conv_bn(3, channels, 3, 2)
        self.branch1 = _dw_pw(half, out_channels - (half if same else channels), stride=2)
        self.branch2 = nn.Sequential(
            _conv_bn(half, mid, 1),
            _conv_bn(mid, mid, 3, 2, groups=mid, relu=False),
            _conv_bn(mid, half if same else channels, 1),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.conv1(x).chunk(2, dim=1)
        return channel_shuffle(torch.cat((self.branch1(x1), self.branch2(x2)), dim=1), 2)


class CrossResolutionWeighting(nn.Module):
    """Channel weights computed from all branches pooled to the smallest resolution."""

    def __init__(self, channels: Sequence[int], ratio: int) -> None:
        super().__init__()
        self.channels = list(channels)
        total = sum(channels)
        self.fc = nn.Sequential(_conv_bn(total, int(total / ratio), 1), _conv_bn(int(total / ratio), total, 1, relu=False))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        size = xs[-1].shape[-2:]
        pooled = torch.cat([F.adaptive_avg_pool2d(x, size) for x in xs[:-1]] + [xs[-1]], dim=1)
        weights = torch.sigmoid(self.fc(pooled)).split(self.channels, dim=1)
        return [x * F.interpolate(a, size=x.shape[-2:], mode="nearest") for x, a in zip(xs, weights)]


class SpatialWeighting(nn.Module):
    """Squeeze-excitation: global pooling, 1x1 -> ReLU -> 1x1 -> sigmoid channel weights."""

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, int(channels / ratio), 1)
        self.fc2 = nn.Conv2d(int(channels / ratio), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class ConditionalChannelWeighting(nn.Module):
    """Lite-HRNet block: half the channels of every branch pass, the other half is weighted."""

    def __init__(self, channels: Sequence[int], reduce_ratio: int) -> None:
        super().__init__()
        half = [c // 2 for c in channels]
        self.cross = CrossResolutionWeighting(half, reduce_ratio)
        self.depthwise = nn.ModuleList(_conv_bn(c, c, 3, groups=c, relu=False) for c in half)
        self.spatial = nn.ModuleList(SpatialWeighting(c) for c in half)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        halves = [x.chunk(2, dim=1) for x in xs]
        weighted = self.cross([h[1] for h in halves])
        weighted = [sw(dw(x)) for x, dw, sw in zip(weighted, self.depthwise, self.spatial)]
        return [channel_shuffle(torch.cat((h[0], x), dim=1), 2) for h, x in zip(halves, weighted)]


class LiteHRModule(nn.Module):
    """``blocks`` conditional channel weighting blocks, then HRNet fusion of every resolution."""

    def __init__(self, channels: Sequence[int], blocks: int, reduce_ratio: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ConditionalChannelWeighting(channels, reduce_ratio) for _ in range(blocks))
        n = len(channels)
        self.fuse = nn.ModuleList(
            nn.ModuleList(self._fuse_path(channels, src, dst) for src in range(n)) for dst in range(n)
        )

    @staticmethod
    def _fuse_path(channels: Sequence[int], src: int, dst: int) -> nn.Module:
        if src == dst:
            return nn.Identity()
        if src > dst:  # lower resolution: project, upsample in forward
            return _conv_bn(channels[src], channels[dst], 1, relu=False)
        steps: list[nn.Module] = [
            nn.Sequential(_dw_pw(channels[src], channels[src], 2, relu=False), nn.ReLU(inplace=True))
            for _ in range(dst - src - 1)
        ]
        steps.append(_dw_pw(channels[src], channels[dst], 2, relu=False))
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for block in self.blocks:
            xs = block(xs)
        out = []
        for dst, paths in enumerate(self.fuse):
            y = xs[dst]
            for src, path in enumerate(paths):
                if src == dst:
                    continue
                z = path(xs[src])
                if src > dst:
                    z = F.interpolate(z, size=xs[dst].shape[-2:], mode="nearest")
                y = y + z
            out.append(F.relu(y))
        return out


class IterativeHead(nn.Module):
    """From the lowest resolution up: add the upsampled previous output, then a depthwise-
    separable convolution to the next branch's width. Returns the highest-resolution map."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        rev = list(channels)[::-1]
        outs = rev[1:] + rev[-1:]
        self.projects = nn.ModuleList(_dw_pw(c, o) for c, o in zip(rev, outs))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        last = None
        for x, project in zip(xs[::-1], self.projects):
            if last is not None:
                x = x + F.interpolate(last, size=x.shape[-2:], mode="bilinear", align_corners=True)
            last = project(x)
        return last


class LiteHRNet(PoseModel):
    """Lite-HRNet pose estimator: image -> heatmaps at stride 4.

    Args:
        num_joints: J heatmaps.
        image_size: input (H, W), divisible by 32.
        heatmap_size: (H/4, W/4).
        stem_channels: channels of the stem (its output too).
        widths: branch widths, highest resolution first; stage ``s`` uses the first ``s + 2``.
        num_modules: modules per stage (Lite-HRNet-18: (2, 4, 2); -30: (3, 8, 3)).
        num_blocks: conditional channel weighting blocks per module.
        reduce_ratio: channel reduction of the cross-resolution weighting.
    """


    def __init__(
        self,
        num_joints: int = 17,
        image_size: Sequence[int] = (256, 192),
        heatmap_size: Sequence[int] = (64, 48),
        stem_channels: int = 32,
        widths: Sequence[int] = (40, 80, 160, 320),
        num_modules: Sequence[int] = (2, 4, 2),
        num_blocks: int = 2,
        reduce_ratio: int = 8,
    ) -> None:
        super().__init__()
        self.config = dict(
            num_joints=num_joints, image_size=list(image_size), heatmap_size=list(heatmap_size),
            stem_channels=stem_channels, widths=list(widths), num_modules=list(num_modules),
            num_blocks=num_blocks, reduce_ratio=reduce_ratio,
        )
        ih, iw = image_size
        stride = 4 * 2 ** len(num_modules)
        if ih % stride or iw % stride:
            raise ValueError(f"LiteHRNet: image_size {tuple(image_size)} must be divisible by {stride}")
        if tuple(heatmap_size) != (ih // 4, iw // 4):
            raise ValueError(
                f"LiteHRNet: heatmap_size must be image_size / 4 = {(ih // 4, iw // 4)}, found {tuple(heatmap_size)}"
            )
        if len(widths) != len(num_modules) + 1:
            raise ValueError(f"LiteHRNet: need {len(num_modules) + 1} widths for {len(num_modules)} stages, found {len(widths)}")
        self.num_joints = num_joints
        self.image_size = (ih, iw)
        self.stem = Stem(stem_channels, stem_channels)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev = [stem_channels]
        for s, modules in enumerate(num_modules):
            cur = list(widths[: s + 2])
            trans = nn.ModuleList()
            for i, c in enumerate(cur):
                if i < len(prev):
                    trans.append(nn.Identity() if prev[i] == c else _dw_pw(prev[i], c))
                else:  # a new, lower branch from the lowest existing one
                    trans.append(_dw_pw(prev[-1], c, stride=2))
            self.transitions.append(trans)
            self.stages.append(nn.Sequential(*[LiteHRModule(cur, num_blocks, reduce_ratio) for _ in range(modules)]))
            prev = cur
        self.head = IterativeHead(prev)
        self.final = nn.Conv2d(prev[0], num_joints, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, widths[0], H/4, W/4)."""
        xs = [self.stem(images)]
        for trans, stage in zip(self.transitions, self.stages):
            xs = [t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(trans)]
            xs = stage(xs)
        return self.head(xs)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> dict with ``heatmaps`` (B, J, H/4, W/4)."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, *self.image_size):
            raise ValueError(
                f"LiteHRNet: expected images of shape (B, 3, {self.image_size[0]}, {self.image_size[1]}), "
                f"found {tuple(images.shape)}"
            )
        return {"heatmaps": self.final(self.features(images))}


# ----------------------------------------------------------------------------------------
# Registered configurations. Lite-HRNet-18 / -30 (official configs): the lightweight estimator
# guiding ViTransPose; a tiny CPU variant (128x96 input) for tests and demos.
_LITE = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48), stem_channels=32,
             widths=(40, 80, 160, 320), num_blocks=2, reduce_ratio=8)
register_config("lite_hrnet_18", LiteHRNet, **_LITE, num_modules=(2, 4, 2))
register_config("lite_hrnet_30", LiteHRNet, **_LITE, num_modules=(3, 8, 3))
TINY_MONO = dict(num_joints=17, image_size=(128, 96), heatmap_size=(32, 24))
register_config("lite_hrnet_tiny", LiteHRNet, **TINY_MONO, stem_channels=16, widths=(16, 32, 64, 128),
                num_modules=(1, 1, 1), num_blocks=1, reduce_ratio=4)
