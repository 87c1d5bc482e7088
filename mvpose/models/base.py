"""The contract between the training / evaluation engine and every registered model.

A model subclasses :class:`PoseModel` and overrides what differs from the heatmap default; the
engine asks nothing else of it (no attribute probing):

==========================  ==================================================================
``multiview``               True: ``forward(images (B, V, 3, H, W), rays=..., view_mask=...)``;
                            False: ``forward(images (B, 3, H, W))``, run on each view alone.
``output_kind``             ``"heatmap"`` or ``"simcc"``: which targets the data must carry.
``token_grid``              ``(h, w)`` of the visual tokens (world rays are given per token), or None.
``config``                  constructor arguments (``build_model`` adds ``name``).
``loss(outputs, batch)``    scalar training loss.
``predict(outputs, ...)``   decoded joints in crop pixels and their confidences.
``set_keep_ratio(r)``       the keep-ratio schedule hook (token-pruning models; a no-op here).
==========================  ==================================================================

Outputs and batch fields carry the engine's leading ``(B, V)`` axes (``V = 1`` for single-view
data): ``heatmaps (B, V, J, h, w)``, ``target (B, V, J, h, w)``, ``target_weight (B, V, J)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from mvpose.engine.decode import decode_heatmaps

__all__ = ["PoseModel", "heatmap_loss"]


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Joint-weighted MSE of TokenPose / SimpleBaseline: ``0.5 * mean((w * (pred - target))^2)``.

    Args:
        pred, target: (..., J, h, w).
        weight: (..., J) joint weights (0 for joints outside the crop or unlabelled).
    """
    w = weight.to(pred.dtype)[..., None, None]
    return 0.5 * ((pred * w - target.to(pred.dtype) * w) ** 2).mean()


def batch_field(batch: Mapping[str, Any], key: str, like: torch.Tensor) -> torch.Tensor:
    """``batch[key]`` on the device of ``like`` with its ``(B, V)`` axes merged into one."""
    return batch[key].to(like.device).flatten(0, 1)


class PoseModel(nn.Module):
    """Base class of the registered models: the heatmap defaults of the engine's contract."""

    multiview: bool = False
    output_kind: str = "heatmap"
    token_grid: tuple[int, int] | None = None
    config: dict[str, Any]

    @property
    def scheduled_keep_ratio(self) -> float | None:
        """The keep ratio the training schedule decays to (``config["keep_ratio"]``), or None."""
        r = self.config.get("keep_ratio")
        return float(r) if r is not None else None

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """The keep-ratio schedule hook, called before each training step; models that prune
        tokens override it."""

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """Joint-weighted heatmap MSE (:func:`heatmap_loss`) of ``outputs["heatmaps"]`` against
        ``batch["target"]`` with ``batch["target_weight"]``; scalar."""
        pred = outputs["heatmaps"].float().flatten(0, 1)
        return heatmap_loss(pred, batch_field(batch, "target", pred), batch_field(batch, "target_weight", pred))

    def predict(
        self, outputs: Mapping[str, torch.Tensor], input_hw: tuple[int, int], decode: str = "udp"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Joints ``(B, V, J, 2)`` as (x, y) crop pixels and confidences ``(B, V, J)``, on the CPU,
        decoded from the heatmaps with ``decode`` (:func:`mvpose.engine.decode.decode_heatmaps`)."""
        return decode_heatmaps(outputs["heatmaps"].float().cpu(), input_hw, method=decode)
