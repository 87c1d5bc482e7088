"""PPT: token-Pruned Pose Transformer (paper 001, section 3.1), TokenPose when not pruning.

Pipeline (shapes for one image, ``J`` joints, token grid ``h x w``, ``N = h*w``):

1. CNN backbone: image (3, H, W) -> features (C, H/4, W/4).
2. Patch embedding: non-overlapping ``ph x pw`` patches, flattened and linearly projected to
   ``dim`` (a strided convolution), plus a fixed 2D sine positional encoding -> (N, dim).
3. ``J`` learnable keypoint tokens are prepended -> (J + N, dim).
4. ``depth`` pre-norm encoder layers. With ``pe_every_layer`` (TokenPose's "sine-full") the
   2D encoding is added again to the visual tokens before every layer.
5. Human Token Identification (HTI) in the layers listed in ``prune_layers``: after that
   layer's attention, the attention of the keypoint tokens over the visual tokens is
   averaged over heads and summed over joints; the ``ceil(r * n)`` visual tokens with the
   largest score are kept, the others are dropped, and the layer's MLP runs on the kept
   ones. This is where the official code prunes; the paper's "HTI before the 4th, 7th and
   10th layer" is ``prune_layers=(3, 6, 9)`` with 0-based indices.
6. An MLP head maps each keypoint token to a heatmap (Hh * Wh).

With ``keep_ratio = 1`` (or no ``prune_layers``) the model is TokenPose.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn

from mvpose.models.backbones import build_backbone
from mvpose.models.base import PoseModel
from mvpose.models.blocks import TransformerBlock, init_transformer_weights, sine_positional_encoding_2d
from mvpose.models.registry import register_config

__all__ = [
    "PPT",
    "keep_ratio_schedule",
    "num_kept_tokens",
    "select_human_tokens",
    "gather_tokens",
]


def keep_ratio_schedule(step: float, total: float, target: float, warmup: float = 0.0) -> float:
    """Cosine schedule of the keep ratio from 1 down to ``target`` (paper 001, section 4.1.2).

    ``r(t) = target + (1 - target) * (1 + cos(pi * t / total)) / 2`` for ``t = step - warmup``
    in ``[0, total]``; 1 before ``warmup``, ``target`` after ``warmup + total``. Steps may be
    epochs or iterations (the official code updates it every iteration, with 10 warm-up
    epochs and a 100-epoch decay).

    Args:
        step: current epoch or iteration.
        total: length of the decay.
        target: final keep ratio r in (0, 1].
        warmup: steps at ratio 1 before the decay starts.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"keep_ratio_schedule: target must be in (0, 1], found {target}")
    if total <= 0:
        raise ValueError(f"keep_ratio_schedule: total must be positive, found {total}")
    t = step - warmup
    if t <= 0:
        return 1.0
    if t >= total:
        return float(target)
    return float(target + (1.0 - target) * 0.5 * (1.0 + math.cos(math.pi * t / total)))


def num_kept_tokens(n: int, keep_ratio: float) -> int:
    """Tokens kept by one HTI step: ``ceil(r * n)`` (as the official code), at least 1.

    The product is rounded to 6 decimals first so that e.g. ``0.7 * 100`` keeps 70, not 71.
    """
    return max(1, min(n, math.ceil(round(n * keep_ratio, 6))))


def select_human_tokens(scores: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Indices of the ``ceil(r * n)`` highest-scoring visual tokens.

    Args:
        scores: (B, n) HTI score of each visual token.
        keep_ratio: r in (0, 1].

    Returns:
        (B, K) indices into the n tokens, highest score first.
    """
    return scores.topk(num_kept_tokens(scores.shape[1], keep_ratio), dim=1).indices


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, n, ...), index: (B, K) -> (B, K, ...): the rows ``index`` of every batch item."""
    expanded = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, expanded)


class PPT(PoseModel):
    """Token-pruned pose transformer (TokenPose when ``keep_ratio == 1``).

    Args:
        num_joints: J keypoint tokens / heatmaps.
        image_size: input (H, W).
        heatmap_size: output (Hh, Wh).
        backbone: ``stem``, ``hrnet_w32`` or ``hrnet_w48`` (see :mod:`mvpose.models.backbones`).
        backbone_options: keyword arguments of a ``stem`` backbone (``width``, ``blocks``).
        patch_size: (ph, pw) patch size on the stride-4 feature map.
        dim: token features D.
        depth: encoder layers L.
        heads: attention heads.
        mlp_ratio: MLP hidden features / D.
        keep_ratio: HTI keep ratio r (changeable later with :meth:`set_keep_ratio`).
        prune_layers: 0-based layers running HTI (after their attention).
        scale_with_head: attention scale ``(D/heads)^-0.5`` if True, ``D^-0.5`` if False
            (TokenPose-S uses False, TokenPose-B/L True).
        pe_every_layer: add the 2D encoding to the visual tokens before every layer.
        head_hidden: hidden features of the heatmap head; default ``Hh * Wh // 8``.
        dropout: dropout in the encoder.
    """

    multiview = False  # takes (B, 3, H, W); the engine asks
    # Images per backbone call in CPU inference (see :meth:`embed`): with the fused oneDNN
    # convolutions, 2 was the fastest of 1, 2, 4, 8, 16 for 16 images of 256x256 on 2 threads.
    embed_chunk = 2

    def __init__(
        self,
        num_joints: int = 17,
        image_size: Sequence[int] = (256, 192),
        heatmap_size: Sequence[int] = (64, 48),
        backbone: str = "stem",
        backbone_options: dict | None = None,
        patch_size: Sequence[int] = (4, 3),
        dim: int = 192,
        depth: int = 12,
        heads: int = 8,
        mlp_ratio: float = 3.0,
        keep_ratio: float = 0.7,
        prune_layers: Sequence[int] = (3, 6, 9),
        scale_with_head: bool = False,
        pe_every_layer: bool = True,
        head_hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.config = dict(
            num_joints=num_joints, image_size=list(image_size), heatmap_size=list(heatmap_size),
            backbone=backbone, backbone_options=dict(backbone_options or {}),
            patch_size=list(patch_size), dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
            keep_ratio=keep_ratio, prune_layers=list(prune_layers), scale_with_head=scale_with_head,
            pe_every_layer=pe_every_layer, head_hidden=head_hidden, dropout=dropout,
        )
        self.backbone = build_backbone(backbone, **(backbone_options or {}))
        stride = self.backbone.stride
        (ih, iw), (ph, pw) = image_size, patch_size
        if ih % (stride * ph) or iw % (stride * pw):
            raise ValueError(
                f"PPT: image_size {tuple(image_size)} must be divisible by backbone stride {stride} "
                f"times patch_size {tuple(patch_size)}"
            )
        bad = [i for i in prune_layers if not 0 <= i < depth]
        if bad:
            raise ValueError(f"PPT: prune_layers {bad} outside the {depth} layers")
        self.num_joints = num_joints
        self.image_size = (ih, iw)
        self.heatmap_size = tuple(heatmap_size)
        self.token_grid = (ih // (stride * ph), iw // (stride * pw))
        self.num_tokens = self.token_grid[0] * self.token_grid[1]
        self.prune_layers = tuple(sorted(prune_layers))
        self.pe_every_layer = pe_every_layer
        self.set_keep_ratio(keep_ratio)

        self.patch_embed = nn.Conv2d(self.backbone.out_channels, dim, (ph, pw), (ph, pw))
        self.register_buffer(
            "pos_2d", sine_positional_encoding_2d(*self.token_grid, dim), persistent=False
        )
        self.keypoint_tokens = nn.Parameter(torch.zeros(1, num_joints, dim))
        scale = None if scale_with_head else dim**-0.5
        self.layers = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, scale=scale, dropout=dropout) for _ in range(depth)
        )
        hh, hw = self.heatmap_size
        hidden = head_hidden or hh * hw // 8
        self.head = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.Linear(hidden, hh * hw)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        init_transformer_weights(self)
        # The patch embedding is the official Linear projection, so it gets the Linear init.
        nn.init.trunc_normal_(self.patch_embed.weight, std=0.02)
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.trunc_normal_(self.keypoint_tokens, std=0.02)

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Set the HTI keep ratio r in (0, 1] (the engine follows :func:`keep_ratio_schedule`)."""
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"PPT: keep_ratio must be in (0, 1], found {keep_ratio}")
        self.keep_ratio = float(keep_ratio)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone, patch embedding, 2D encoding and keypoint tokens.

        Args:
            images: (B, 3, H, W).

        Returns:
            tokens: (B, J + N, D), keypoint tokens first.
            pos: (B, N, D) 2D positional encoding of the visual tokens.
        """
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, *self.image_size):
            raise ValueError(
                f"PPT: expected images of shape (B, 3, {self.image_size[0]}, {self.image_size[1]}), "
                f"found {tuple(images.shape)}"
            )
        # channels_last: the CPU convolutions skip their layout reorders (about 10 % faster).
        images = images.contiguous(memory_format=torch.channels_last)
        if self.training or images.device.type != "cpu" or images.shape[0] <= self.embed_chunk:
            # Training keeps one call: batch norm statistics are taken over the whole batch.
            # A GPU wants the whole batch in one kernel launch.
            visual = self._visual_tokens(images)
        else:
            # CPU inference, a few images at a time: the stride-4 feature maps (4 MB per
            # 256x256 image) then stay in cache and are not allocated afresh for the whole
            # batch; the batch norms use running statistics, so the result does not depend on
            # the chunking.
            visual = torch.cat([self._visual_tokens(chunk) for chunk in images.split(self.embed_chunk)])
        b = visual.shape[0]
        pos = self.pos_2d.to(visual.dtype).expand(b, -1, -1)
        tokens = torch.cat([self.keypoint_tokens.expand(b, -1, -1).to(visual.dtype), visual + pos], dim=1)
        return tokens, pos

    def _visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> backbone and patch embedding -> (B, N, D)."""
        return self.patch_embed(self.backbone(images)).flatten(2).transpose(1, 2)

    def encode(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor,
        kept: torch.Tensor,
        layers: Iterable[int],
        keep_ratio: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the encoder layers ``layers`` with Human Token Identification.

        Args:
            tokens: (B, J + n, D).
            pos: (B, n, D) 2D encoding of the current visual tokens.
            kept: (B, n) index of each current visual token in the full token grid.
            layers: indices into ``self.layers``.
            keep_ratio: r for this call (default: the model's).

        Returns:
            tokens (B, J + K, D), pos (B, K, D), kept (B, K) after pruning (K <= n).
        """
        r = self.keep_ratio if keep_ratio is None else keep_ratio
        if not 0.0 < r <= 1.0:
            raise ValueError(f"PPT: keep_ratio must be in (0, 1], found {r}")
        j = self.num_joints
        # The encoding padded with zeros for the keypoint tokens: adding it is one op (x + 0 is x).
        padded = None
        for idx in layers:
            layer = self.layers[idx]
            if idx > 0 and self.pe_every_layer:
                if padded is None:
                    padded = torch.cat([pos.new_zeros(pos.shape[0], j, pos.shape[2]), pos], dim=1)
                tokens = tokens + padded
            prune = idx in self.prune_layers and r < 1.0
            tokens, attn = layer.attend(tokens, attn_rows=slice(0, j) if prune else None)
            if prune:
                # HTI: the summed keypoint-to-visual attention marks the human area.
                scores = attn[:, :, j:].sum(dim=1)  # (B, n)
                keep = select_human_tokens(scores, r)
                tokens = torch.cat([tokens[:, :j], gather_tokens(tokens[:, j:], keep)], dim=1)
                pos = gather_tokens(pos, keep)
                padded = None
                kept = torch.gather(kept, 1, keep)
            tokens = layer.feed_forward(tokens)
        return tokens, pos, kept

    def heatmaps(self, keypoint_tokens: torch.Tensor) -> torch.Tensor:
        """keypoint_tokens: (..., J, D) -> heatmaps (..., J, Hh, Wh)."""
        return self.head(keypoint_tokens).unflatten(-1, self.heatmap_size)

    def full_grid_indices(self, batch: int, device: torch.device) -> torch.Tensor:
        """(batch, N) indices 0..N-1 of the full token grid."""
        return torch.arange(self.num_tokens, device=device).repeat(batch, 1)

    def forward(
        self, images: torch.Tensor, keep_ratio: float | None = None
    ) -> dict[str, torch.Tensor | tuple]:
        """Predict heatmaps.

        Args:
            images: (B, 3, H, W).
            keep_ratio: override of the HTI keep ratio for this call.

        Returns:
            dict with ``heatmaps`` (B, J, Hh, Wh), ``kept_indices`` (B, K) row-major indices
            into the token grid of the visual tokens left after the last HTI (all N when
            nothing is pruned), ``token_grid`` (h, w).
        """
        tokens, pos = self.embed(images)
        kept = self.full_grid_indices(tokens.shape[0], tokens.device)
        tokens, _, kept = self.encode(tokens, pos, kept, range(len(self.layers)), keep_ratio)
        return {
            "heatmaps": self.heatmaps(tokens[:, : self.num_joints]),
            "kept_indices": kept,
            "token_grid": self.token_grid,
        }


# ----------------------------------------------------------------------------------------
# Registered configurations. The PPT family follows paper 001 section 4.1.2 and the official
# configs (TokenPose / PPT repositories): D = 192, 8 heads, MLP ratio 3, 256 visual tokens, keep
# ratio 0.7. Single-view, COCO 256x192: a 4x3 patch on the 64x48 stride-4 map gives 16x16 = 256 tokens.
_COCO = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48), patch_size=(4, 3),
             dim=192, heads=8, mlp_ratio=3.0)
# TokenPose-S scales attention logits by D^-0.5; the HRNet-based variants by (D/heads)^-0.5.
_S = dict(_COCO, backbone="stem", depth=12, scale_with_head=False)
_B = dict(_COCO, backbone="hrnet_w32", depth=12, scale_with_head=True)
# L/D6: depth 6 with HTI before the 2nd, 4th and 5th layers (paper 001, section 4.1.2; the
# official code keeps its default (3, 6, 9), i.e. one HTI at layer 3 for depth 6).
_L = dict(_COCO, backbone="hrnet_w48", depth=6, scale_with_head=True)

register_config("tokenpose_s", PPT, **_S, keep_ratio=1.0, prune_layers=())
register_config("ppt_s", PPT, **_S, keep_ratio=0.7, prune_layers=(3, 6, 9))
register_config("tokenpose_b", PPT, **_B, keep_ratio=1.0, prune_layers=())
register_config("ppt_b", PPT, **_B, keep_ratio=0.7, prune_layers=(3, 6, 9))
register_config("ppt_l", PPT, **_L, keep_ratio=0.7, prune_layers=(1, 3, 4))

# Tiny CPU demo model: 128x128 input, narrow one-block stem, 16x16 tokens, 4 layers of 64.
TINY = dict(num_joints=17, image_size=(128, 128), heatmap_size=(32, 32), patch_size=(2, 2),
            backbone="stem", backbone_options={"width": 32, "blocks": 1}, dim=64, depth=4, heads=4,
            mlp_ratio=2.0, keep_ratio=0.7, scale_with_head=True)
register_config("ppt_tiny", PPT, **TINY, prune_layers=(1, 2))
