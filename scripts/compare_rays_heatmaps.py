#!/usr/bin/env python
"""What the 3D PE ray formula (exact vs official) changes on a multi-view PPT's heatmaps, joints and 3D poses.

The same crops of a Human3.6M-format root (e.g. ``mvpose synth --image-size 1000``: the real Human3.6M rig
with its lens distortion) go through one multi-view model twice, once with mvpose's exact rays and once
with the official multi-view PPT rays (``dataset.rays``, mvpose/data/rays.py); only the rays differ (the
script checks that the images are identical). Printed, over all heatmaps (samples x views x joints):

- heatmap difference: max and mean over pixels of |H_exact - H_official|, each divided by that heatmap's
  range (max - min of H_exact);
- joint shift between the two runs for the argmax, soft-argmax (beta 50) and UDP (mvpose's default)
  decodings, in crop pixels and in original-image pixels (through the crop's inverse affine), and the
  share of joints whose argmax heatmap pixel changes;
- after the confidence-weighted DLT (UDP joints, as ``mvpose evaluate``): the 3D shift per joint and the
  MPJPE of each run against the ground truth;
- for scale, the same differences when each view gets the exact rays of another view (rolled by one):
  what wrong geometry does to this model; and the heatmap difference between two different samples of
  a batch (how much the heatmaps depend on the input at all).

The model is either ``--checkpoint`` (any mvpose multi-view checkpoint: a converted official model or a
trained one) or, by default, the official multi-view PPT-S of the published Human3.6M config (256x256,
4 views, 10 per-view + 2 fusion layers, 3D PE) with RANDOM weights: a state dict in the official key
layout (keys and shapes from tests/fixtures/official_ppt/official_keys.json.gz, which
scripts/make_official_fixture.py writes from the official code) filled with random values by the rules of
make_official_fixture.py (``randomize``: O(1) activations; seed ``--seed``), written as an official
``.pth`` file and converted by ``mvpose convert-weights``'s code (mvpose.models.convert.convert_file).
Random weights make this a sensitivity measurement of the converted architecture, not of the released
weights: a trained model's sensitivity to the rays may differ.

Example:
  mvpose synth --out /tmp/synth --subjects 9,11 --actions 2,14 --frames 4 --image-size 1000
  python scripts/compare_rays_heatmaps.py --data /tmp/synth                  # random official PPT-S
  python scripts/compare_rays_heatmaps.py --data /tmp/synth --pe-gain 10      # 3D PE 10x stronger
  python scripts/compare_rays_heatmaps.py --data /tmp/synth --checkpoint runs/demo_mv_ppt/best.pt
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mvpose.data import collate  # noqa: E402
from mvpose.data.dataset import sample_cameras  # noqa: E402
from mvpose.engine.decode import crop_to_original, decode_heatmaps  # noqa: E402
from mvpose.engine.evaluate import forward_views  # noqa: E402
from mvpose.engine.runner import load_model  # noqa: E402
from mvpose.engine.train import build_datasets  # noqa: E402
from mvpose.geometry.triangulation import triangulate  # noqa: E402
from mvpose.models.blocks import sine_positional_encoding_2d  # noqa: E402
from mvpose.models.convert import convert_file  # noqa: E402

MANIFEST = REPO / "tests" / "fixtures" / "official_ppt" / "official_keys.json.gz"
OFFICIAL_MV = "multiview_ppt_s_h36m_256x256"


def random_official_state(seed: int) -> dict[str, torch.Tensor]:
    """The official multi-view PPT-S state dict (keys, shapes) with random values (make_official_fixture.randomize's rules)."""
    with gzip.open(MANIFEST, "rt") as fh:
        entries = json.load(fh)[OFFICIAL_MV]
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in entries:
        if dtype != "float32":
            state[key] = torch.zeros(shape, dtype=getattr(torch, dtype))  # num_batches_tracked
        elif key.endswith("pos_embedding"):  # the fixed sine encoding of the 16 x 16 grid
            state[key] = sine_positional_encoding_2d(16, 16, shape[-1])[None]
        elif key.endswith("keypoint_token"):
            state[key] = torch.randn(shape, generator=g)
        elif key.endswith("running_mean"):
            state[key] = 0.2 * torch.randn(shape, generator=g)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) >= 2:
            state[key] = torch.randn(shape, generator=g) / float(np.prod(shape[1:])) ** 0.5
        elif key.endswith("weight"):
            state[key] = 1 + 0.2 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.2 * torch.randn(shape, generator=g)
    return state


def stats(v: np.ndarray) -> str:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    return f"{v.mean():12.3g}{np.percentile(v, 95):12.3g}{v.max():12.3g}"


@torch.no_grad()
def run(model: torch.nn.Module, cfg: dict, batch_size: int, limit: int | None) -> dict[str, np.ndarray]:
    """Both ray modes on the same crops -> per-heatmap / per-joint arrays."""
    loaders = {}
    for mode in ("exact", "official"):
        c = copy.deepcopy(cfg)
        c["dataset"]["rays"] = mode
        ds = build_datasets(c, splits=("val",), token_grid=model.token_grid)["val"]
        if limit:
            ds = torch.utils.data.Subset(ds, range(min(limit, len(ds))))
        loaders[mode] = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)
    acc: dict[str, list] = {}
    dev = torch.device("cpu")
    for be, bo in zip(loaders["exact"], loaders["official"]):
        if not torch.equal(be["image"], bo["image"]) or not torch.equal(be["affine"], bo["affine"]):
            raise RuntimeError("the two ray modes gave different crops: the comparison would not be fair")
        he = forward_views(model, be, dev)["heatmaps"].float()
        ho = forward_views(model, bo, dev)["heatmaps"].float()
        hr = forward_views(model, {**be, "rays": be["rays"].roll(1, dims=1)}, dev)["heatmaps"].float()
        H, W = be["image"].shape[-2:]
        rng = (he.amax((-2, -1)) - he.amin((-2, -1))).clamp_min(1e-12)
        diff = (he - ho).abs()
        rows = {"rel_max": diff.amax((-2, -1)) / rng, "rel_mean": diff.mean((-2, -1)) / rng,
                "ref_rel_max": (he - hr).abs().amax((-2, -1)) / rng,
                "ref_sample_rel_max": (he - he.roll(1, dims=0)).abs().amax((-2, -1)) / rng if len(he) > 1 else rng[:0],
                "ray_deg": torch.rad2deg(torch.acos((be["rays"].double() * bo["rays"].double()).sum(-1).clamp(-1, 1)))}
        affine = be["affine"].double()
        for method in ("argmax", "soft", "udp"):
            xe, ce = decode_heatmaps(he, (H, W), method)
            xo, co = decode_heatmaps(ho, (H, W), method)
            if method == "udp":
                rows["ref_udp_crop"] = (xe - decode_heatmaps(hr, (H, W), method)[0]).norm(dim=-1)
            rows[f"{method}_crop"] = (xe - xo).norm(dim=-1)
            rows[f"{method}_orig"] = (crop_to_original(xe.double(), affine) - crop_to_original(xo.double(), affine)).norm(dim=-1)
            if method == "argmax":
                rows["argmax_moved"] = (rows["argmax_crop"] > 0).float()
            if method == "udp":
                cams = sample_cameras(be).to(dtype=torch.float64)
                pe = triangulate(xe.double(), cams, ce.clamp_min(0).double()).points3d
                po = triangulate(xo.double(), cams, co.clamp_min(0).double()).points3d
                rows["shift3d"] = (pe - po).norm(dim=-1)
                gt = be["joints_3d"].double()
                rows["err_exact"], rows["err_official"] = (pe - gt).norm(dim=-1), (po - gt).norm(dim=-1)
        for k, v in rows.items():
            acc.setdefault(k, []).append(v.double().numpy().reshape(-1))
    return {k: np.concatenate(v) for k, v in acc.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="Human3.6M-format root (its validation split is used).")
    parser.add_argument("--checkpoint", type=Path, help="mvpose multi-view checkpoint (default: random official PPT-S, converted).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random official weights (default 0).")
    parser.add_argument("--pe-gain", type=float, default=1.0,
                        help="Multiply the 3D PE layer's weights and bias by this (default 1): a model leaning harder on 3D PE.")
    parser.add_argument("--samples", type=int, default=None, help="Use the first N samples only.")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint is None:
            src = Path(tmp) / "multiview_ppt_s_h36m_random.pth"
            torch.save(random_official_state(args.seed), src)
            record = convert_file(src, Path(tmp) / "converted.pt")
            label = f"{record['architecture']}, random official-layout weights (seed {args.seed}), converted"
            checkpoint = Path(tmp) / "converted.pt"
        else:
            checkpoint, label = args.checkpoint, str(args.checkpoint)
        model, cfg = load_model(checkpoint)
    if not getattr(model, "multiview", False) or not model.config.get("use_3d_pe", False):
        raise SystemExit(f"{checkpoint}: not a multi-view model with 3D PE (model {cfg['model']['name']!r}): rays do not matter")
    if args.pe_gain != 1.0:
        with torch.no_grad():
            for p in model.pos_3d.parameters():
                p.mul_(args.pe_gain)
        label += f", 3D PE layer x{args.pe_gain:g}"
    cfg = copy.deepcopy(cfg)
    cfg["dataset"].update(root=str(args.data), name="h36m", eval_every=1)
    r = run(model, cfg, args.batch_size, args.samples)
    n_joints = r["udp_crop"].size
    print(f"model: {label}")
    print(f"data: {args.data} (val), {n_joints} joints = samples x {cfg['dataset']['views']} views x joints; "
          f"crop {cfg['dataset']['image_size'][0]}x{cfg['dataset']['image_size'][1]}, token grid {list(model.token_grid)}")
    print(f"{'':44}{'mean':>12}{'p95':>12}{'max':>12}")
    rows = [("angle exact vs official rays (deg)", "ray_deg"),
            ("heatmap max|diff| / heatmap range", "rel_max"), ("heatmap mean|diff| / heatmap range", "rel_mean")]
    for method, name in (("argmax", "argmax"), ("soft", "soft-argmax"), ("udp", "UDP")):
        rows += [(f"{name} joint shift, crop px", f"{method}_crop"), (f"{name} joint shift, original px", f"{method}_orig")]
    rows += [("3D joint shift after DLT (UDP), mm", "shift3d"),
             ("reference: rays of another view (rolled)", None),
             ("  heatmap max|diff| / heatmap range", "ref_rel_max"), ("  UDP joint shift, crop px", "ref_udp_crop"),
             ("reference: another sample (other images)", None),
             ("  heatmap max|diff| / heatmap range", "ref_sample_rel_max")]
    for text, key in rows:
        print(f"  {text:<42}{stats(r[key]) if key else ''}")
    print(f"  argmax pixel changed: {100 * r['argmax_moved'].mean():.2f} % of joints")
    e, o = r["err_exact"], r["err_official"]
    print(f"  MPJPE exact rays {e.mean():.2f} mm, official rays {o.mean():.2f} mm, change {o.mean() - e.mean():+.3f} mm")


if __name__ == "__main__":
    main()
