#!/usr/bin/env python
"""How far the official multi-view PPT rays are from mvpose's exact rays on the real Human3.6M cameras.

For every subject's rig in mvpose/calibration/h36m.json (7 subjects x 4 cameras), people are placed with their
root on a grid over the capture floor (x, y in -E..E, every 0.5 m, root 0.9 m up; E = --extent, 1.5 m); each view gets
the H36M-Toolbox box (mvpose.data.prepare_h36m.infer_boxes) when the box centre lies in the image, and
its 256x256 crop's 16x16 token rays are computed both ways (mvpose.data.rays):

  exact     the UDP crop map, undistorted, float64 (mvpose's default)
  official  HRNet's crop map, no undistortion, float32 (multi-view-PPT create_3d_ray_coords)

and split into their three causes: the lens distortion (exact vs the same without undistortion), the
crop convention (UDP vs HRNet map, both without distortion, float64), float32 rounding (the official
formula in float64 vs float32). Angles in degrees over all tokens of all crops. The effect on the 3D PE
vectors is ||W (d_exact - d_official)|| / ||W d_exact|| for the 3D PE layer W (Linear 3 -> 192) as
mvpose initialises it (truncated normal, std 0.02; seed 0), and the plain |d_exact - d_official|.

Example:
  python scripts/compare_rays.py                 # roots over +-1.5 m
  python scripts/compare_rays.py --extent 500    # roots near the capture centre
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvpose.data import transforms as tf  # noqa: E402
from mvpose.data.prepare_h36m import infer_boxes  # noqa: E402
from mvpose.data.rays import official_ray_points, official_rays, ray_angles_deg  # noqa: E402
from mvpose.geometry import Cameras  # noqa: E402


def crops(calibration: Path, extent: float):
    """Yield (camera params, center, scale) for every rig camera and root position whose box centre is in the image."""
    doc = json.loads(calibration.read_text())
    grid = np.arange(-extent, extent + 1.0, 500.0)
    for rig in doc["rigs"].values():
        for cam in rig["cameras"]:
            K, R, t = (np.asarray(cam[k], dtype=np.float64) for k in ("K", "R", "t"))
            W, H = cam["size"]
            for x in grid:
                for y in grid:
                    root_cam = R @ np.array([x, y, 900.0]) + t
                    box = infer_boxes(root_cam[None], K[0, 0], K[1, 1], K[0, 2], K[1, 2])[0]
                    center = 0.5 * (box[:2] + box[2:])
                    if 0 <= center[0] < W and 0 <= center[1] < H:
                        yield cam, center, (box[2:] - box[:2]) / 200.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", type=Path,
                        default=Path(__file__).resolve().parents[1] / "mvpose" / "calibration" / "h36m.json")
    parser.add_argument("--extent", type=float, default=1500.0, help="Root grid half-width, mm (default 1500).")
    args = parser.parse_args()
    hw, grid = (256, 256), (16, 16)
    tokens = tf.token_centers(hw, grid)
    torch.manual_seed(0)
    pe = torch.nn.Linear(3, 192, dtype=torch.float64)
    torch.nn.init.trunc_normal_(pe.weight, std=0.02)
    torch.nn.init.zeros_(pe.bias)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("total", "distortion", "crop convention", "float32")}
    rel_pe, diff = [], []
    n = 0
    for cam, center, scale in crops(args.calibration, args.extent):
        n += 1
        K, R, t, dist = (np.asarray(cam[k], dtype=np.float64) for k in ("K", "R", "t", "dist"))
        C = -R.T @ t
        cams = Cameras.from_params(K, R, t, dist, np.asarray(cam["size"], dtype=np.float64))
        crop = cams.crop(torch.from_numpy(tf.crop_affine(center, scale, 0.0, hw)), (hw[1], hw[0]))
        exact = crop.pixel_rays(tokens).numpy()
        exact_nodist = crop.pixel_rays(tokens, undistort=False).numpy()
        off64 = official_ray_points(K, R, C, center, scale, 0.0, hw, grid) - C
        off32 = official_rays(K, R, C, center, scale, 0.0, hw, grid).double().numpy()
        parts["total"].append(ray_angles_deg(exact, off32))
        parts["distortion"].append(ray_angles_deg(exact, exact_nodist))
        parts["crop convention"].append(ray_angles_deg(exact_nodist, off64))
        parts["float32"].append(ray_angles_deg(off64, off32))
        with torch.no_grad():
            a, b = torch.from_numpy(exact), torch.from_numpy(off32)
            rel_pe.append(((pe.weight @ (a - b).T).norm(dim=0) / (pe.weight @ a.T).norm(dim=0)).numpy())
        diff.append(np.linalg.norm(exact - off32, axis=-1))
    print(f"{n} crops (7 subjects x 4 cameras x roots within +-{args.extent:g} mm, box centre in the image), "
          f"{grid[0] * grid[1]} tokens each")
    print(f"{'angle between rays (deg)':<28}{'mean':>10}{'median':>10}{'p95':>10}{'max':>10}")
    for name, values in parts.items():
        v = np.concatenate(values)
        print(f"  {name:<26}{v.mean():10.4f}{np.median(v):10.4f}{np.percentile(v, 95):10.4f}{v.max():10.4f}")
    for name, values in (("|d_exact - d_official|", diff), ("3D PE relative change", rel_pe)):
        v = np.concatenate(values)
        print(f"  {name:<26}{v.mean():10.5f}{np.median(v):10.5f}{np.percentile(v, 95):10.5f}{v.max():10.5f}")


if __name__ == "__main__":
    main()
