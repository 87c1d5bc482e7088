#!/usr/bin/env python
"""Training-step speed of the demo recipes, and of the ways to run the same step that were tried.

The demo fine-tunes ``ppt_tiny`` (single view) and ``mv_ppt_tiny`` (multi-view, 3D PE) at batch 8
four-view samples of 128x128 (32 crops), keep ratio 0.7. One step here is what ``mvpose train``
runs per batch without the data loader: forward, the heatmap MSE, backward, Adam. Variants, timed
in the same run, alternating round by round with the reference so that load from other processes
hits all alike (figures are medians over rounds, ratios medians of per-round ratios):

  * ``eager``: what ``mvpose train`` runs on CPU (the reference of every ratio);
  * ``adam-foreach`` / ``adam-fused``: the same Adam through PyTorch's multi-tensor / fused kernels;
  * ``bf16``: ``torch.autocast("cpu", bfloat16)`` around the forward (uses AMX / AVX512-BF16 where
    the CPU has them). Not the same arithmetic: bfloat16 keeps 8 bits of mantissa;
  * ``compile`` (with ``--compile``): ``torch.compile`` (inductor, C++ kernels) of forward and loss;
    the first call's compilation time is printed apart.

It also prints the step's share spent in the CNN stem (forward + backward of the backbone alone),
and the achieved GFLOPS (3 x the forward's multiply-adds x 2, the usual training estimate) as a
fraction of a 2048x2048 float32 matmul timed in the same rounds.

Last line: ``speedup_best_vs_eager=<eager / fastest variant>`` (1.0 when eager is fastest).

Example: OMP_WAIT_POLICY=PASSIVE python scripts/bench_train_step.py --threads 2 --compile
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Callable

import torch

from mvpose.engine.runtime import deterministic_algorithms, keep_freed_memory
from mvpose.models import build_model
from mvpose.models.flops import count_macs

log = logging.getLogger("bench_train_step")

BATCH, VIEWS, SIZE, HEATMAP, JOINTS, TOKENS = 8, 4, 128, 32, 17, 256


def make_step(name: str, variant: str, seed: int = 0) -> tuple[Callable[[], float], torch.nn.Module]:
    """A closure running one training step of ``name`` (fresh weights from ``seed``) in ``variant``."""
    torch.manual_seed(seed)
    model = build_model(name).train()
    kw = {"foreach": True} if variant == "adam-foreach" else {"fused": True} if variant == "adam-fused" else {}
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(BATCH, VIEWS, 3, SIZE, SIZE, generator=g)
    rays = torch.nn.functional.normalize(torch.randn(BATCH, VIEWS, TOKENS, 3, generator=g), dim=-1)
    target = torch.rand(BATCH, VIEWS, JOINTS, HEATMAP, HEATMAP, generator=g)
    multiview = name.startswith("mv")

    def loss_fn() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
            out = model(images, rays=rays) if multiview else model(images.flatten(0, 1))
        return (out["heatmaps"].float().reshape(target.shape) - target).square().mean()

    fn = torch.compile(loss_fn) if variant == "compile" else loss_fn

    def step() -> float:
        loss = fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step, model


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Example: OMP_WAIT_POLICY=PASSIVE python scripts/bench_train_step.py --threads 2")
    p.add_argument("--models", nargs="+", default=["ppt_tiny", "mv_ppt_tiny"], help="registered model names")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: PyTorch's)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (after 3 warm-up steps)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (a minute or more to compile on 2 cores)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    deterministic_algorithms()  # as mvpose train does on CPU
    variants = ["eager", "adam-foreach", "adam-fused", "bf16"] + (["compile"] if args.compile else [])
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best_ratio = 1.0
    log.info("torch %s, %d threads, %s", torch.__version__, torch.get_num_threads(), torch.backends.cpu.get_cpu_capability())
    for name in args.models:
        steps, losses = {}, {}
        for v in variants:
            steps[v], model = make_step(name, v)
            first = timed(steps[v])
            if v == "compile":
                log.info("%s compile: first step %.1f s (compilation)", name, first)
            for _ in range(2):
                losses[v] = steps[v]()
        x = torch.randn(BATCH * VIEWS, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
        stem = (model.ppt if name.startswith("mv") else model).backbone
        macs = count_macs(model, torch.randn(BATCH, VIEWS, 3, SIZE, SIZE), rays=torch.nn.functional.normalize(
            torch.randn(BATCH, VIEWS, TOKENS, 3), dim=-1)) if name.startswith("mv") else count_macs(model, x)
        times: dict[str, list[float]] = {v: [] for v in variants + ["stem", "matmul"]}
        for _ in range(args.repeats):
            for v in variants:
                times[v].append(timed(steps[v]))
            times["stem"].append(timed(lambda: stem(x).sum().backward()))
            times["matmul"].append(timed(lambda: a @ b))
        med = {k: statistics.median(t) for k, t in times.items()}
        mm_rate = 2 * 2048**3 / med["matmul"] / 1e9
        train_gflop = 3 * 2 * macs["total"] / 1e9
        log.info("%s: forward %.2f GMACs (%.2f GMACs attention); a training step ~%.1f GFLOP; matmul %.0f GFLOPS",
                 name, macs["total"] / 1e9, macs["attention"] / 1e9, train_gflop, mm_rate)
        log.info("  %-13s %9s %9s %9s  %s", "variant", "step ms", "vs eager", "GFLOPS", "loss after 3 steps (eager %.8f)" % losses["eager"])
        for v in variants:
            ratio = statistics.median(e / t for e, t in zip(times["eager"], times[v]))
            log.info("  %-13s %9.1f %8.2fx %9.0f  %.8f", v, 1000 * med[v], ratio, train_gflop / med[v], losses[v])
            best_ratio = max(best_ratio, ratio)
        log.info("  stem (backbone forward + backward alone): %.1f ms = %.0f %% of the eager step; eager at %.2f of the matmul rate",
                 1000 * med["stem"], 100 * med["stem"] / med["eager"], train_gflop / med["eager"] / mm_rate)
    print(f"speedup_best_vs_eager={best_ratio:.2f}")


if __name__ == "__main__":
    main()
