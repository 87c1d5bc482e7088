"""The transformer building blocks shared by every model of mvpose.

One pre-norm encoder layer (:class:`TransformerBlock`) serves PPT, multi-view PPT and the
baselines. Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`;
the attention weights are only materialised for the query rows that ask for them (the
keypoint tokens of Human Token Identification), so the full ``N x N`` map is never built.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Mlp",
    "Attention",
    "TransformerBlock",
    "sine_positional_encoding_2d",
    "merge_attention_masks",
]


class Mlp(nn.Module):
    """Two linear layers with an activation between: ``dim -> hidden_dim -> out_dim``.

    Args:
        dim: input features.
        hidden_dim: hidden features.
        out_dim: output features (default ``dim``).
        act: activation module class.
        dropout: dropout after the activation and after the second layer.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        out_dim: int | None = None,
        act: type[nn.Module] = nn.GELU,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act()
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim) -> (..., out_dim)."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def merge_attention_masks(
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
) -> torch.Tensor | None:
    """Combine an attention mask and a key padding mask into one SDPA mask.

    Args:
        attn_mask: bool (True = may attend) or float (added to the logits), broadcastable
            to (B, heads, Nq, Nk); or None.
        key_padding_mask: (B, Nk) bool, True = this key is padding and is ignored
            (the convention of :class:`torch.nn.MultiheadAttention`); or None.

    Returns:
        A mask in the convention of ``scaled_dot_product_attention`` (bool True = attend,
        or float additive), broadcastable to (B, heads, Nq, Nk); None if both are None.
    """
    if key_padding_mask is None:
        return attn_mask
    if key_padding_mask.dtype != torch.bool or key_padding_mask.dim() != 2:
        raise ValueError(
            "key_padding_mask: expected a bool tensor of shape (B, Nk), "
            f"found dtype {key_padding_mask.dtype} and shape {tuple(key_padding_mask.shape)}"
        )
    keep = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Nk)
    if attn_mask is None:
        return keep
    if attn_mask.dtype == torch.bool:
        return attn_mask & keep
    return attn_mask.masked_fill(~keep, float("-inf"))


class Attention(nn.Module):
    """Multi-head self-attention.

    Args:
        dim: token features.
        heads: number of heads; ``dim`` must be divisible by it.
        qkv_bias: bias in the query/key/value projection (TokenPose has none).
        scale: logit scale; default ``(dim // heads) ** -0.5``. TokenPose-S uses
            ``dim ** -0.5`` (its ``scale_with_head=False``), so the scale is configurable.
        dropout: dropout on the output projection.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        qkv_bias: bool = False,
        scale: float | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"Attention: dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = scale if scale is not None else self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attn_rows: slice | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend.

        Args:
            x: (B, N, dim) tokens.
            attn_mask: see :func:`merge_attention_masks`.
            key_padding_mask: (B, N) bool, True = ignored key.
            attn_rows: the query rows (a slice of the N tokens, R rows) whose attention
                weights are also returned; None returns none.

        Returns:
            out: (B, N, dim).
            weights: (B, R, N) softmax attention of the requested rows over all keys,
                averaged over heads (as Human Token Identification uses it), or None.
        """
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, N, Dh)
        mask = merge_attention_masks(attn_mask, key_padding_mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))
        if attn_rows is None:
            return out, None
        # Recomputing the few requested rows costs R*N*dim, far less than the N*N map.
        logits = (q[:, :, attn_rows] @ k.transpose(-2, -1)) * self.scale  # (B, H, R, N)
        if mask is not None:
            rows_mask = mask[..., attn_rows, :] if mask.shape[-2] == n else mask
            if rows_mask.dtype == torch.bool:
                logits = logits.masked_fill(~rows_mask, float("-inf"))
            else:
                logits = logits + rows_mask
        weights = logits.softmax(dim=-1).mean(dim=1)
        return out, weights


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder layer: ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))``.

    The two halves are also callable separately (:meth:`attend`, :meth:`feed_forward`)
    because PPT prunes tokens between them, as the official implementation does.

    Args:
        dim: token features.
        heads: attention heads.
        mlp_ratio: hidden features of the MLP as a multiple of ``dim``.
        qkv_bias: bias in the query/key/value projection.
        scale: attention logit scale (default ``(dim // heads) ** -0.5``).
        dropout: dropout in the attention projection and the MLP.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        scale: float | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias, scale=scale, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(round(dim * mlp_ratio)), dropout=dropout)

    def attend(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attn_rows: slice | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention half with its residual. x: (B, N, dim) -> ((B, N, dim), (B, R, N) | None)."""
        out, weights = self.attn(self.norm1(x), attn_mask, key_padding_mask, attn_rows)
        return x + out, weights

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """MLP half with its residual. x: (B, N, dim) -> (B, N, dim)."""
        return x + self.mlp(self.norm2(x))

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, N, dim) -> (B, N, dim)."""
        x, _ = self.attend(x, attn_mask, key_padding_mask)
        return self.feed_forward(x)


def sine_positional_encoding_2d(
    height: int,
    width: int,
    dim: int,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
) -> torch.Tensor:
    """Fixed 2D sine positional encoding of a ``height x width`` token grid (DETR / TokenPose).

    Row and column indices are normalised to (0, scale]; each half of the features encodes
    one axis (first half rows, second half columns) with interleaved sin/cos pairs.

    Args:
        height, width: token grid size.
        dim: features; must be divisible by 4.
        temperature: frequency base.
        scale: range of the normalised coordinates.

    Returns:
        (height * width, dim), rows in row-major grid order.
    """
    if dim % 4 != 0:
        raise ValueError(f"sine_positional_encoding_2d: dim must be divisible by 4, found {dim}")
    half = dim // 2
    eps = 1e-6
    y = torch.arange(1, height + 1, dtype=torch.float32) / (height + eps) * scale  # (h,)
    x = torch.arange(1, width + 1, dtype=torch.float32) / (width + eps) * scale  # (w,)
    i = torch.arange(half, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)  # (half,)

    def encode(coord: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, half)
        angles = coord[:, None] / freq
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)

    pe_y = encode(y)[:, None, :].expand(height, width, half)
    pe_x = encode(x)[None, :, :].expand(height, width, half)
    return torch.cat((pe_y, pe_x), dim=-1).reshape(height * width, dim)


def init_linear_or_norm(m: nn.Module) -> None:
    """ViT / TokenPose initialisation of one module: ``Linear`` truncated normal (std 0.02, zero
    bias), ``LayerNorm`` ones and zeros; anything else is left to its owner."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def init_transformer_weights(module: nn.Module) -> None:
    """:func:`init_linear_or_norm` on every module inside ``module``; convolutions are left to their owners."""
    for m in module.modules():
        init_linear_or_norm(m)
