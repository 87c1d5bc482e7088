"""CNN backbones of the pose transformers: the TokenPose stem-net and truncated HRNets.

All backbones map an image (B, 3, H, W) to a feature map (B, C, H/4, W/4) and expose
``out_channels`` and ``stride``.

- ``stem``: two stride-2 3x3 convolutions and a ResNet ``layer1`` (4 bottlenecks,
  256 channels): the "shallow stem-net" of TokenPose-S / PPT-S.
- ``hrnet_w32`` / ``hrnet_w48``: that stem followed by HRNet stages 2 and 3 (stage 4 is
  dropped), returning the highest-resolution branch (32 / 48 channels), as TokenPose-B and
  TokenPose-L/D6 (and so PPT-B, PPT-L/D6) use them in the official configs.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["StemNet", "HRNet", "build_backbone", "BACKBONES"]

BN_MOMENTUM = 0.1


def _onednn_fusable(x: torch.Tensor) -> bool:
    """Whether :meth:`ConvBN.fused` may run on ``x``: float32 on the CPU, oneDNN built in,
    no autograd (the fused oneDNN operators have no backward) and no dispatch mode active
    (FLOP counters and tracers know the standard operators, not oneDNN's fused ones)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.is_available()
        and _get_current_dispatch_mode() is None
    )


# Folded, oneDNN-packed weights per ConvBN, keyed by the module; an entry is rebuilt when any
# of the folded tensors changes (an optimizer step, load_state_dict and .to() bump their version
# counters or replace them). Kept outside the module so that deepcopy and pickling never see the
# opaque oneDNN tensors.
_PACKED: "weakref.WeakKeyDictionary[ConvBN, tuple[tuple, torch.Tensor, torch.Tensor]]" = weakref.WeakKeyDictionary()


class ConvBN(nn.Sequential):
    """Convolution without bias, batch norm, optional ReLU (modules ``0``, ``1``, ``2``).

    In training it runs the three modules in turn. In evaluation the batch norm is folded
    into the convolution (``w * gamma / sqrt(var + eps)``, bias ``beta - mean * gamma /
    sqrt(var + eps)``), so the activation map is written once instead of three times; the
    result equals the unfolded modules up to float rounding (about 1e-6 relative). Without
    autograd on a CPU, the folded convolution runs as one oneDNN call with the ReLU (and, in
    :meth:`fused`, a residual sum) as post-ops, on weights packed once for oneDNN and
    repacked whenever a parameter or running statistic changes. Modules with forward hooks
    (FLOP counters) run unfolded, so the hooks see their calls.
    """

    def _unfolded(self) -> bool:
        bn = self[1]
        # Module-hook counters (thop, mvpose.models.flops.count_paper_code) must see the modules run.
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in self)
        return self.training or hooked or bn.running_var is None or bn.weight is None

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        conv, bn = self[0], self[1]
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    def _packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        conv, bn = self[0], self[1]
        tensors = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        entry = _PACKED.get(self)
        if entry is None or entry[0] != key:
            weight, bias = self._folded()
            weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
                weight.contiguous(memory_format=torch.channels_last).to_mkldnn(),
                list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, None,
            )
            entry = (key, weight, bias.contiguous())
            _PACKED[self] = entry
        return entry[1], entry[2]

    def fused(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The folded block, then ``+ residual`` and the ReLU when given (the end of a residual
        block); outside oneDNN's reach, the same computed op by op.

        Args:
            x: (B, Cin, H, W).
            residual: (B, Cout, H / stride, W / stride) or None.

        Returns:
            (B, Cout, H / stride, W / stride); with ``residual``, ``relu(conv(x) + residual)``
            whatever this module's own ReLU.
        """
        conv = self[0]
        if self._unfolded():
            y = super().forward(x)
        elif conv.groups != 1 or not _onednn_fusable(x):
            y = self._folded_forward(x)
        else:
            return self._onednn(x, residual)
        return y if residual is None else (y + residual).relu_()

    def _onednn(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        conv = self[0]
        weight, bias = self._packed()
        x = x.contiguous(memory_format=torch.channels_last)
        args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        if residual is None:
            relu = "relu" if len(self) > 2 else "none"
            return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *args, relu, [], "")
        residual = residual.contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, weight, bias, *args, "add", None, "relu", [], ""
        )

    def _folded_forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self[0]
        weight, bias = self._folded()
        pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
        if pointwise and x.is_contiguous(memory_format=torch.channels_last):
            # A 1x1 convolution on channels_last data is one matrix product over the pixels;
            # as a convolution, PyTorch's CPU path first broadcasts the bias into the output.
            y = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
        else:
            y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return y.relu_() if len(self) > 2 else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, Cin, H, W) -> (B, Cout, H / stride, W / stride)."""
        return self.fused(x)


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> ConvBN:
    """Convolution without bias, batch norm, optional ReLU (see :class:`ConvBN`)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout, momentum=BN_MOMENTUM),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return ConvBN(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (channels unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.relu(self.body(x) + x)
        # Evaluation: the last convolution, the residual sum and the ReLU in one call.
        return self.body[1].fused(self.body[0](x), residual=x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 expansion) with a residual connection; projects the shortcut
    when the channel count changes."""

    expansion = 4

    def __init__(self, cin: int, planes: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            conv_bn(cin, planes, 1), conv_bn(planes, planes, 3), conv_bn(planes, cout, 1, relu=False)
        )
        self.shortcut = nn.Identity() if cin == cout else conv_bn(cin, cout, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            # Evaluation: the last convolution, the residual sum and the ReLU in one call.
            return self.body[2].fused(self.body[1](self.body[0](x)), residual=self.shortcut(x))
        # In place: the batch norm ending ``body`` keeps no output for its backward, and an
        # in-place sum saves one activation-sized allocation per block.
        out = self.body(x)
        out += self.shortcut(x)
        return out.relu_()


class StemNet(nn.Module):
    """Two stride-2 convolutions and ``blocks`` bottlenecks: (B, 3, H, W) -> (B, 4*width, H/4, W/4).

    Args:
        width: channels of the convolutions (64 in TokenPose/HRNet); output is ``4 * width``.
        blocks: bottlenecks in ``layer1`` (4 in TokenPose/HRNet).
    """

    stride = 4

    def __init__(self, width: int = 64, blocks: int = 4) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv_bn(3, width, 3, 2), conv_bn(width, width, 3, 2))
        cout = width * Bottleneck.expansion
        self.layer1 = nn.Sequential(*[Bottleneck(width if i == 0 else cout, width) for i in range(blocks)])
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.conv(x))


class HRModule(nn.Module):
    """One HRNet module: parallel branches of basic blocks, then every output resolution
    sums all branches (upsampled by 1x1 conv + nearest, or downsampled by stride-2 convs).

    Args:
        channels: channels of each branch, highest resolution first (each next branch has
            half the resolution).
        blocks: basic blocks per branch.
        outputs: number of output resolutions kept (the last module of a truncated HRNet
            only keeps the highest one).
    """

    def __init__(self, channels: list[int], blocks: int = 4, outputs: int | None = None) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c) for _ in range(blocks)]) for c in channels
        )
        self.fuse = nn.ModuleList()
        for i in range(outputs or n):
            row = nn.ModuleList()
            for j in range(n):
                row.append(self._fuse_path(channels, j, i))
            self.fuse.append(row)

    @staticmethod
    def _fuse_path(channels: list[int], src: int, dst: int) -> nn.Module:
        if src == dst:
            return nn.Identity()
        if src > dst:  # lower resolution -> project, then upsample in forward
            return conv_bn(channels[src], channels[dst], 1, relu=False)
        steps = [conv_bn(channels[src], channels[src], 3, 2) for _ in range(dst - src - 1)]
        steps.append(conv_bn(channels[src], channels[dst], 3, 2, relu=False))
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        outs = []
        for i, row in enumerate(self.fuse):
            total = xs[i]
            for j, path in enumerate(row):
                if j == i:
                    continue
                y = path(xs[j])
                if j > i:
                    y = F.interpolate(y, scale_factor=2 ** (j - i), mode="nearest")
                total = total + y
            outs.append(F.relu(total))
        return outs


class HRNet(nn.Module):
    """HRNet truncated after stage 3, returning the highest-resolution branch.

    Stage layout of HRNet-W{width}: stage 2 = 1 module x 2 branches, stage 3 = 4 modules
    x 3 branches, 4 basic blocks per branch, channels ``width * (1, 2, 4)``.

    Args:
        width: channels of the highest-resolution branch (32 or 48).

    Shapes: (B, 3, H, W) -> (B, width, H/4, W/4).
    """

    stride = 4

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = StemNet(64, 4)
        c = [width, 2 * width, 4 * width]
        stem_out = self.stem.out_channels
        self.transition1 = nn.ModuleList([conv_bn(stem_out, c[0]), conv_bn(stem_out, c[1], 3, 2)])
        self.stage2 = nn.Sequential(HRModule(c[:2]))
        self.transition2 = conv_bn(c[1], c[2], 3, 2)
        self.stage3 = nn.Sequential(HRModule(c), HRModule(c), HRModule(c), HRModule(c, outputs=1))
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        xs = self.stage2([t(x) for t in self.transition1])
        xs = self.stage3([xs[0], xs[1], self.transition2(xs[1])])
        return xs[0]


BACKBONES = {
    "stem": lambda: StemNet(64, 4),
    "hrnet_w32": lambda: HRNet(32),
    "hrnet_w48": lambda: HRNet(48),
}


def build_backbone(name: str, **kwargs: int) -> nn.Module:
    """Build a backbone by name: ``stem``, ``hrnet_w32``, ``hrnet_w48``, or ``stem`` with
    ``width`` / ``blocks`` keyword arguments (the tiny demo models use a narrow stem)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone: unknown name {name!r}; expected one of {sorted(BACKBONES)}")
    if kwargs:
        if name != "stem":
            raise ValueError(f"backbone {name!r}: takes no options, found {sorted(kwargs)}")
        return StemNet(**kwargs)
    return BACKBONES[name]()
