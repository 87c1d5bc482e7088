"""Heatmaps -> sub-pixel joint coordinates, and crop pixels -> original image pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def heatmap_to_input_scale(input_hw: tuple[int, int], heatmap_hw: tuple[int, int]) -> tuple[float, float]:
    """UDP scale from heatmap pixels to input pixels: ``(W_in - 1) / (W_h - 1)`` per axis (x, y)."""
    (H, W), (h, w) = input_hw, heatmap_hw
    return (W - 1) / max(w - 1, 1), (H - 1) / max(h - 1, 1)


def decode_heatmaps(
    heatmaps: torch.Tensor, input_hw: tuple[int, int], method: str = "udp", soft_beta: float = 50.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode joint locations from heatmaps.

    Args:
        heatmaps: (..., J, h, w).
        input_hw: network input size (H, W): coordinates are returned in input-crop pixels.
        method: ``"udp"`` (argmax refined by a Taylor expansion of the log-heatmap, as in DARK/UDP),
            ``"argmax"`` (integer peak), or ``"soft"`` (global soft-argmax with temperature ``soft_beta``,
            differentiable).

    Returns:
        coords (..., J, 2) as (x, y) in input pixels, confidence (..., J) = peak value.
    """
    *lead, h, w = heatmaps.shape
    flat = heatmaps.reshape(-1, h * w).float()
    conf, idx = flat.max(dim=-1)
    ys = torch.arange(h, device=flat.device, dtype=flat.dtype)
    xs = torch.arange(w, device=flat.device, dtype=flat.dtype)
    if method == "soft":
        prob = torch.softmax(flat * soft_beta, dim=-1).reshape(-1, h, w)
        x = (prob.sum(1) * xs).sum(-1)
        y = (prob.sum(2) * ys).sum(-1)
    else:
        x = (idx % w).to(flat.dtype)
        y = torch.div(idx, w, rounding_mode="floor").to(flat.dtype)
        if method == "udp":
            # Second-order Taylor expansion of the log-heatmap at the peak (exact for a Gaussian):
            # offset = -H^-1 g, from the 3x3 neighbourhood (border replicated).
            hm = F.pad(heatmaps.reshape(-1, 1, h, w).float(), (1, 1, 1, 1), mode="replicate")
            patches = F.unfold(hm, kernel_size=3).reshape(-1, 9, h * w)
            L = patches.gather(2, idx.view(-1, 1, 1).expand(-1, 9, 1)).squeeze(-1).clamp_min(1e-10).log()
            L = L.view(-1, 3, 3)  # rows: y-1, y, y+1; cols: x-1, x, x+1
            gx = 0.5 * (L[:, 1, 2] - L[:, 1, 0])
            gy = 0.5 * (L[:, 2, 1] - L[:, 0, 1])
            hxx = L[:, 1, 2] - 2 * L[:, 1, 1] + L[:, 1, 0]
            hyy = L[:, 2, 1] - 2 * L[:, 1, 1] + L[:, 0, 1]
            hxy = 0.25 * (L[:, 2, 2] - L[:, 2, 0] - L[:, 0, 2] + L[:, 0, 0])
            det = hxx * hyy - hxy * hxy
            ok = (det > 1e-6) & (hxx < 0)  # a proper maximum; otherwise keep the integer peak
            safe = torch.where(ok, det, torch.ones_like(det))
            dx = -(hyy * gx - hxy * gy) / safe
            dy = -(hxx * gy - hxy * gx) / safe
            x = x + torch.where(ok, dx.clamp(-1, 1), torch.zeros_like(dx))
            y = y + torch.where(ok, dy.clamp(-1, 1), torch.zeros_like(dy))
            x = x.clamp(0, w - 1)
            y = y.clamp(0, h - 1)
        elif method != "argmax":
            raise ValueError(f"unknown heatmap decoding {method!r}; use 'udp', 'argmax' or 'soft'")
    sx, sy = heatmap_to_input_scale(input_hw, (h, w))
    coords = torch.stack([x * sx, y * sy], dim=-1)
    return coords.reshape(*lead, 2), conf.reshape(*lead)


def crop_to_original(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Map crop pixels back to original pixels through the inverse of the crop affine.

    Args:
        points: (..., J, 2) crop pixels.
        affine: (..., 2, 3) original -> crop map.

    Returns:
        (..., J, 2) original pixels.
    """
    A = affine[..., :, :2].to(points)
    b = affine[..., :, 2].to(points)
    return (points - b.unsqueeze(-2)) @ torch.linalg.inv(A).transpose(-1, -2)
