"""PVT v2 backbone (Wang et al., "PVT v2", CVMJ 2022), the encoder of HRPVT.

Four stages at strides 4, 8, 16, 32. Each stage:

1. overlapping patch embedding: a strided convolution whose kernel overlaps its neighbours
   (7x7 / 4 for the first stage, 3x3 / 2 after), then LayerNorm;
2. ``depth`` pre-norm blocks of *spatial-reduction attention* (the keys and values come from
   the token map shrunk by a ``sr x sr`` strided convolution + LayerNorm, so attention costs
   ``N * N / sr^2``) and a *DW-conv MLP* (a 3x3 depthwise convolution on the token map
   between the two linear layers, which also makes positional embeddings unnecessary);
3. a final LayerNorm.

Presets (embed dims, heads, MLP ratios, depths, SR ratios) are the official b0..b3; PVT v2-b2
has 25.4 M parameters with its ImageNet head and 4.0 GMACs at 224x224.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mvpose.models.blocks import init_linear_or_norm

__all__ = ["OverlapPatchEmbed", "SRAttention", "DWConvMlp", "PVTBlock", "PVTv2", "PVT_V2_PRESETS"]

# name -> (embed_dims, heads, mlp_ratios, depths, sr_ratios)
PVT_V2_PRESETS: dict[str, dict[str, tuple[int, ...]]] = {
    "b0": dict(dims=(32, 64, 160, 256), heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), depths=(2, 2, 2, 2), sr_ratios=(8, 4, 2, 1)),
    "b1": dict(dims=(64, 128, 320, 512), heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), depths=(2, 2, 2, 2), sr_ratios=(8, 4, 2, 1)),
    "b2": dict(dims=(64, 128, 320, 512), heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), depths=(3, 4, 6, 3), sr_ratios=(8, 4, 2, 1)),
    "b3": dict(dims=(64, 128, 320, 512), heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), depths=(3, 4, 18, 3), sr_ratios=(8, 4, 2, 1)),
}
_LN_EPS = 1e-6  # the official presets


def to_map(tokens: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
    """(B, h*w, C) -> (B, C, h, w)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *hw)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C)."""
    return x.flatten(2).transpose(1, 2)


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlapping kernel, then LayerNorm: (B, Cin, H, W) -> tokens.

    Args:
        in_channels, dim: channels in and out.
        kernel, stride: the convolution (padding ``kernel // 2``).
    """

    def __init__(self, in_channels: int, dim: int, kernel: int = 7, stride: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(dim, eps=_LN_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """x (B, Cin, H, W) -> tokens (B, h*w, dim), (h, w)."""
        x = self.proj(x)
        return self.norm(to_tokens(x)), (x.shape[2], x.shape[3])


class SRAttention(nn.Module):
    """Multi-head attention whose keys/values come from a spatially reduced token map.

    Args:
        dim: features; heads: attention heads.
        sr_ratio: reduction factor of the key/value map (1: plain attention).
        qkv_bias: biases of the query and key/value projections.
    """

    def __init__(self, dim: int, heads: int, sr_ratio: int = 1, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"SRAttention: dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=_LN_EPS)

    def forward(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        """x (B, h*w, dim) -> (B, h*w, dim)."""
        b, n, d = x.shape
        dh = d // self.heads
        q = self.q(x).view(b, n, self.heads, dh).transpose(1, 2)
        src = self.norm(to_tokens(self.sr(to_map(x, hw)))) if self.sr_ratio > 1 else x
        k, v = self.kv(src).view(b, src.shape[1], 2, self.heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DWConvMlp(nn.Module):
    """Linear -> 3x3 depthwise conv on the token map -> GELU -> linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        """x (B, h*w, dim) -> (B, h*w, dim)."""
        return self.fc2(F.gelu(to_tokens(self.dwconv(to_map(self.fc1(x), hw)))))


class PVTBlock(nn.Module):
    """Pre-norm PVT v2 block: ``x + SRA(LN(x))`` then ``x + DWConvMLP(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, sr_ratio: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = SRAttention(dim, heads, sr_ratio, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = DWConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        """x (B, h*w, dim) -> (B, h*w, dim)."""
        x = x + self.attn(self.norm1(x), hw)
        return x + self.mlp(self.norm2(x), hw)


class PVTv2(nn.Module):
    """PVT v2 backbone: image -> four feature maps at strides 4, 8, 16, 32.

    Args:
        preset: ``b0``..``b3`` (below, explicit values override it).
        dims, heads, mlp_ratios, depths, sr_ratios: per stage.
        in_channels: image channels.

    The parts are public (``patch_embeds``, ``stages``, ``norms``) so that HRPVT can replace
    the first patch embedding or insert modules between blocks.
    """

    def __init__(
        self,
        preset: str = "b2",
        dims: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        mlp_ratios: Sequence[float] | None = None,
        depths: Sequence[int] | None = None,
        sr_ratios: Sequence[int] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if preset not in PVT_V2_PRESETS:
            raise ValueError(f"PVTv2: unknown preset {preset!r}; known: {', '.join(PVT_V2_PRESETS)}")
        p = PVT_V2_PRESETS[preset]
        self.dims = tuple(dims or p["dims"])
        heads = tuple(heads or p["heads"])
        mlp_ratios = tuple(mlp_ratios or p["mlp_ratios"])
        depths = tuple(depths or p["depths"])
        sr_ratios = tuple(sr_ratios or p["sr_ratios"])
        if not len(self.dims) == len(heads) == len(mlp_ratios) == len(depths) == len(sr_ratios):
            raise ValueError("PVTv2: dims, heads, mlp_ratios, depths and sr_ratios must have one entry per stage")
        self.patch_embeds = nn.ModuleList(
            OverlapPatchEmbed(in_channels if i == 0 else self.dims[i - 1], d, 7 if i == 0 else 3, 4 if i == 0 else 2)
            for i, d in enumerate(self.dims)
        )
        self.stages = nn.ModuleList(
            nn.ModuleList(PVTBlock(d, h, m, s) for _ in range(n))
            for d, h, m, n, s in zip(self.dims, heads, mlp_ratios, depths, sr_ratios)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d, eps=_LN_EPS) for d in self.dims)
        self.strides = tuple(4 * 2**i for i in range(len(self.dims)))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        init_linear_or_norm(m)
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, std=(2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def run_stage(self, i: int, tokens: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        """Blocks and final norm of stage ``i``: tokens (B, h*w, C_i) -> (B, C_i, h, w)."""
        for block in self.stages[i]:
            tokens = block(tokens, hw)
        return to_map(self.norms[i](tokens), hw)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) -> [(B, C_i, H / 2^(i+2), W / 2^(i+2)) for each stage i]."""
        x, outs = images, []
        for i, embed in enumerate(self.patch_embeds):
            tokens, hw = embed(x)
            x = self.run_stage(i, tokens, hw)
            outs.append(x)
        return outs
