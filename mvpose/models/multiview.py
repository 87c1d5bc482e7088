"""Multi-view PPT with human area fusion (paper 001, section 3.2).

Every view goes through the same PPT (one batch of B*V images): the first
``depth - fusion_layers`` layers find each view's human tokens with HTI. Then the keypoint
tokens and human tokens of all views are concatenated and the last ``fusion_layers``
layers attend across views. Before each fusion layer the visual tokens get their 2D
encoding plus a 3D positional encoding: a learned linear projection of the world direction
of the token's camera ray (as the official code, which adds ``Linear(3, D)`` of the
normalised ray direction). The shared PPT head predicts each view's heatmaps from its
keypoint tokens. Paper setting (built on PPT-S): 9 layers per view, 3 fusion layers.

Missing cameras (``view_mask`` False) are zeroed and removed from the fusion keys, so
they cannot change the other views' predictions; their heatmaps are returned but flagged.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mvpose.models.base import PoseModel
from mvpose.models.ppt import PPT, TINY, gather_tokens
from mvpose.models.registry import register_config

__all__ = ["MultiViewPPT", "token_pixel_centers"]


def token_pixel_centers(input_hw: Sequence[int], token_grid_hw: Sequence[int]) -> torch.Tensor:
    """Pixel centre of each token of a ``h x w`` grid laid over an ``H x W`` input crop.

    Pixel coordinates put the centre of the top-left pixel at (0, 0) (OpenCV convention),
    so token (i, j) covering rows ``[i*H/h, (i+1)*H/h)`` has centre
    ``((j + 0.5) * W/w - 0.5, (i + 0.5) * H/h - 0.5)``.

    Args:
        input_hw: (H, W) of the network input.
        token_grid_hw: (h, w) token grid (``PPT.token_grid``).

    Returns:
        (h*w, 2) pixel (x, y), row-major over the grid (the token order of PPT).
    """
    (height, width), (h, w) = input_hw, token_grid_hw
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * (height / h) - 0.5
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * (width / w) - 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(h * w, 2)


class MultiViewPPT(PoseModel):
    """Shared-weight PPT per view + cross-view fusion among human tokens.

    Args:
        fusion_layers: the last encoder layers, run on all views' tokens together.
        use_3d_pe: add the ray-direction encoding to the visual tokens in fusion (ablation).
        fuse_views: False runs the fusion layers on each view's own tokens only: the same
            weights without cross-view attention (an ablation measuring what fusion adds).
        zero_init_fusion: zero-initialise the last linear layer of the attention and of the MLP
            (the residual branches) of every fusion layer. Pretrained weights loaded afterwards
            replace those of the layers the pretrained model has; a fusion layer it does not have
            (``depth`` one more than the pretrained PPT's) then starts as the identity, so
            fine-tuning starts from the pretrained single-view predictions exactly (the head reads
            the keypoint tokens, which no positional encoding touches) and the cross-view attention
            is learned from there. (Not in the paper, whose fusion layers are pretrained PPT layers:
            a lever for short CPU fine-tuning, README "Fusion vs single view".)
        **ppt_config: arguments of :class:`PPT`; ``prune_layers`` must lie in the per-view
            layers.
    """

    multiview = True  # takes (B, V, 3, H, W) and rays; the engine asks

    def __init__(
        self, fusion_layers: int = 3, use_3d_pe: bool = True, fuse_views: bool = True, zero_init_fusion: bool = False,
        **ppt_config,
    ) -> None:
        super().__init__()
        self.ppt = PPT(**ppt_config)
        depth = len(self.ppt.layers)
        if not 0 < fusion_layers <= depth:
            raise ValueError(f"MultiViewPPT: fusion_layers must be in 1..{depth}, found {fusion_layers}")
        late = [i for i in self.ppt.prune_layers if i >= depth - fusion_layers]
        if late:
            raise ValueError(
                f"MultiViewPPT: prune_layers {late} fall in the {fusion_layers} fusion layers; "
                f"HTI runs only in the first {depth - fusion_layers} (per-view) layers"
            )
        self.fusion_layers = fusion_layers
        self.use_3d_pe = use_3d_pe
        self.fuse_views = bool(fuse_views)
        dim = self.ppt.keypoint_tokens.shape[-1]
        # Only built when used: DistributedDataParallel rejects parameters without gradients.
        self.pos_3d = nn.Linear(3, dim) if use_3d_pe else None
        if self.pos_3d is not None:
            nn.init.trunc_normal_(self.pos_3d.weight, std=0.02)
            nn.init.zeros_(self.pos_3d.bias)
        if zero_init_fusion:
            for layer in self.ppt.layers[depth - fusion_layers:]:
                for linear in (layer.attn.proj, layer.mlp.fc2):
                    nn.init.zeros_(linear.weight)
                    nn.init.zeros_(linear.bias)
        self.config = {**self.ppt.config, "fusion_layers": fusion_layers, "use_3d_pe": use_3d_pe, "fuse_views": self.fuse_views}
        if zero_init_fusion:  # only recorded when used: checkpoints of earlier releases stay loadable as they are
            self.config["zero_init_fusion"] = True

    @property
    def token_grid(self) -> tuple[int, int]:
        return self.ppt.token_grid

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Set the HTI keep ratio of the shared PPT."""
        self.ppt.set_keep_ratio(keep_ratio)

    def _check_inputs(
        self, images: torch.Tensor, rays: torch.Tensor | None, view_mask: torch.Tensor | None
    ) -> None:
        h, w = self.ppt.image_size
        if images.dim() != 5 or tuple(images.shape[2:]) != (3, h, w):
            raise ValueError(
                f"MultiViewPPT: expected images of shape (B, V, 3, {h}, {w}), "
                f"found {tuple(images.shape)}"
            )
        b, v = images.shape[:2]
        if self.use_3d_pe:
            expected = (b, v, self.ppt.num_tokens, 3)
            if rays is None:
                raise ValueError(f"MultiViewPPT: use_3d_pe needs rays of shape {expected}, found None")
            if tuple(rays.shape) != expected:
                raise ValueError(f"MultiViewPPT: expected rays of shape {expected}, found {tuple(rays.shape)}")
        if view_mask is not None:
            if view_mask.dtype != torch.bool or tuple(view_mask.shape) != (b, v):
                raise ValueError(
                    f"MultiViewPPT: expected a bool view_mask of shape {(b, v)}, "
                    f"found {view_mask.dtype} {tuple(view_mask.shape)}"
                )
            if not bool(view_mask.any(dim=1).all()):
                raise ValueError("MultiViewPPT: view_mask has a sample with no valid view")

    def forward(
        self,
        images: torch.Tensor,
        rays: torch.Tensor | None = None,
        view_mask: torch.Tensor | None = None,
        keep_ratio: float | None = None,
    ) -> dict[str, torch.Tensor | tuple]:
        """Predict per-view heatmaps with cross-view fusion.

        Args:
            images: (B, V, 3, H, W); any V.
            rays: (B, V, N, 3) world directions of the camera rays through the token centres
                of the full grid (row-major, see :func:`token_pixel_centers`); needed when
                ``use_3d_pe``.
            view_mask: (B, V) bool, False = missing camera.
            keep_ratio: override of the HTI keep ratio for this call.

        Returns:
            dict with ``heatmaps`` (B, V, J, Hh, Wh), ``kept_indices`` (B, V, K) indices into
            the token grid of each view's human tokens, ``token_grid`` (h, w) and
            ``view_mask`` (B, V) (False: heatmaps of a missing camera, not meaningful).
        """
        self._check_inputs(images, rays, view_mask)
        b, v = images.shape[:2]
        if not self.fuse_views and v > 1:
            # Every view becomes a one-view sample, so attention never crosses views. A missing
            # camera is run on zeros (its padding cannot leak) and stays flagged in view_mask.
            if view_mask is not None:
                images = torch.where(view_mask[:, :, None, None, None], images, 0.0)
                rays = None if rays is None else torch.where(view_mask[:, :, None, None], rays, 1.0)
            one = lambda x: None if x is None else x.flatten(0, 1).unsqueeze(1)  # noqa: E731
            out = self._fuse(one(images), one(rays), None, keep_ratio)
            mask = torch.ones(b, v, dtype=torch.bool, device=images.device) if view_mask is None else view_mask
            return {**out, "heatmaps": out["heatmaps"].reshape(b, v, *out["heatmaps"].shape[2:]),
                    "kept_indices": out["kept_indices"].reshape(b, v, -1), "view_mask": mask}
        return self._fuse(images, rays, view_mask, keep_ratio)

    def _fuse(
        self, images: torch.Tensor, rays: torch.Tensor | None, view_mask: torch.Tensor | None, keep_ratio: float | None
    ) -> dict[str, torch.Tensor | tuple]:
        b, v = images.shape[:2]
        # Attention needs no mask when every camera is there (the same attention, and on CUDA
        # the fused kernels take no mask). A meta tensor (FLOP counting) cannot be inspected.
        all_views = view_mask is None or (view_mask.device.type != "meta" and bool(view_mask.all()))
        if view_mask is None:
            view_mask = torch.ones(b, v, dtype=torch.bool, device=images.device)
        else:
            # where(), not a product: NaN padding of a missing camera must not leak through
            # the zero attention weights of masked keys.
            images = torch.where(view_mask[:, :, None, None, None], images, 0.0)

        ppt, j = self.ppt, self.ppt.num_joints
        depth = len(ppt.layers)
        tokens, pos = ppt.embed(images.flatten(0, 1))  # (BV, J+N, D), (BV, N, D)
        kept = ppt.full_grid_indices(b * v, images.device)
        tokens, pos, kept = ppt.encode(tokens, pos, kept, range(depth - self.fusion_layers), keep_ratio)

        k, d = tokens.shape[1] - j, tokens.shape[2]
        keypoints = tokens[:, :j].reshape(b, v * j, d)
        visual = tokens[:, j:].reshape(b, v * k, d)
        if self.use_3d_pe:
            directions = torch.where(view_mask[:, :, None, None], F.normalize(rays, dim=-1), 0.0)
            directions = gather_tokens(directions.flatten(0, 1).to(pos.dtype), kept)  # (BV, K, 3)
            pos_3d = self.pos_3d(directions)
        else:
            pos_3d = torch.zeros_like(pos)
        missing = ~view_mask
        padding = None
        if not all_views:
            padding = torch.cat(
                [missing.repeat_interleave(j, dim=1), missing.repeat_interleave(k, dim=1)], dim=1
            )  # (B, V*J + V*K), same order as the fused tokens

        pos_3d = pos_3d.reshape(b, v * k, d)
        # Encodings padded with zeros for the keypoint tokens, so adding them is one op.
        zeros = pos_3d.new_zeros(b, v * j, d)
        both = torch.cat([zeros, pos.reshape(b, v * k, d) + pos_3d], dim=1) if ppt.pe_every_layer else None
        only_3d = torch.cat([zeros, pos_3d], dim=1)
        x = torch.cat([keypoints, visual], dim=1)
        for n, idx in enumerate(range(depth - self.fusion_layers, depth)):
            if ppt.pe_every_layer and idx > 0:
                x = x + both
            elif n == 0:  # the 3D encoding reaches fusion even without per-layer encodings
                x = x + only_3d
            x = ppt.layers[idx](x, key_padding_mask=padding)

        heatmaps = ppt.heatmaps(x[:, : v * j].reshape(b, v, j, d))
        return {
            "heatmaps": heatmaps,
            "kept_indices": kept.reshape(b, v, k),
            "token_grid": ppt.token_grid,
            "view_mask": view_mask,
        }


# ----------------------------------------------------------------------------------------
# Registered configurations. Multi-view (Human3.6M, 256x256, 4x4 patches -> 16x16 tokens, 64x64
# heatmaps): the first 9 layers per view, HTI before the 4th and 7th, the last 3 layers fuse the
# views (paper text; its 9.7 GMACs confirm it). The official code splits 10 + 2 with HTI at
# (3, 6, 9): build_model("mv_ppt_s", fusion_layers=2, prune_layers=(3, 6, 9)).
_H36M = dict(num_joints=17, image_size=(256, 256), heatmap_size=(64, 64), patch_size=(4, 4),
             dim=192, heads=8, mlp_ratio=3.0, depth=12, keep_ratio=0.7, prune_layers=(3, 6),
             fusion_layers=3, use_3d_pe=True)
register_config("mv_ppt_s", MultiViewPPT, **_H36M, backbone="stem", scale_with_head=False)
register_config("mv_ppt_b", MultiViewPPT, **_H36M, backbone="hrnet_w32", scale_with_head=True)
register_config("mv_ppt_tiny", MultiViewPPT, **TINY, prune_layers=(1, 2), fusion_layers=1, use_3d_pe=True)
