#!/usr/bin/env python
"""CPU (or GPU) forward latency of the PPT models: token pruning r=1 vs r=0.7, multi-view PPT.

Measures, in one run, with random weights (latency does not depend on them):
  * single-view PPT-S at 256x256: MACs and latency with keep ratio 1 (TokenPose-S) and 0.7;
  * multi-view PPT-S, 4 views at 256x256: latency at batch 1 and 8 (and with mixed precision on CUDA).
Each figure is the median of --repeats timed runs after --warmup runs. The last line reads
``pruned_speedup=<latency r=1 / latency r=0.7>``.

Example: python scripts/bench_models.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mvpose.models import build_model
from mvpose.models.flops import count_macs


def timed(fn, warmup: int, repeats: int, cuda: bool) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    print(f"torch {torch.__version__}, device {dev}, {args.threads} threads")

    sv = dict(image_size=(256, 256), heatmap_size=(64, 64), patch_size=(4, 4))
    x = torch.randn(1, 3, 256, 256, device=dev)
    lat = {}
    for r in (1.0, 0.7):
        model = build_model("ppt_s", **sv, keep_ratio=r).to(dev).eval()
        macs = count_macs(model, x)["dense"] / 1e9
        with torch.inference_mode():
            lat[r] = timed(lambda: model(x), args.warmup, args.repeats, cuda)
        print(f"PPT-S 256x256 keep_ratio={r:.1f}: {macs:.2f} GMACs, batch 1 latency {1e3 * lat[r]:.1f} ms")

    mv = build_model("mv_ppt_s").to(dev).eval()
    for b in (1, 8):
        imgs = torch.randn(b, 4, 3, 256, 256, device=dev)
        rays = torch.nn.functional.normalize(torch.randn(b, 4, 256, 3, device=dev), dim=-1)
        with torch.inference_mode():
            t = timed(lambda: mv(imgs, rays=rays), args.warmup, args.repeats, cuda)
            print(f"multi-view PPT-S, 4 views, batch {b}: {1e3 * t:.1f} ms ({b / t:.2f} samples/s)")
            if cuda:
                with torch.autocast("cuda", dtype=torch.float16):
                    t = timed(lambda: mv(imgs, rays=rays), args.warmup, args.repeats, cuda)
                print(f"multi-view PPT-S, 4 views, batch {b}, fp16 autocast: {1e3 * t:.1f} ms ({b / t:.2f} samples/s)")
    print(f"pruned_speedup={lat[1.0] / lat[0.7]:.3f}")


if __name__ == "__main__":
    main()
