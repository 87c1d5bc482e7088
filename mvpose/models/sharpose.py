"""SHaRPose: sparse high-resolution representation for pose estimation (paper 002).

One ViT (blocks, final norm and keypoint decoder shared by both stages) runs twice:

1. Coarse stage: the image resized to ``coarse_size`` is cut into ``p x p`` patches (``Nc``
   tokens), preceded by a quality token and J keypoint tokens. The attention of the keypoint
   tokens over the patches, averaged over heads and summed over keypoints, is accumulated
   over the layers from ``attention_start`` on with an exponential moving average
   (momentum 0.99, as the official code). The keypoint tokens give coarse heatmaps; the
   quality token gives, through the quality predictor, the expected OKS of that estimate.
2. Quality predictor: in evaluation, a sample whose predicted quality reaches
   ``quality_threshold`` keeps its coarse heatmaps and skips the fine stage; in training, or
   with ``quality_threshold=None``, every sample is refined.
3. Fine stage: the full-resolution image is cut into patches of the same size (each coarse
   patch covers ``s_h x s_w`` fine ones). Only the ``ceil(alpha * Nc)`` coarse patches the
   keypoints attended to most are split into their fine patches; the others keep their
   coarse-stage input token. Fine tokens also receive the coarse stage's output through a
   LayerNorm + MLP ("reuse"), nearest-upsampled to the fine grid. Fresh keypoint tokens
   lead; the refined keypoint tokens give the final heatmaps.

The keypoint decoder is LayerNorm + Linear to ``Hh * Wh`` (two layers with a hidden
``Hh * Wh / 2`` when the token is narrower than ``Hh * Wh / 4``, as the official head). The
official attention score sums the keypoint rows ``1 .. J-1`` (the last keypoint is left out
by an off-by-one slice); here all J rows count.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mvpose.models.base import PoseModel, batch_field
from mvpose.models.blocks import Mlp, TransformerBlock, init_transformer_weights
from mvpose.models.lite_hrnet import TINY_MONO
from mvpose.models.ppt import gather_tokens, num_kept_tokens
from mvpose.models.registry import register_config

__all__ = ["SHaRPose", "QualityPredictor", "fine_patch_indices", "keypoint_similarity"]


def fine_patch_indices(coarse_index: torch.Tensor, coarse_grid: Sequence[int], fine_grid: Sequence[int]) -> torch.Tensor:
    """Row-major fine-grid indices of the fine patches inside the given coarse patches.

    Args:
        coarse_index: (B, K) row-major indices into the ``hc x wc`` coarse grid.
        coarse_grid: ``(hc, wc)``; fine_grid: ``(hf, wf)``, integer multiples of it.

    Returns:
        (B, K * s_h * s_w), grouped by coarse patch, each group row-major.
    """
    (hc, wc), (hf, wf) = coarse_grid, fine_grid
    if hf % hc or wf % wc:
        raise ValueError(f"fine_patch_indices: fine grid {tuple(fine_grid)} is not a multiple of {tuple(coarse_grid)}")
    sh, sw = hf // hc, wf // wc
    row = torch.div(coarse_index, wc, rounding_mode="floor") * sh
    col = (coarse_index % wc) * sw
    dy = torch.arange(sh, device=coarse_index.device).repeat_interleave(sw)
    dx = torch.arange(sw, device=coarse_index.device).repeat(sh)
    fine = (row[..., None] + dy) * wf + col[..., None] + dx  # (B, K, sh*sw)
    return fine.flatten(1)


def keypoint_similarity(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, sigma: float = 2.5
) -> torch.Tensor:
    """OKS-like quality of heatmaps, the quality predictor's regression target.

    ``sum_j w_j exp(-d_j^2 / (2 sigma^2)) / sum_j w_j`` with ``d_j`` the distance between the
    peaks of predicted and target heatmaps (heatmap pixels). The official code uses COCO's
    OKS, which needs the person's area and per-joint constants; one ``sigma`` stands in here.

    Args:
        pred, target: (B, J, Hh, Wh).
        weight: (B, J).

    Returns:
        (B,) in [0, 1]; 0 for a sample without weighted joints.
    """
    wh = pred.shape[-1]

    def peaks(h: torch.Tensor) -> torch.Tensor:
        idx = h.flatten(-2).argmax(-1)
        return torch.stack((idx % wh, torch.div(idx, wh, rounding_mode="floor")), -1).to(pred.dtype)

    d2 = ((peaks(pred) - peaks(target)) ** 2).sum(-1)
    w = weight.to(pred.dtype)
    return (w * torch.exp(-d2 / (2.0 * sigma**2))).sum(-1) / w.sum(-1).clamp_min(1e-12)


class QualityPredictor(nn.Module):
    """Quality token (B, D) -> predicted OKS (B,): LayerNorm, two GELU layers, sigmoid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(self.norm(token)))[..., 0]


class SHaRPose(PoseModel):
    """Coarse-to-fine pose transformer with sparse high-resolution tokens.

    Args:
        num_joints: J.
        image_size: full input (H, W); heatmap_size: (Hh, Wh).
        coarse_size: coarse-stage input (default H/2, W/2); image_size must be an integer
            multiple of it.
        patch_size: p, shared by both stages.
        dim, depth, heads, mlp_ratio, qkv_bias: the ViT (Base: 768, 12, 12, 4, True).
        alpha: share of coarse patches split into fine ones.
        quality_threshold: evaluation skips refinement at predicted quality >= this; None:
            always refine.
        attention_start: first layer whose attention ranks the patches (default depth / 4).
        attention_momentum: EMA momentum of that ranking over layers.
        dropout: dropout in the encoder.
    """

    # Weight of the quality predictor's loss in the training loss (the official SHaRPose code).
    quality_loss_weight: float = 0.03

    def __init__(
        self,
        num_joints: int = 17,
        image_size: Sequence[int] = (256, 192),
        heatmap_size: Sequence[int] = (64, 48),
        coarse_size: Sequence[int] | None = None,
        patch_size: int = 16,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        alpha: float = 0.4,
        quality_threshold: float | None = 0.99,
        attention_start: int | None = None,
        attention_momentum: float = 0.99,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        ih, iw = image_size
        coarse_size = tuple(coarse_size) if coarse_size is not None else (ih // 2, iw // 2)
        self.config = dict(
            num_joints=num_joints, image_size=list(image_size), heatmap_size=list(heatmap_size),
            coarse_size=list(coarse_size), patch_size=patch_size, dim=dim, depth=depth, heads=heads,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, alpha=alpha, quality_threshold=quality_threshold,
            attention_start=attention_start, attention_momentum=attention_momentum, dropout=dropout,
        )
        for name, (h, w) in (("image_size", (ih, iw)), ("coarse_size", coarse_size)):
            if h % patch_size or w % patch_size:
                raise ValueError(f"SHaRPose: {name} {(h, w)} must be divisible by patch_size {patch_size}")
        self.coarse_grid = (coarse_size[0] // patch_size, coarse_size[1] // patch_size)
        self.fine_grid = (ih // patch_size, iw // patch_size)
        if self.fine_grid[0] % self.coarse_grid[0] or self.fine_grid[1] % self.coarse_grid[1]:
            raise ValueError(f"SHaRPose: image_size {(ih, iw)} must be an integer multiple of coarse_size {coarse_size}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"SHaRPose: alpha must be in (0, 1], found {alpha}")
        self.attention_start = depth // 4 if attention_start is None else attention_start
        if not 0 <= self.attention_start < depth:
            raise ValueError(f"SHaRPose: attention_start must be in 0..{depth - 1}, found {self.attention_start}")
        self.num_joints = num_joints
        self.image_size = (ih, iw)
        self.coarse_size = coarse_size
        self.heatmap_size = tuple(heatmap_size)
        self.alpha = float(alpha)
        self.quality_threshold = quality_threshold
        self.momentum = float(attention_momentum)
        nc = self.coarse_grid[0] * self.coarse_grid[1]
        nf = self.fine_grid[0] * self.fine_grid[1]

        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.pos_coarse = nn.Parameter(torch.zeros(1, nc, dim))
        self.pos_fine = nn.Parameter(torch.zeros(1, nf, dim))
        self.keypoint_tokens = nn.Parameter(torch.zeros(1, num_joints, dim))
        self.quality_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, qkv_bias=qkv_bias, dropout=dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.reuse = nn.Sequential(nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio), dropout=dropout))
        self.quality_predictor = QualityPredictor(dim)
        hw = self.heatmap_size[0] * self.heatmap_size[1]
        if dim >= hw // 4:
            self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hw))
        else:
            self.head = nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, hw // 2), nn.GELU(), nn.LayerNorm(hw // 2), nn.Linear(hw // 2, hw)
            )
        self._init_weights()

    def _init_weights(self) -> None:
        init_transformer_weights(self)
        for p in (self.pos_coarse, self.pos_fine, self.keypoint_tokens, self.quality_token):
            nn.init.trunc_normal_(p, std=0.02)

    @property
    def num_split(self) -> int:
        """Coarse patches split into fine ones: ``ceil(alpha * Nc)``."""
        return num_kept_tokens(self.coarse_grid[0] * self.coarse_grid[1], self.alpha)

    def embed(self, images: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """images (B, 3, h p, w p) -> patch tokens + positions (B, h*w, D)."""
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)
        return tokens + pos.to(tokens.dtype)

    def decode(self, keypoint_tokens: torch.Tensor) -> torch.Tensor:
        """(B, J, D) -> heatmaps (B, J, Hh, Wh)."""
        return self.head(keypoint_tokens).unflatten(-1, self.heatmap_size)

    def coarse_stage(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Coarse stage on the resized image.

        Returns:
            dict with ``heatmaps`` (B, J, Hh, Wh), ``quality`` (B,), ``scores`` (B, Nc)
            accumulated keypoint attention per coarse patch, ``inputs`` (B, Nc, D) the
            coarse patch tokens entering the encoder, ``outputs`` (B, Nc, D) leaving it.
        """
        small = F.interpolate(images, size=self.coarse_size, mode="bilinear", align_corners=False)
        visual = self.embed(small, self.pos_coarse)
        b, j = visual.shape[0], self.num_joints
        x = torch.cat([self.quality_token.expand(b, -1, -1), self.keypoint_tokens.expand(b, -1, -1), visual], dim=1)
        x = x.to(visual.dtype)
        scores = visual.new_zeros(b, visual.shape[1])
        for i, block in enumerate(self.blocks):
            track = i >= self.attention_start
            x, attn = block.attend(x, attn_rows=slice(1, 1 + j) if track else None)
            if track:
                scores = self.momentum * scores + (1.0 - self.momentum) * attn[:, :, 1 + j :].sum(dim=1)
            x = block.feed_forward(x)
        x = self.norm(x)
        return {
            "heatmaps": self.decode(x[:, 1 : 1 + j]),
            "quality": self.quality_predictor(x[:, 0]),
            "scores": scores,
            "inputs": visual,
            "outputs": x[:, 1 + j :],
        }

    def fine_stage(
        self, images: torch.Tensor, coarse_inputs: torch.Tensor, coarse_outputs: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fine stage on the full-resolution image.

        Args:
            images: (B, 3, H, W).
            coarse_inputs, coarse_outputs: (B, Nc, D) from :meth:`coarse_stage`.
            scores: (B, Nc) patch ranking.

        Returns:
            heatmaps (B, J, Hh, Wh), split (B, K) the coarse patches split, best first.
        """
        b, nc, d = coarse_outputs.shape
        reuse = self.reuse(coarse_outputs).transpose(1, 2).reshape(b, d, *self.coarse_grid)
        reuse = F.interpolate(reuse, size=self.fine_grid, mode="nearest").flatten(2).transpose(1, 2)
        fine = self.embed(images, self.pos_fine) + reuse
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        split, rest = order[:, : self.num_split], order[:, self.num_split :]
        x = torch.cat(
            [
                self.keypoint_tokens.expand(b, -1, -1).to(fine.dtype),
                gather_tokens(fine, fine_patch_indices(split, self.coarse_grid, self.fine_grid)),
                gather_tokens(coarse_inputs, rest),
            ],
            dim=1,
        )
        for block in self.blocks:
            x = block(x)
        return self.decode(self.norm(x)[:, : self.num_joints]), split

    def forward(self, images: torch.Tensor, refine: bool | None = None) -> dict[str, torch.Tensor]:
        """Predict heatmaps, refining where the quality predictor asks for it.

        Args:
            images: (B, 3, H, W).
            refine: True / False refine every / no sample; None (default): every sample in
                training or without a threshold, else those predicted below the threshold.

        Returns:
            dict with ``heatmaps`` (B, J, Hh, Wh) (fine where refined, else coarse),
            ``coarse_heatmaps`` (B, J, Hh, Wh), ``quality`` (B,) predicted OKS of the coarse
            estimate, ``refined`` (B,) bool, ``patch_scores`` (B, Nc) and ``split`` (B, K) the
            coarse patches split into fine ones (ranked for every sample).
        """
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, *self.image_size):
            raise ValueError(
                f"SHaRPose: expected images of shape (B, 3, {self.image_size[0]}, {self.image_size[1]}), "
                f"found {tuple(images.shape)}"
            )
        coarse = self.coarse_stage(images)
        b = images.shape[0]
        order = torch.sort(coarse["scores"], dim=1, descending=True, stable=True).indices
        out = {
            "coarse_heatmaps": coarse["heatmaps"],
            "quality": coarse["quality"],
            "patch_scores": coarse["scores"],
            "split": order[:, : self.num_split],
        }
        if refine is None and (self.training or self.quality_threshold is None):
            refine = True
        if refine is not None:
            refined = torch.full((b,), bool(refine), dtype=torch.bool, device=images.device)
        else:
            refined = coarse["quality"] < self.quality_threshold
        heatmaps = coarse["heatmaps"]
        if refine is True:  # every sample: static shapes (MAC counting on ``meta``)
            heatmaps, _ = self.fine_stage(images, coarse["inputs"], coarse["outputs"], coarse["scores"])
        elif refine is None and bool(refined.any()):
            idx = refined.nonzero()[:, 0]
            fine, _ = self.fine_stage(
                images[idx], coarse["inputs"][idx], coarse["outputs"][idx], coarse["scores"][idx]
            )
            heatmaps = heatmaps.index_copy(0, idx, fine)
        out["heatmaps"] = heatmaps
        out["refined"] = refined
        return out

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """The heatmap loss on ``outputs["heatmaps"]`` plus :meth:`loss_terms`: the coarse-stage
        heatmap loss and, weighted by :attr:`quality_loss_weight`, the quality predictor's loss.

        Outputs and batch fields carry ``(B, V)`` leading axes (:mod:`mvpose.models.base`); scalar.
        """
        total = super().loss(outputs, batch)
        flat = {k: v.flatten(0, 1) if v.dim() > 1 else v.flatten() for k, v in outputs.items()
                if isinstance(v, torch.Tensor) and v.dim() > 0}
        ref = flat["heatmaps"]
        terms = self.loss_terms(flat, batch_field(batch, "target", ref), batch_field(batch, "target_weight", ref))
        return total + terms["coarse"] + self.quality_loss_weight * terms["quality"]

    def loss_terms(
        self, out: dict[str, torch.Tensor], target: torch.Tensor, weight: torch.Tensor, sigma: float = 2.5
    ) -> dict[str, torch.Tensor]:
        """The losses SHaRPose adds to the heatmap loss on ``out["heatmaps"]``.

        Returns:
            ``coarse``: joint-weighted MSE of the coarse heatmaps (same form as the engine's
            heatmap loss); ``quality``: MSE between the predicted quality and
            :func:`keypoint_similarity` of the coarse heatmaps (the official code weights it
            by 0.03 once the quality predictor is switched on).
        """
        w = weight.to(target.dtype)[..., None, None]
        coarse = 0.5 * ((out["coarse_heatmaps"] * w - target * w) ** 2).mean()
        with torch.no_grad():
            sim = keypoint_similarity(out["coarse_heatmaps"], target, weight, sigma)
        return {"coarse": coarse, "quality": F.mse_loss(out["quality"], sim)}


# ----------------------------------------------------------------------------------------
# Registered configurations. SHaRPose-Small/-Base (official configs): coarse stage at half the
# input size (128x96), fine stage at the input size (256x192), 16x16 patches; a tiny CPU variant.
_SHARP = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48),
              patch_size=16, depth=12, heads=12, mlp_ratio=4.0, qkv_bias=True, quality_threshold=0.99)
register_config("sharpose_s", SHaRPose, **_SHARP, dim=384, alpha=0.5)
register_config("sharpose_b", SHaRPose, **_SHARP, dim=768, alpha=0.4)
register_config("sharpose_tiny", SHaRPose, **TINY_MONO, patch_size=16, dim=64, depth=2, heads=4,
                mlp_ratio=2.0, alpha=0.5, attention_start=0)
