"""ViTransPose: a ViTPose-style pose transformer with patch selection (paper 000).

Pipeline (``N = h * w`` patches of ``p x p`` pixels, ``h = H / p``):

1. Patch embedding (a ``p x p`` stride-``p`` convolution) and learned absolute positions.
2. Patch selection (``selection``):

   - ``none``: every patch (ViTPose-B with its classic decoder is ``vitranspose_b``);
   - ``neighbors``: each guiding keypoint's patch and its first ``num_neighbors`` BFS
     neighbours (paper 000, 3.1.1);
   - ``skeleton``: the patches crossed by the skeleton's bones (Bresenham) plus the joints'
     BFS neighbourhoods (3.1.2);
   - ``joint_tokens``: J learnable joint tokens attend with the patches; after the layers in
     ``prune_layers`` only the ``keep_ratio`` patches they attend to most are kept (3.1.3,
     realised like PPT's Human Token Identification).

   The guiding keypoints come from ``forward(images, guide_keypoints=...)`` in input pixels,
   or from an attached lightweight estimator (``guide="lite_hrnet_18"``, frozen, its
   weights from ``guide_checkpoint``). Unselected patches are left out of the encoder: the
   selected tokens are gathered (up to the batch's largest count, or exactly
   ``num_selected``), shorter rows are padded, and padded keys are hidden from attention.
3. ``depth`` pre-norm transformer blocks (:class:`~mvpose.models.blocks.TransformerBlock`),
   final LayerNorm.
4. The encoded tokens go back to their grid cells; unselected cells are zeros.
5. Classic decoder: two 4x4 stride-2 deconvolutions (+BN, ReLU) and a 1x1 convolution:
   heatmaps at stride 4.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from mvpose.models.base import PoseModel
from mvpose.models.blocks import TransformerBlock, init_transformer_weights
from mvpose.models.lite_hrnet import TINY_MONO, heatmap_argmax
from mvpose.models.patch_selection import distance_to_keypoints, select_patches, selected_token_index
from mvpose.models.ppt import gather_tokens, select_human_tokens
from mvpose.models.registry import build_model, register_config
from mvpose.safe_load import UntrustedFileError, read_torch_file, unwrap_state_dict
from mvpose.skeletons import get_skeleton

__all__ = ["ViTransPose", "HeatmapDecoder", "load_guide_weights"]

log = logging.getLogger(__name__)

SELECTIONS = ("none", "neighbors", "skeleton", "joint_tokens")


def load_guide_weights(guide: nn.Module, name: str, path: str | Path) -> None:
    """Load a trained guide from ``path``: an mvpose checkpoint (``{"model": ..., "config": ...}``, as
    ``mvpose train --model lite_hrnet_tiny`` writes) or a state dict in any layout
    :func:`mvpose.safe_load.unwrap_state_dict` accepts; read without running code from the file
    (:func:`mvpose.safe_load.read_torch_file`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming ``path``, when it is not a checkpoint, holds another model than ``name``,
            or its tensors do not fit the guide's architecture.
        mvpose.safe_load.UntrustedFileError: (a ValueError) the file asks for a global outside the allowlist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"guide_checkpoint {path} does not exist; train the guide first, e.g. "
            f"mvpose train --model {name} ... --out {path.parent}"
        )
    try:
        ckpt = read_torch_file(path)  # refuses code in the file unless --trust-checkpoint
    except UntrustedFileError:
        raise
    except ValueError as err:
        raise ValueError(f"guide_checkpoint {err}") from err
    held = (((ckpt.get("config") or {}).get("model") or {}).get("name")
            if isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict) else None)
    if held is not None and held != name:
        raise ValueError(f"guide_checkpoint {path}: holds model {held!r}, but the guide is {name!r} (model.guide)")
    try:
        state = unwrap_state_dict(ckpt, path)
    except ValueError as err:
        raise ValueError(f"guide_checkpoint {path}: expected an mvpose checkpoint or a state dict of {name!r} "
                         f"({err})") from err
    own = guide.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if v]
        raise ValueError(f"guide_checkpoint {path}: does not fit the architecture of guide {name!r}: "
                         f"tensors {', '.join(parts)}")
    guide.load_state_dict(state)


class HeatmapDecoder(nn.Module):
    """ViTPose's classic decoder: ``deconvs`` x (4x4/2 deconv, BN, ReLU), then a 1x1 conv.

    (B, C, h, w) -> (B, J, h * 2^deconvs, w * 2^deconvs).
    """

    def __init__(self, in_channels: int, num_joints: int, channels: int = 256, deconvs: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(deconvs):
            layers += [
                nn.ConvTranspose2d(in_channels if i == 0 else channels, channels, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.deconvs = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels if deconvs else in_channels, num_joints, 1)
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconvs(x))


class ViTransPose(PoseModel):
    """ViT encoder + classic heatmap decoder with optional patch selection.

    Args:
        num_joints: J.
        image_size: input (H, W), divisible by ``patch_size``.
        heatmap_size: output (Hh, Wh) = patch grid * 2^decoder_deconvs.
        patch_size: p (pixels).
        dim, depth, heads, mlp_ratio, qkv_bias: the ViT (ViT-B: 768, 12, 12, 4, True).
        decoder_channels, decoder_deconvs: the classic decoder.
        selection: ``none``, ``neighbors``, ``skeleton`` or ``joint_tokens``.
        num_neighbors: BFS neighbours per guiding keypoint.
        skeleton: skeleton whose ``limbs`` are the bones (``coco``, ``h36m``, ...).
        num_selected: a fixed token budget (static shapes; needed to count MACs on the
            ``meta`` device); default: as many as the batch's largest selection.
        guide: registry name of a lightweight estimator run on the image when no
            ``guide_keypoints`` are given; guide_options: its overrides;
            guide_checkpoint: a checkpoint / state dict of it to load.
        keep_ratio, prune_layers: joint-token selection (0-based layers, after their attention).
        dropout: dropout in the encoder.
    """


    def __init__(
        self,
        num_joints: int = 17,
        image_size: Sequence[int] = (256, 192),
        heatmap_size: Sequence[int] = (64, 48),
        patch_size: int = 16,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        decoder_channels: int = 256,
        decoder_deconvs: int = 2,
        selection: str = "none",
        num_neighbors: int = 4,
        skeleton: str = "coco",
        num_selected: int | None = None,
        guide: str | None = None,
        guide_options: dict | None = None,
        guide_checkpoint: str | None = None,
        keep_ratio: float = 0.7,
        prune_layers: Sequence[int] = (3, 6, 9),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.config = dict(
            num_joints=num_joints, image_size=list(image_size), heatmap_size=list(heatmap_size),
            patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            decoder_channels=decoder_channels, decoder_deconvs=decoder_deconvs, selection=selection,
            num_neighbors=num_neighbors, skeleton=skeleton, num_selected=num_selected, guide=guide,
            guide_options=dict(guide_options or {}), guide_checkpoint=guide_checkpoint,
            keep_ratio=keep_ratio, prune_layers=list(prune_layers), dropout=dropout,
        )
        ih, iw = image_size
        if ih % patch_size or iw % patch_size:
            raise ValueError(f"ViTransPose: image_size {tuple(image_size)} must be divisible by patch_size {patch_size}")
        self.token_grid = (ih // patch_size, iw // patch_size)
        up = 2**decoder_deconvs
        if tuple(heatmap_size) != (self.token_grid[0] * up, self.token_grid[1] * up):
            raise ValueError(
                f"ViTransPose: heatmap_size must be the patch grid {self.token_grid} times {up}, "
                f"found {tuple(heatmap_size)}"
            )
        if selection not in SELECTIONS:
            raise ValueError(f"ViTransPose: selection must be one of {', '.join(SELECTIONS)}, found {selection!r}")
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"ViTransPose: keep_ratio must be in (0, 1], found {keep_ratio}")
        bad = [i for i in prune_layers if not 0 <= i < depth]
        if bad:
            raise ValueError(f"ViTransPose: prune_layers {bad} outside the {depth} layers")
        self.num_joints = num_joints
        self.image_size = (ih, iw)
        self.patch_size = patch_size
        self.num_tokens = self.token_grid[0] * self.token_grid[1]
        self.selection = selection
        self.num_neighbors = int(num_neighbors)
        self.num_selected = num_selected
        self.keep_ratio = float(keep_ratio)
        self.prune_layers = tuple(sorted(prune_layers))
        self.limbs = tuple(get_skeleton(skeleton).limbs)
        if selection == "skeleton" and max(max(limb) for limb in self.limbs) >= num_joints:
            raise ValueError(f"ViTransPose: skeleton {skeleton!r} has more joints than num_joints={num_joints}")

        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        self.joint_tokens = nn.Parameter(torch.zeros(1, num_joints, dim)) if selection == "joint_tokens" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, qkv_bias=qkv_bias, dropout=dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self._init_weights()
        self.decoder = HeatmapDecoder(dim, num_joints, decoder_channels, decoder_deconvs)
        self.guide = self._build_guide(guide, guide_options, guide_checkpoint)

    def _init_weights(self) -> None:
        init_transformer_weights(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.joint_tokens is not None:
            nn.init.trunc_normal_(self.joint_tokens, std=0.02)

    def _build_guide(self, name: str | None, options: dict | None, checkpoint: str | None) -> nn.Module | None:
        if name is None:
            return None
        h, w = self.image_size
        guide = build_model(name, **{"num_joints": self.num_joints, "image_size": (h, w),
                                     "heatmap_size": (h // 4, w // 4), **(options or {})})
        if checkpoint is not None:
            load_guide_weights(guide, name, checkpoint)
        # Rebuilt from a ViTransPose checkpoint, the guide gets its weights from that checkpoint:
        # only training an untrained guide deserves a warning (see ``train``).
        self._guide_untrained = checkpoint is None and self.selection in ("neighbors", "skeleton")
        guide.requires_grad_(False)
        return guide.eval()

    def train(self, mode: bool = True) -> "ViTransPose":
        super().train(mode)
        if self.guide is not None:
            self.guide.eval()  # frozen, trained on its own
            if mode and self._guide_untrained:
                log.warning("ViTransPose: guide %r has no guide_checkpoint; its keypoints are untrained",
                            self.config["guide"])
                self._guide_untrained = False  # once
        return self

    def guide_keypoints(self, images: torch.Tensor) -> torch.Tensor:
        """Keypoints (B, J, 2) of the attached estimator, in input pixels."""
        if self.guide is None:
            raise ValueError(
                f"ViTransPose(selection={self.selection!r}): pass guide_keypoints (B, {self.num_joints}, 2) in "
                "input pixels, or build the model with guide='lite_hrnet_18'"
            )
        with torch.no_grad():
            return heatmap_argmax(self.guide(images)["heatmaps"], self.image_size)

    def select(self, guide_keypoints: torch.Tensor) -> torch.Tensor:
        """Patches selected by ``guide_keypoints`` (B, J, 2) input pixels -> (B, N) bool."""
        p = (self.patch_size, self.patch_size)
        return select_patches(guide_keypoints, self.image_size, p, self.selection, self.num_neighbors, self.limbs)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> patch tokens with positions (B, N, D), row-major."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, *self.image_size):
            raise ValueError(
                f"ViTransPose: expected images of shape (B, 3, {self.image_size[0]}, {self.image_size[1]}), "
                f"found {tuple(images.shape)}"
            )
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)
        return tokens + self.pos_embed.to(tokens.dtype)

    def encode_selected(
        self, tokens: torch.Tensor, selected: torch.Tensor, priority: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode only the selected tokens.

        Args:
            tokens: (B, N, D) embedded patches.
            selected: (B, N) bool.
            priority: (B, N), which selected tokens survive a ``num_selected`` budget.

        Returns:
            features (B, N, D): encoded selected tokens in their cells, zeros elsewhere;
            encoded (B, N) bool: the cells actually encoded (``selected`` within the budget).
        """
        index, padding = selected_token_index(selected, priority, self.num_selected)
        x = gather_tokens(tokens, index)
        for block in self.blocks:
            x = block(x, key_padding_mask=padding)
        x = self.norm(x).masked_fill(padding[..., None], 0.0)
        features = torch.zeros_like(tokens).scatter(1, index[..., None].expand_as(x), x)
        encoded = torch.zeros_like(selected).scatter(1, index, ~padding)
        return features, encoded

    def encode_joint_tokens(self, tokens: torch.Tensor, keep_ratio: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode with joint-token selection.

        Returns:
            features (B, N, D) with zeros at dropped cells, selected (B, N) bool.
        """
        r = self.keep_ratio if keep_ratio is None else keep_ratio
        j = self.num_joints
        b, n, _ = tokens.shape
        x = torch.cat([self.joint_tokens.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        kept = torch.arange(n, device=tokens.device).repeat(b, 1)
        for i, block in enumerate(self.blocks):
            prune = i in self.prune_layers and r < 1.0
            x, attn = block.attend(x, attn_rows=slice(0, j) if prune else None)
            if prune:
                keep = select_human_tokens(attn[:, :, j:].sum(dim=1), r)
                x = torch.cat([x[:, :j], gather_tokens(x[:, j:], keep)], dim=1)
                kept = torch.gather(kept, 1, keep)
            x = block.feed_forward(x)
        visual = self.norm(x)[:, j:]
        out = torch.zeros_like(tokens).scatter(1, kept[..., None].expand_as(visual), visual)
        selected = torch.zeros(b, n, dtype=torch.bool, device=tokens.device).scatter(1, kept, True)
        return out, selected

    def forward(
        self, images: torch.Tensor, guide_keypoints: torch.Tensor | None = None, keep_ratio: float | None = None
    ) -> dict[str, torch.Tensor | tuple]:
        """Predict heatmaps.

        Args:
            images: (B, 3, H, W).
            guide_keypoints: (B, J, 2) ``(x, y)`` input pixels guiding ``neighbors`` /
                ``skeleton`` selection (default: the attached estimator's).
            keep_ratio: override of the joint-token keep ratio.

        Returns:
            dict with ``heatmaps`` (B, J, Hh, Wh), ``selected`` (B, N) bool (the patches the
            encoder saw, row-major), ``token_grid`` (h, w) and, for keypoint-guided
            selection, ``guide_keypoints`` (B, J, 2).
        """
        tokens = self.embed(images)
        b, n, d = tokens.shape
        out: dict[str, torch.Tensor | tuple] = {"token_grid": self.token_grid}
        if self.selection in ("neighbors", "skeleton"):
            if guide_keypoints is None:
                guide_keypoints = self.guide_keypoints(images)
            elif tuple(guide_keypoints.shape) != (b, self.num_joints, 2):
                raise ValueError(
                    f"ViTransPose: guide_keypoints must have shape ({b}, {self.num_joints}, 2), "
                    f"found {tuple(guide_keypoints.shape)}"
                )
            guide_keypoints = guide_keypoints.to(tokens.dtype)
            selected = self.select(guide_keypoints)
            # Under a fixed budget, the patches nearest to a keypoint are kept first.
            priority = -distance_to_keypoints(guide_keypoints, self.image_size, (self.patch_size,) * 2)
            features, selected = self.encode_selected(tokens, selected, priority)
            out["guide_keypoints"] = guide_keypoints
        elif self.selection == "joint_tokens":
            features, selected = self.encode_joint_tokens(tokens, keep_ratio)
        else:
            x = tokens
            for block in self.blocks:
                x = block(x)
            features = self.norm(x)
            selected = torch.ones(b, n, dtype=torch.bool, device=tokens.device)
        fmap = features.transpose(1, 2).reshape(b, d, *self.token_grid)
        out["heatmaps"] = self.decoder(fmap)
        out["selected"] = selected
        return out


# ----------------------------------------------------------------------------------------
# Registered configurations. ViTransPose-S/-B: ViT-S/B on 16x16 patches with ViTPose's classic
# decoder (``vitranspose_b`` is ViTPose-B); ``_bfs`` / ``_bone`` select patches around the
# Lite-HRNet-18 keypoints (give it trained weights with guide_checkpoint=PATH, or pass
# guide_keypoints to forward), ``_jointtok`` with learnable joint tokens.
_VITP = dict(num_joints=17, image_size=(256, 192), heatmap_size=(64, 48), patch_size=16, depth=12,
             heads=12, mlp_ratio=4.0, qkv_bias=True, skeleton="coco")
for _size, _dim in (("s", 384), ("b", 768)):
    register_config(f"vitranspose_{_size}", ViTransPose, **_VITP, dim=_dim, selection="none")
    register_config(f"vitranspose_{_size}_bfs", ViTransPose, **_VITP, dim=_dim, selection="neighbors",
                    num_neighbors=4, guide="lite_hrnet_18")
    register_config(f"vitranspose_{_size}_bone", ViTransPose, **_VITP, dim=_dim, selection="skeleton",
                    num_neighbors=0, guide="lite_hrnet_18")
    register_config(f"vitranspose_{_size}_jointtok", ViTransPose, **_VITP, dim=_dim, selection="joint_tokens",
                    keep_ratio=0.7, prune_layers=(3, 6, 9))

# Tiny CPU variants (128x96 input) for tests and demos, guided by lite_hrnet_tiny: train it first
# and pass guide_checkpoint=PATH (docs/baselines.md).
_TINY_VITP = dict(TINY_MONO, patch_size=16, dim=64, depth=2, heads=4, mlp_ratio=2.0, decoder_channels=32,
                  skeleton="coco", prune_layers=(0,))
register_config("vitranspose_tiny", ViTransPose, **_TINY_VITP)
register_config("vitranspose_tiny_bfs", ViTransPose, **_TINY_VITP, selection="neighbors", num_neighbors=1,
                guide="lite_hrnet_tiny")
register_config("vitranspose_tiny_bone", ViTransPose, **_TINY_VITP, selection="skeleton", num_neighbors=0,
                guide="lite_hrnet_tiny")
