"""Convert checkpoints of the official PPT / TokenPose code (github HowieMa/PPT) to mvpose models.

The official classes and their state-dict keys (``single-view-PPT/lib/models/tokenpose_base.py``,
``pose_tokenpose_s.py``, ``pose_tokenpose_b.py``, ``hr_base.py``; ``multi-view-PPT/lib/models/
multiview_ppt.py``):

- TokenPose-S / PPT-S (``TokenPose_S``): ``features.{conv1,bn1,conv2,bn2,layer1}`` (the stem),
  ``features.patch_to_embedding`` (a Linear over patches flattened as ``(p1 p2 c)``),
  ``features.keypoint_token``, ``features.pos_embedding`` (the fixed sine encoding),
  ``features.transformer.layers.{i}.{0,1}`` (pre-norm attention / feed-forward),
  ``features.mlp_head.{0..3}``.
- TokenPose-B / -L/D6, PPT-B / -L/D6 (``TokenPose_B``): ``pre_feature.*`` (HRNet-W32 / W48 cut
  after stage 3) and ``transformer.*`` (the same transformer keys without ``features.``).
- Multi-view PPT (``multiview_ppt.TokenPose_S``): the TokenPose-S keys plus
  ``features.pos_3d_linear`` (``Linear(3, D)`` of the normalised camera-centre-to-ray-point vector).

What the weights do not say is taken from the official code and configs: 8 heads, attention
scale ``D^-0.5`` for the stem models and ``(D/8)^-0.5`` for the HRNet ones (``scale_with_head``),
the 2D sine encoding added before every layer (``sine-full``), HTI after the attention of layers
``pruning_loc = [3, 6, 9]`` (those inside the encoder: only layer 3 for the 6-layer L/D6), the
keep ratio (``--keep-ratio``; 0.7 for PPT and multi-view files, 1 for TokenPose), and for the
multi-view model its fixed split: layers ``[:10]`` per view, the rest fusing the views.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import torch

from mvpose.models.blocks import sine_positional_encoding_2d
from mvpose.models.registry import build_model
from mvpose.safe_load import read_torch_file, state_dict_from_file, unwrap_state_dict

__all__ = [
    "ConversionError",
    "COCO_TO_H36M_TOKENS",
    "OFFICIAL_HEADS",
    "OFFICIAL_PRUNING_LOC",
    "OFFICIAL_VIEW_LAYERS",
    "read_state_file",
    "pretrained_state_dict",
    "is_official_state_dict",
    "convert_state_dict",
    "convert_file",
    "map_coco_tokens_to_h36m",
]

log = logging.getLogger(__name__)

#: Human3.6M keypoint token i <- COCO keypoint token ``COCO_TO_H36M_TOKENS[i]``: the mapping the
#: official multi-view code applies when it starts Human3.6M training from the COCO 256x256 PPT-S
#: (``multiview_ppt.TokenPose_S.init_weights``; mvpose's ``h36m`` joint order is the same).
COCO_TO_H36M_TOKENS = (12, 12, 14, 16, 11, 13, 15, 11, 1, 0, 2, 5, 7, 9, 6, 8, 10)
OFFICIAL_HEADS = 8  # TRANSFORMER_HEADS of every official config
OFFICIAL_PRUNING_LOC = (3, 6, 9)  # Transformer(pruning_loc=[3, 6, 9]) default, never overridden
OFFICIAL_VIEW_LAYERS = 10  # TransformerMulti.forward: self.layers[:10] per view, self.layers[10:] fuse


class ConversionError(ValueError):
    """An official checkpoint that cannot be converted; the message names the file and the keys."""


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file without running code from it and unwrap its state dict
    (:func:`mvpose.safe_load.state_dict_from_file`: plain, under ``state_dict`` / ``model``, with or
    without DataParallel's ``module.``).

    Raises:
        FileNotFoundError: no such file.
        ConversionError: unreadable, refused (it asks for code), or no state dict of tensors inside.
    """
    try:
        return state_dict_from_file(path)
    except FileNotFoundError:
        raise
    except ValueError as err:
        raise ConversionError(str(err)) from err


def pretrained_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """Weights for ``model.pretrained``: an mvpose checkpoint, an official PPT / TokenPose file
    (converted on the fly) or another plain state dict.

    Returns:
        (state dict with mvpose keys where known, the dataset the weights were trained on:
        ``coco`` / ``mpii`` / ``h36m`` / an mvpose config's dataset name, or None if unknown).

    Raises:
        FileNotFoundError, ValueError: missing or unreadable file, an official file that does not convert.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained: {path} does not exist")
    obj = read_torch_file(path)  # refuses code in the file unless --trust-checkpoint
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and isinstance(obj.get("model"), dict):
        return dict(obj["model"]), obj["config"].get("dataset", {}).get("name")
    state = unwrap_state_dict(obj, str(path))
    if is_official_state_dict(state):
        converted, _, info = convert_state_dict(state, str(path), keep_ratio=1.0)
        return converted, info["dataset"]
    return state, None


def is_official_state_dict(state: dict[str, Any]) -> bool:
    """True for the key layout of the official TokenPose / PPT models."""
    return "features.keypoint_token" in state or "transformer.keypoint_token" in state


# ----------------------------------------------------------------------------------------- key maps
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_STEM_RULES = [  # official stem (TokenPose_S_base / HRNET_base) -> mvpose StemNet
    (r"conv1\.weight", "conv.0.0.weight"),
    (rf"bn1\.{_BN}", r"conv.0.1.\1"),
    (r"conv2\.weight", "conv.1.0.weight"),
    (rf"bn2\.{_BN}", r"conv.1.1.\1"),
    (r"layer1\.(\d+)\.conv([123])\.weight", lambda m: f"layer1.{m[1]}.body.{int(m[2]) - 1}.0.weight"),
    (rf"layer1\.(\d+)\.bn([123])\.{_BN}", lambda m: f"layer1.{m[1]}.body.{int(m[2]) - 1}.1.{m[3]}"),
    (r"layer1\.(\d+)\.downsample\.([01])\.(.+)", r"layer1.\1.shortcut.\2.\3"),
]
_HRNET_RULES = [  # official HRNET_base after the stem -> mvpose HRNet
    (r"transition1\.0\.([01])\.(.+)", r"transition1.0.\1.\2"),
    (r"transition1\.1\.0\.([01])\.(.+)", r"transition1.1.\1.\2"),
    (r"transition2\.2\.0\.([01])\.(.+)", r"transition2.\1.\2"),
    (r"(stage[23])\.(\d+)\.branches\.(\d+)\.(\d+)\.conv([12])\.weight",
     lambda m: f"{m[1]}.{m[2]}.branches.{m[3]}.{m[4]}.body.{int(m[5]) - 1}.0.weight"),
    (rf"(stage[23])\.(\d+)\.branches\.(\d+)\.(\d+)\.bn([12])\.{_BN}",
     lambda m: f"{m[1]}.{m[2]}.branches.{m[3]}.{m[4]}.body.{int(m[5]) - 1}.1.{m[6]}"),
    (r"(stage[23])\.(\d+)\.fuse_layers\.(\d+)\.(\d+)\.(.+)", r"\1.\2.fuse.\3.\4.\5"),
]
_TRANSFORMER_RULES = [  # official transformer part -> mvpose PPT (without the backbone)
    (r"keypoint_token", "keypoint_tokens"),
    (r"transformer\.layers\.(\d+)\.0\.norm\.(weight|bias)", r"layers.\1.norm1.\2"),
    (r"transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.weight", r"layers.\1.attn.qkv.weight"),
    (r"transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.(weight|bias)", r"layers.\1.attn.proj.\2"),
    (r"transformer\.layers\.(\d+)\.1\.fn\.norm\.(weight|bias)", r"layers.\1.norm2.\2"),
    (r"transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.0\.(weight|bias)", r"layers.\1.mlp.fc1.\2"),
    (r"transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.3\.(weight|bias)", r"layers.\1.mlp.fc2.\2"),
    (r"mlp_head\.([0-3])\.(weight|bias)", r"head.\1.\2"),
    (r"patch_to_embedding\.(weight|bias)", r"patch_embed.\1"),  # weight reshaped below
]


def _apply_rules(key: str, rules: list) -> str | None:
    for pattern, repl in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return repl(m) if callable(repl) else m.expand(repl)
    return None


def _split_layout(state: dict[str, torch.Tensor], where: str) -> tuple[str, dict, dict, dict]:
    """-> (layout, backbone keys, transformer keys, extra keys) with the official prefixes removed."""
    backbone, transformer, extra = {}, {}, {}
    if "features.keypoint_token" in state:
        layout = "multiview" if "features.pos_3d_linear.weight" in state else "stem"
        for k, v in state.items():
            if not k.startswith("features."):
                extra[k] = v
                continue
            k = k[len("features."):]
            if k.startswith(("conv1.", "bn1.", "conv2.", "bn2.", "layer1.")):
                backbone[k] = v
            elif k.startswith("pos_3d_linear."):
                extra[k] = v
            else:
                transformer[k] = v
    elif "transformer.keypoint_token" in state:
        layout = "hrnet"
        for k, v in state.items():
            if k.startswith("pre_feature."):
                backbone[k[len("pre_feature."):]] = v
            elif k.startswith("transformer."):
                transformer[k[len("transformer."):]] = v
            else:
                extra[k] = v
    else:
        raise ConversionError(
            f"{where}: not an official TokenPose / PPT checkpoint (no 'features.keypoint_token' or "
            f"'transformer.keypoint_token'); first keys: {list(state)[:5]}"
        )
    return layout, backbone, transformer, extra


def _factor_grid(pos: torch.Tensor, dim: int, where: str) -> tuple[int, int]:
    """The (h, w) token grid whose sine encoding is the stored ``pos_embedding`` (1, N, D)."""
    n = pos.shape[1]
    for h in range(1, n + 1):
        if n % h == 0:
            ref = sine_positional_encoding_2d(h, n // h, dim)
            if torch.allclose(pos[0].float(), ref, atol=1e-4):
                return h, n // h
    raise ConversionError(
        f"{where}: 'pos_embedding' {tuple(pos.shape)} is not the sine encoding of any token grid "
        "(a 'learnable' position embedding is not supported; the official configs use 'sine-full')"
    )


def _patch_split(patch_area: int) -> tuple[int, int]:
    """(p1, p2) with p1 * p2 = area, p1 >= p2, as square as possible: (4, 3) for 12, (4, 4) for 16."""
    p2 = max(d for d in range(1, math.isqrt(patch_area) + 1) if patch_area % d == 0)
    return patch_area // p2, p2


def convert_state_dict(
    state: dict[str, torch.Tensor],
    where: str = "<state dict>",
    keep_ratio: float | None = None,
    patch_size: tuple[int, int] | None = None,
    heads: int = OFFICIAL_HEADS,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Convert an official state dict (prefix ``module.`` already removed) to mvpose.

    Args:
        state: the official state dict.
        where: the file name, for error messages.
        keep_ratio: HTI keep ratio of the converted model (default: 0.7 for the multi-view model,
            else 0.7 when ``where`` names a PPT file, 1 otherwise; logged).
        patch_size: (p1, p2) patch size on the stride-4 features (default: the squarest split of the
            patch area with p1 >= p2, i.e. (4, 3) or (4, 4) for the official files).
        heads: attention heads (not in the weights; 8 in every official config).

    Returns:
        (mvpose state dict, model config for :func:`mvpose.models.build_model` including ``name``,
        info dict with ``architecture`` (a label), ``dataset`` (coco / mpii / h36m), ``layout``).

    Raises:
        ConversionError: an unknown layout, a key that maps to nothing, a missing key or a shape
            that does not fit, naming ``where`` and the first few such keys.
    """
    layout, backbone, transformer, extra = _split_layout(state, where)
    unmapped: list[str] = []
    if "keypoint_token" not in transformer or "pos_embedding" not in transformer:
        raise ConversionError(f"{where}: missing 'keypoint_token' or 'pos_embedding'")
    _, joints, dim = transformer["keypoint_token"].shape
    h, w = _factor_grid(transformer["pos_embedding"], dim, where)
    depth = 1 + max((int(m[1]) for k in transformer if (m := re.match(r"transformer\.layers\.(\d+)\.", k))),
                    default=-1)
    if "mlp_head.3.weight" not in transformer:
        raise ConversionError(f"{where}: a one-layer heatmap head (mlp_head.1 only) is not supported by mvpose")
    hidden, heat = transformer["mlp_head.1.weight"].shape[0], transformer["mlp_head.3.weight"].shape[0]
    mlp_hidden = transformer["transformer.layers.0.1.fn.fn.net.0.weight"].shape[0] if depth else 4 * dim

    # Backbone: the stem (width, blocks) or an HRNet (width of its first branch).
    if layout == "hrnet":
        if "transition1.0.0.weight" not in backbone:
            raise ConversionError(f"{where}: HRNet layout without 'pre_feature.transition1.0.0.weight'")
        width = backbone["transition1.0.0.weight"].shape[0]
        if width not in (32, 48):
            raise ConversionError(f"{where}: HRNet-W{width}; mvpose has HRNet-W32 and HRNet-W48")
        backbone_name, backbone_options, channels = f"hrnet_w{width}", {}, width
    else:
        if "conv1.weight" not in backbone:
            raise ConversionError(f"{where}: stem layout without 'features.conv1.weight'")
        width = backbone["conv1.weight"].shape[0]
        blocks = 1 + max(int(m[1]) for k in backbone if (m := re.match(r"layer1\.(\d+)\.", k)))
        backbone_name, channels = "stem", 4 * width
        backbone_options = {} if (width, blocks) == (64, 4) else {"width": width, "blocks": blocks}
    patch_area, rem = divmod(transformer["patch_to_embedding.weight"].shape[1], channels)
    if rem:
        raise ConversionError(f"{where}: patch_to_embedding input {transformer['patch_to_embedding.weight'].shape[1]}"
                              f" is not a multiple of the backbone's {channels} channels")
    p1, p2 = tuple(patch_size) if patch_size else _patch_split(patch_area)
    if p1 * p2 != patch_area:
        raise ConversionError(f"{where}: patch_size {(p1, p2)} does not fit the patch area {patch_area}")
    image_size, heatmap_size = (4 * p1 * h, 4 * p2 * w), (p1 * h, p2 * w)
    if heatmap_size[0] * heatmap_size[1] != heat:
        raise ConversionError(f"{where}: heatmap head outputs {heat} values, not the {heatmap_size} "
                              "heatmaps of a stride-4 input; give patch_size explicitly")

    multiview = layout == "multiview"
    name_hint = Path(where).name.lower()
    if keep_ratio is None:
        keep_ratio = 0.7 if multiview or "ppt" in name_hint else 1.0
        log.info("%s: keep ratio %.2f (from the file name; override with keep_ratio)", where, keep_ratio)
    prune_layers = [i for i in OFFICIAL_PRUNING_LOC if i < (OFFICIAL_VIEW_LAYERS if multiview else depth)]
    cfg: dict[str, Any] = dict(
        num_joints=joints, image_size=list(image_size), heatmap_size=list(heatmap_size), backbone=backbone_name,
        backbone_options=backbone_options, patch_size=[p1, p2], dim=dim, depth=depth, heads=heads,
        mlp_ratio=mlp_hidden / dim, keep_ratio=float(keep_ratio), prune_layers=prune_layers,
        scale_with_head=layout == "hrnet", pe_every_layer=True, head_hidden=hidden,
    )
    if multiview:
        if depth <= OFFICIAL_VIEW_LAYERS:
            raise ConversionError(f"{where}: a multi-view model of {depth} layers has no fusion layer "
                                  f"(the official code fuses after layer {OFFICIAL_VIEW_LAYERS})")
        cfg.update(fusion_layers=depth - OFFICIAL_VIEW_LAYERS, use_3d_pe=True)
        name = "mv_ppt_s"
    else:
        kind = {"stem": "s", "hrnet_w32": "b", "hrnet_w48": "l"}[backbone_name]
        name = f"{'ppt' if kind == 'l' else 'tokenpose' if keep_ratio == 1.0 else 'ppt'}_{kind}"

    # Keys.
    prefix = "ppt." if multiview else ""
    out: dict[str, torch.Tensor] = {}
    for k, v in backbone.items():
        if layout == "hrnet":
            new = _apply_rules(k, _STEM_RULES)
            new = f"backbone.stem.{new}" if new else _apply_rules(k, _HRNET_RULES)
            new = new if new is None or new.startswith("backbone.") else f"backbone.{new}"
        else:
            new = _apply_rules(k, _STEM_RULES)
            new = f"backbone.{new}" if new else None
        if new is None:
            unmapped.append(("pre_feature." if layout == "hrnet" else "features.") + k)
        else:
            out[prefix + new] = v
    for k, v in transformer.items():
        if k == "pos_embedding":
            continue  # checked above: the fixed sine encoding mvpose computes itself
        new = _apply_rules(k, _TRANSFORMER_RULES)
        if new is None:
            unmapped.append(("transformer." if layout == "hrnet" else "features.") + k)
            continue
        if new == "patch_embed.weight":  # Linear over (p1 p2 c) -> Conv2d (D, C, p1, p2)
            v = v.reshape(dim, p1, p2, channels).permute(0, 3, 1, 2).contiguous()
        out[prefix + new] = v
    for k, v in extra.items():
        if multiview and k.startswith("pos_3d_linear."):
            out["pos_3d." + k[len("pos_3d_linear."):]] = v
        else:
            unmapped.append(k)
    if unmapped:
        raise ConversionError(f"{where}: {len(unmapped)} key(s) map to no mvpose weight, first: {unmapped[:5]}")

    with torch.device("meta"):
        model = build_model(name, **cfg)
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (mvpose {tuple(own[k].shape)})" for k, v in out.items()
             if k in own and own[k].shape != v.shape]
    extra_keys = [k for k in out if k not in own]
    missing = [k for k in own if k not in out]
    if wrong or extra_keys or missing:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape(s) do not fit, first: {wrong[:5]}")
        if extra_keys:
            parts.append(f"{len(extra_keys)} converted key(s) unknown to {name}, first: {extra_keys[:5]}")
        if missing:
            parts.append(f"{len(missing)} weight(s) of {name} not in the file, first: {missing[:5]}")
        raise ConversionError(f"{where}: " + "; ".join(parts))
    dataset = "h36m" if multiview else {17: "coco", 16: "mpii"}.get(joints, "unknown")
    label = {"stem": "TokenPose-S/PPT-S", "hrnet_w32": "TokenPose-B/PPT-B", "hrnet_w48": "TokenPose-L/PPT-L"}[
        backbone_name] + f" D{depth}"
    if multiview:
        label = f"multi-view PPT-S D{depth} ({OFFICIAL_VIEW_LAYERS} per view + {depth - OFFICIAL_VIEW_LAYERS} fusion)"
    info = {"architecture": f"{label}, {image_size[0]}x{image_size[1]}, {joints} joints", "dataset": dataset,
            "layout": layout}
    return out, dict(model.config), info


def map_coco_tokens_to_h36m(tokens: torch.Tensor) -> torch.Tensor:
    """(1, 17, D) COCO keypoint tokens -> (1, 17, D) in the Human3.6M order (:data:`COCO_TO_H36M_TOKENS`)."""
    if tokens.dim() != 3 or tokens.shape[1] != 17:
        raise ValueError(f"map_coco_tokens_to_h36m: expected (1, 17, D) tokens, found {tuple(tokens.shape)}")
    return tokens[:, list(COCO_TO_H36M_TOKENS)].clone()


def convert_file(
    src: str | Path,
    dst: str | Path,
    keep_ratio: float | None = None,
    patch_size: tuple[int, int] | None = None,
    heads: int = OFFICIAL_HEADS,
) -> dict[str, Any]:
    """Convert an official checkpoint file to an mvpose checkpoint (written atomically).

    The output is the engine's checkpoint format (``model``, ``config``, ``model_config``) plus
    ``converted_from``; plain Python types and tensors only, so it loads with
    ``torch.load(weights_only=True)`` and in :func:`mvpose.load_model`, ``mvpose evaluate``,
    ``mvpose plot tokens``, ``mvpose triangulate --checkpoint`` and ``model.pretrained``.

    Returns:
        the ``converted_from`` record: ``file``, ``architecture``, ``dataset``, ``model`` (registry name),
        ``keep_ratio``.
    """
    from mvpose.engine.checkpoint import atomic_save
    from mvpose.engine.config import DEFAULTS, deep_update

    src = Path(src)
    state, model_cfg, info = convert_state_dict(read_state_file(src), str(src), keep_ratio, patch_size, heads)
    model_cfg = _plain(model_cfg)
    multiview = "fusion_layers" in model_cfg
    grid = [model_cfg["image_size"][0] // (4 * model_cfg["patch_size"][0]),
            model_cfg["image_size"][1] // (4 * model_cfg["patch_size"][1])]
    cfg = deep_update(DEFAULTS, {
        "name": f"converted_{src.stem}",
        "dataset": {"name": info["dataset"], "views": 4 if multiview else 1, "image_size": model_cfg["image_size"],
                    "heatmap_size": model_cfg["heatmap_size"], "token_grid": grid},
        "model": model_cfg,
    })
    record = {"file": str(src), "architecture": info["architecture"], "dataset": info["dataset"],
              "model": model_cfg["name"], "keep_ratio": model_cfg["keep_ratio"]}
    atomic_save({"model": state, "config": cfg, "model_config": model_cfg, "converted_from": record}, dst)
    return record


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively (checkpoint configs hold plain types)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
