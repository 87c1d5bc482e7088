"""SimCC (Li et al., ECCV 2022): keypoints as two 1D classifications, the head of HRPVT.

Each joint gets a vector of logits over ``W k`` horizontal bins and one over ``H k`` vertical
bins (split ratio ``k``, 2 in HRPVT): bin ``i`` stands for input coordinate ``i / k``, the
convention of :func:`mvpose.data.targets.simcc_targets`, which makes the training labels
(1D Gaussians). The loss is the KL divergence (or the cross-entropy) between the label
distribution and the softmax of the logits. Decoding takes the arg-max bin of each axis.

Models with this head return ``simcc_x (B, J, W k)``, ``simcc_y (B, J, H k)`` and, decoded,
``keypoints (B, J, 2)`` in input pixels with ``confidence (B, J)``, instead of heatmaps; they
carry ``output_kind = "simcc"``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SimCCHead", "simcc_loss", "decode_simcc"]


class SimCCHead(nn.Module):
    """Feature map -> per-joint 1D logits, without upsampling (SimCC's deconv-free variant).

    A 1x1 convolution gives one map per joint; each map is flattened and two linear layers
    classify its x and y coordinates.

    Args:
        in_channels: C of the feature map.
        feature_size: ``(h, w)`` of the feature map.
        num_joints: J.
        image_size: input ``(H, W)``.
        split_ratio: bins per input pixel k.
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: Sequence[int],
        num_joints: int,
        image_size: Sequence[int],
        split_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        h, w = feature_size
        self.num_bins = (int(round(image_size[1] * split_ratio)), int(round(image_size[0] * split_ratio)))
        self.final = nn.Conv2d(in_channels, num_joints, 1)
        self.fc_x = nn.Linear(h * w, self.num_bins[0])
        self.fc_y = nn.Linear(h * w, self.num_bins[1])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, h, w) -> simcc_x (B, J, W k), simcc_y (B, J, H k)."""
        x = self.final(features).flatten(2)
        return self.fc_x(x), self.fc_y(x)


def simcc_loss(
    simcc_x: torch.Tensor,
    simcc_y: torch.Tensor,
    target_x: torch.Tensor,
    target_y: torch.Tensor,
    weight: torch.Tensor,
    kind: str = "kl",
    beta: float = 1.0,
) -> torch.Tensor:
    """SimCC loss: per joint and axis, KL(label || softmax(beta * logits)) summed over bins.

    Labels are renormalised to sum to one (a Gaussian cut by the border of the range has
    less than unit area). Cross-entropy differs from KL by the label entropy, a constant, so
    it has the same gradients.

    Args:
        simcc_x: (B, J, Wk) logits; simcc_y: (B, J, Hk).
        target_x, target_y: labels of the same shapes (non-negative).
        weight: (B, J) joint weights (0: not trained on).
        kind: ``kl`` or ``ce``.
        beta: logit scale before the softmax.

    Returns:
        scalar: the weighted mean over joints of the x and y terms, summed.
    """
    if kind not in ("kl", "ce"):
        raise ValueError(f"simcc_loss: kind must be 'kl' or 'ce', found {kind!r}")
    total = simcc_x.new_zeros(())
    for logits, target in ((simcc_x, target_x), (simcc_y, target_y)):
        if logits.shape != target.shape:
            raise ValueError(f"simcc_loss: logits {tuple(logits.shape)} and labels {tuple(target.shape)} differ")
        p = target.to(logits.dtype)
        p = p / p.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        log_q = F.log_softmax(beta * logits, dim=-1)
        per_joint = -(p * log_q).sum(-1)
        if kind == "kl":
            per_joint = per_joint + (p * torch.log(p.clamp_min(1e-12))).sum(-1)
        total = total + per_joint
    w = weight.to(total.dtype)
    return (total * w).sum() / w.sum().clamp_min(1.0)


def decode_simcc(
    simcc_x: torch.Tensor, simcc_y: torch.Tensor, split_ratio: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max decoding.

    Args:
        simcc_x: (..., J, Wk) logits; simcc_y: (..., J, Hk).
        split_ratio: k.

    Returns:
        keypoints (..., J, 2) ``(x, y)`` in input pixels (bin / k), confidence (..., J): the
        smaller of the two peak probabilities (a joint is as sure as its less sure axis).
    """
    px, py = simcc_x.softmax(-1), simcc_y.softmax(-1)
    vx, ix = px.max(dim=-1)
    vy, iy = py.max(dim=-1)
    keypoints = torch.stack((ix, iy), dim=-1).to(simcc_x.dtype) / split_ratio
    return keypoints, torch.minimum(vx, vy)
