#!/usr/bin/env python
"""Where do multi-view PPT's keypoint tokens look in the fusion layers: their own view or the others?

For each fusion layer of a trained multi-view PPT checkpoint, over validation samples, prints the
share of the keypoint tokens' attention (averaged over heads, rows and samples) that lands on
tokens of their own view and on the other views. With V views, attention that ignores the view
gives 1/V on the own view. Read it beside ``compare_fusion.py``'s "fusion off" column: attention
can reach the other views and still change nothing downstream.

Example: python scripts/fusion_attention.py runs/fusion100/demo_mv_ppt/last.pt --every 8
"""

from __future__ import annotations

import argparse
import copy
import types

import torch
from torch.utils.data import DataLoader

from mvpose.data import collate
from mvpose.engine.evaluate import forward_views
from mvpose.engine.runner import load_model
from mvpose.engine.train import build_datasets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="A multi-view PPT checkpoint (e.g. runs/fusion100/demo_mv_ppt/last.pt).")
    ap.add_argument("--every", type=int, default=8, help="Use every N-th validation frame group.")
    args = ap.parse_args()
    try:
        model, cfg = load_model(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        ap.error(str(err))
    if not getattr(model, "multiview", False):
        raise SystemExit(f"{args.checkpoint}: holds {cfg['model']['name']!r}, not a multi-view PPT")
    cfg = copy.deepcopy(cfg)
    cfg["dataset"]["eval_every"] = args.every
    ds = build_datasets(cfg, splits=("val",), token_grid=model.token_grid)["val"]
    views, joints = ds.num_views, model.ppt.num_joints
    depth = len(model.ppt.layers)
    fusion = range(depth - model.fusion_layers, depth)
    own_mass: dict[int, list[float]] = {i: [] for i in fusion}

    def recording(idx: int):
        def forward(self, x, attn_mask=None, key_padding_mask=None):
            # The block's own attention, asked for the keypoint rows' weights (B, V*J, N).
            x, w = self.attend(x, attn_mask, key_padding_mask, attn_rows=slice(0, views * joints))
            k = (x.shape[1] - views * joints) // views
            key_view = torch.cat([torch.arange(views).repeat_interleave(joints), torch.arange(views).repeat_interleave(k)])
            row_view = torch.arange(views).repeat_interleave(joints)
            own = (key_view[None, :] == row_view[:, None]).to(w.dtype)
            own_mass[idx].append(float((w * own).sum(-1).mean()))
            return self.feed_forward(x)
        return forward

    for idx in fusion:
        layer = model.ppt.layers[idx]
        layer.forward = types.MethodType(recording(idx), layer)
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=8, collate_fn=collate):
            forward_views(model, batch, torch.device("cpu"))
    for idx in fusion:
        own = sum(own_mass[idx]) / len(own_mass[idx])
        print(f"layer {idx}: keypoint attention on own view {100 * own:.1f} %, on the other {views - 1} views "
              f"{100 * (1 - own):.1f} % (blind to views: {100 / views:.1f} % / {100 - 100 / views:.1f} %)")


if __name__ == "__main__":
    main()
