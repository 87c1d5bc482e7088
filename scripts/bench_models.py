#!/usr/bin/env python
"""CPU (or GPU) speed of the PPT models, optionally against the official multi-view PPT code.

Measures, in one run, with random weights (latency does not depend on them):
  * the matrix-multiplication rate of this machine (a 2048x2048 float32 matmul, timed in the same
    rounds as the models), the yardstick of the GFLOPS figures;
  * single-view PPT-S at 256x256: MACs and latency with keep ratio 1 (TokenPose-S) and 0.7;
  * multi-view PPT-S, 4 views at 256x256, inference at each ``--batches`` size, and one training
    step (forward, MSE loss on heatmaps, backward, Adam) at ``--train-batch``.

With ``--reference PATH`` (a checkout of github.com/HowieMa/PPT, its ``multi-view-PPT`` folder or
the ``multiview_ppt.py`` file itself; never part of mvpose) the official ``TokenPose_S_base_multi``
in its own configuration (10 per-view layers, 2 fusion layers, HTI after layers 3/6/9) is timed
beside mvpose's ``mv_ppt_s`` converted from it by :func:`mvpose.models.convert.convert_state_dict`
(same configuration, same weights, so both compute the same function: the largest heatmap
difference is printed). Without
it the reference is mvpose itself, run one view at a time (no cross-view fusion). The two are
timed alternately, round by round, so that load from other processes hits both alike; figures
are medians over the rounds, and the ratios are medians of the per-round ratios. Peak memory is
the growth of the resident set size (VmHWM after clearing it) during one call; Linux only.

Unless ``--default-malloc``, glibc is told to keep freed memory for reuse
(:func:`mvpose.engine.runtime.keep_freed_memory`, as ``mvpose train`` does); it applies to the
whole process, so to the official model as well.

The official code needs ``einops`` and ``timm``'s ``trunc_normal_``: a missing timm is replaced
by torch's ``nn.init.trunc_normal_`` in this process (einops must be installed to run it).

The last line reads ``speedup_vs_official=<official / mvpose latency, batch 1>`` with
``--reference``, else ``speedup_vs_view_by_view=<...>``.

Example: OMP_WAIT_POLICY=PASSIVE python scripts/bench_models.py --threads 2 --reference ../PPT
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mvpose.engine.runtime import keep_freed_memory
from mvpose.models import build_model
from mvpose.models.convert import convert_state_dict
from mvpose.models.flops import count_macs

log = logging.getLogger("bench_models")

# --------------------------------------------------------------------------------------------
# Loading the official code (read from the user's checkout, never copied).


def _official_file(path: Path) -> Path:
    for candidate in (path, path / "lib/models/multiview_ppt.py", path / "multi-view-PPT/lib/models/multiview_ppt.py"):
        if candidate.is_file():
            return candidate
    raise SystemExit(
        f"--reference {path}: expected the PPT checkout, its multi-view-PPT folder or multiview_ppt.py; "
        "found no multi-view-PPT/lib/models/multiview_ppt.py there"
    )


def load_official(path: Path) -> types.ModuleType:
    """Import the official multiview_ppt.py, with torch's trunc_normal_ standing in for timm's."""
    try:
        import timm.models.layers.weight_init  # noqa: F401
    except ImportError:
        names = ["timm", "timm.models", "timm.models.layers", "timm.models.layers.weight_init"]
        for name in names:
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["timm.models.layers.weight_init"].trunc_normal_ = (
            lambda t, mean=0.0, std=1.0, a=-2.0, b=2.0: nn.init.trunc_normal_(t, mean, std, a, b)
        )
    try:
        import einops  # noqa: F401
    except ImportError:
        raise SystemExit("--reference: the official code needs einops (pip install einops)") from None
    file = _official_file(path)
    spec = importlib.util.spec_from_file_location("official_multiview_ppt", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_model(module: types.ModuleType) -> nn.Module:
    """The official TokenPose_S_base_multi of the Human3.6M config (256x256, 4x4 patches, D 192)."""
    logging.disable(logging.INFO)  # its constructor prints/logs its settings
    model = module.TokenPose_S_base_multi(
        image_size=[256, 256], patch_size=[4, 4], num_keypoints=17, dim=192, channels=256, depth=12,
        heads=8, mlp_dim=192 * 3, apply_init=True, hidden_heatmap_dim=64 * 64 // 8,
        heatmap_dim=64 * 64, heatmap_size=[64, 64], pos_embedding_type="sine-full",
    )
    logging.disable(logging.NOTSET)
    return model


# --------------------------------------------------------------------------------------------
# Timing helpers


def peak_rss_growth_mb(fn: Callable[[], object]) -> float:
    """Growth of the peak resident set size during ``fn()`` in MB (Linux; nan elsewhere).

    Meaningful for the first large call of a process only: later calls reuse the memory
    that the allocator keeps, hence :func:`peak_in_child`.
    """

    def read(field: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return float(line.split()[1]) / 1024
        return float("nan")

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        fn()
        return float("nan")
    before = read("VmRSS")
    fn()
    return read("VmHWM") - before


def peak_in_child(args: argparse.Namespace, what: str, batch: int) -> float:
    """Peak RSS growth (MB) of one call of ``what`` ("official"/"mvpose", "train-" prefix for a
    training step) at ``batch``, measured in a fresh process so no freed memory is reused."""
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--device", args.device,
           "--peak-of", what, "--peak-batch", str(batch)] + (["--default-malloc"] if args.default_malloc else [])
    if args.reference is not None:
        cmd += ["--reference", str(args.reference)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        log.warning("peak memory of %s failed: %s", what, done.stderr.strip()[-300:])
        return float("nan")


def interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int, cuda: bool) -> dict[str, list[float]]:
    """Run every function once per round, ``repeats`` rounds after ``warmup``; seconds per call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of times[num] / times[den]."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


# --------------------------------------------------------------------------------------------


def build_pair(reference: Path | None, dev: torch.device) -> tuple[nn.Module, nn.Module | None]:
    """mvpose's mv_ppt_s in the official configuration and, with ``reference``, the official model
    whose weights it is given."""
    if reference is None:
        return build_model("mv_ppt_s", fusion_layers=2, prune_layers=(3, 6, 9)).to(dev).eval(), None
    official = official_model(load_official(reference)).eval()
    # As in the official checkpoints, the model's keys sit under ``features.`` (TokenPose_S).
    state, cfg, _ = convert_state_dict({f"features.{k}": v for k, v in official.state_dict().items()}, keep_ratio=0.7)
    mv = build_model(**cfg)
    mv.load_state_dict(state)
    return mv.to(dev).eval(), official.to(dev)


def make_calls(mv: nn.Module, official: nn.Module | None, b: int, dev: torch.device, train: bool) -> dict[str, Callable]:
    """One forward (``train`` False, inference mode) or training step (forward, MSE loss, backward,
    Adam) per model, on fixed random inputs of batch ``b``, 4 views."""
    imgs = torch.randn(b, 4, 3, 256, 256, device=dev)
    rays = F.normalize(torch.randn(b, 4, 256, 3, device=dev), dim=-1)
    target = torch.rand(b, 4, 17, 64, 64, device=dev)
    forwards = {"mvpose": lambda: mv(imgs, rays=rays)["heatmaps"]}
    if official is not None:
        views, ray_list = list(imgs.unbind(1)), list(rays.unbind(1))
        centers = [torch.zeros(b, 1, 3, device=dev)] * 4
        forwards["official"] = lambda: torch.stack(
            official(views, ratio=0.7, rays=ray_list, centers=centers, fuse=True), 1
        )
    else:
        forwards["view-by-view"] = lambda: torch.cat(
            [mv(imgs[:, i : i + 1], rays=rays[:, i : i + 1])["heatmaps"] for i in range(4)], 1
        )
    models = {"mvpose": mv, "official": official, "view-by-view": mv}
    calls = {}
    for name, forward in forwards.items():
        model = models[name]
        model.train(train)
        if not train:
            calls[name] = lambda forward=forward: _no_grad(forward)
            continue
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)

        def step(forward=forward, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            F.mse_loss(forward(), target).backward()
            opt.step()

        calls[name] = step
    return calls


def _no_grad(fn: Callable) -> object:
    with torch.inference_mode():
        return fn()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per figure (median)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8], help="multi-view inference batches")
    ap.add_argument("--train-batch", type=int, default=2, help="batch of the training step (0: skip)")
    ap.add_argument("--skip-single-view", action="store_true", help="skip the single-view PPT-S figures")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak memory measurements")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's default of returning freed memory (see mvpose.engine.runtime)")
    ap.add_argument("--reference", type=Path, help="checkout of the official PPT code to time against")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-of", help=argparse.SUPPRESS)  # child process of peak_in_child
    ap.add_argument("--peak-batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.default_malloc:
        keep_freed_memory()  # process-wide: the official code runs under the same allocator
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if args.peak_of:
        mv, official = build_pair(args.reference, dev)
        train = args.peak_of.startswith("train-")
        fn = make_calls(mv, official, args.peak_batch, dev, train)[args.peak_of.removeprefix("train-")]
        print(f"{peak_rss_growth_mb(fn):.1f}")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("torch %s, device %s, %d threads, allocator keeps freed memory: %s", torch.__version__, dev,
             args.threads, not args.default_malloc)

    if not args.skip_single_view:
        sv = dict(image_size=(256, 256), heatmap_size=(64, 64), patch_size=(4, 4))
        x = torch.randn(1, 3, 256, 256, device=dev)
        models = {r: build_model("ppt_s", **sv, keep_ratio=r).to(dev).eval() for r in (1.0, 0.7)}
        with torch.inference_mode():
            times = interleaved({r: (lambda m=m: m(x)) for r, m in models.items()}, args.warmup, args.repeats, cuda)
        for r, m in models.items():
            macs = count_macs(m, x)["dense"] / 1e9
            log.info("PPT-S 256x256 keep_ratio=%.1f: %.2f GMACs, batch 1 latency %.1f ms",
                     r, macs, 1e3 * statistics.median(times[r]))
        log.info("pruned_speedup=%.3f", ratio(times, 1.0, 0.7))

    # Multi-view: the official configuration (10 + 2 layers, HTI 3/6/9).
    mv, official = build_pair(args.reference, dev)
    ref = "official" if official is not None else "view-by-view"
    first_ratio = None
    for b in args.batches:
        calls = make_calls(mv, official, b, dev, train=False)
        if official is not None and b == args.batches[0]:
            diff = (calls["official"]() - calls["mvpose"]()).abs().max().item()
            log.info("official vs mvpose heatmaps, batch %d: max abs difference %.2e", b, diff)
        # The matmul yardstick joins every round, so it sees the same load as the models.
        a, c = torch.randn(2048, 2048, device=dev), torch.randn(2048, 2048, device=dev)
        times = interleaved({**calls, "matmul": lambda: a @ c}, args.warmup, args.repeats, cuda)
        rate = 2 * 2048**3 / statistics.median(times.pop("matmul")) / 1e9
        log.info("batch %d rounds: 2048x2048 float32 matmul %.1f GFLOPS", b, rate)
        h, w = mv.ppt.image_size
        gflop = 2 * count_macs(mv, torch.zeros(b, 4, 3, h, w, device=dev),
                               rays=torch.ones(b, 4, mv.ppt.num_tokens, 3, device=dev))["total"] / 1e9
        speed = ratio(times, ref, "mvpose")
        first_ratio = speed if first_ratio is None else first_ratio
        for name in (ref, "mvpose"):
            t = statistics.median(times[name])
            mem = float("nan") if args.no_memory else peak_in_child(args, name, b)
            log.info("multi-view PPT-S, 4 views, batch %d, %s: %.1f ms (%.2f samples/s, %.1f GFLOP, %.0f GFLOPS = "
                     "%.2f of the matmul rate), peak RSS +%.0f MB", b, name, 1e3 * t, b / t, gflop, gflop / t,
                     gflop / t / rate, mem)
        log.info("multi-view batch %d: mvpose %.2fx %s (median of %d interleaved rounds)", b, speed, ref, args.repeats)
        if cuda:
            with torch.autocast("cuda", dtype=torch.float16):
                t = statistics.median(interleaved({"amp": calls["mvpose"]}, args.warmup, args.repeats, cuda)["amp"])
            log.info("multi-view PPT-S, batch %d, fp16 autocast: %.1f ms (%.2f samples/s)", b, 1e3 * t, b / t)

    if args.train_batch > 0:
        b = args.train_batch
        calls = make_calls(mv, official, b, dev, train=True)
        times = interleaved(calls, 1, args.repeats, cuda)
        for name in calls:
            t = statistics.median(times[name])
            mem = float("nan") if args.no_memory else peak_in_child(args, f"train-{name}", b)
            log.info("training step, 4 views, batch %d, %s: %.1f ms (%.2f samples/s), peak RSS +%.0f MB",
                     b, name, 1e3 * t, b / t, mem)
        log.info("training step: mvpose %.2fx %s", ratio(times, ref, "mvpose"), ref)
    key = "speedup_vs_official" if official is not None else "speedup_vs_view_by_view"
    print(f"{key}={first_ratio:.3f}")


if __name__ == "__main__":
    main()
