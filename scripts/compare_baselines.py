#!/usr/bin/env python
"""Every monocular baseline and single-view PPT on the synthetic benchmark, under one budget.

Each model is trained by the shared engine with the ``demo_sv_ppt`` recipe (same data, epochs,
optimiser and augmentation; only ``model`` changes), then evaluated per view + DLT on the
validation subjects. For each it records parameters, MACs per 128x128 image (counted on real
validation crops, so data-dependent patch selections count what they actually keep; guided
ViTransPose includes its Lite-HRNet guide), CPU latency at batch 1 (median of --repeats) and
JDR / MPJPE. ViTransPose with BFS patch selection is run for several ``n`` (neighbours), which
gives the patch-selection trade-off curve (MACs vs accuracy).

Outputs (``--out``, default runs/baselines): one run folder per model, ``results.json``,
``results.md`` (the README table) and ``tradeoff.png``. Runs that already have a report are
reused, so an interrupted comparison resumes.

Example: python scripts/compare_baselines.py --epochs 6 --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch

from mvpose.data import collate
from mvpose.engine.checkpoint import atomic_write_text
from mvpose.engine.config import load_pipeline
from mvpose.engine.runner import evaluate_checkpoint, load_model
from mvpose.engine.train import build_datasets, train
from mvpose.models.flops import count_macs, count_params

log = logging.getLogger("compare_baselines")

GUIDE = "lite_hrnet_tiny"
# (label, registry name, model overrides); "{guide}" is replaced by the trained guide checkpoint.
_GUIDED = {"guide": GUIDE, "guide_checkpoint": "{guide}", "skeleton": "h36m"}
MODELS: list[tuple[str, str, dict]] = [
    ("PPT (r=0.7)", "ppt_tiny", {}),
    ("TokenPose (PPT r=1)", "ppt_tiny", {"keep_ratio": 1.0, "prune_layers": []}),
    ("Lite-HRNet (guide)", GUIDE, {}),
    ("ViTransPose full", "vitranspose_tiny", {"selection": "none", "skeleton": "h36m"}),
    ("ViTransPose BFS n=0", "vitranspose_tiny", {"selection": "neighbors", "num_neighbors": 0, **_GUIDED}),
    ("ViTransPose BFS n=1", "vitranspose_tiny", {"selection": "neighbors", "num_neighbors": 1, **_GUIDED}),
    ("ViTransPose BFS n=2", "vitranspose_tiny", {"selection": "neighbors", "num_neighbors": 2, **_GUIDED}),
    ("ViTransPose bones", "vitranspose_tiny", {"selection": "skeleton", "num_neighbors": 0, **_GUIDED}),
    ("ViTransPose joint tokens", "vitranspose_tiny", {"selection": "joint_tokens", "keep_ratio": 0.7,
                                                      "prune_layers": [0], "skeleton": "h36m"}),
    ("SHaRPose", "sharpose_tiny", {}),
    ("HRPVT v2", "hrpvt_tiny", {}),
]


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_").replace("__", "_")


def measure(checkpoint: Path, batch: dict, repeats: int) -> dict:
    """Parameters, MACs per image on real crops and batch-1 CPU latency of a trained model."""
    model, _ = load_model(checkpoint)
    model.eval()
    images = batch["image"].flatten(0, 1)  # (B*V, 3, H, W): single-view models see views alone
    guide = getattr(model, "guide", None)
    params = count_params(model) - (count_params(guide) if guide is not None else 0)
    macs = count_macs(model, images)["total"] / images.shape[0]
    guide_macs = count_macs(guide, images)["total"] / images.shape[0] if guide is not None else 0.0
    x = images[:1]
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return {"params_m": params / 1e6, "gmacs": macs / 1e9, "guide_gmacs": guide_macs / 1e9,
            "latency_ms": 1e3 * statistics.median(times)}


def run_one(label: str, name: str, overrides: dict, args, guide_ckpt: Path | None) -> dict:
    out = Path(args.out) / slug(label)
    report_path = out / "report.json"
    if not report_path.is_file():
        cfg = load_pipeline(args.pipeline)
        model = {k: (str(guide_ckpt) if v == "{guide}" else v) for k, v in overrides.items()}
        cfg["model"] = {"name": name, **model}
        cfg["name"] = slug(label)
        if args.epochs:
            cfg["train"]["epochs"] = args.epochs
        if args.max_steps:
            cfg["train"]["max_steps_per_epoch"] = args.max_steps
        train(cfg, out, resume=(out / "last.pt").is_file(), progress=not args.quiet)
        evaluate_checkpoint(out / "last.pt", every=args.every, out_dir=out)  # the end of the budget: no selection on val
    report = json.loads(report_path.read_text())
    return {"label": label, "model": name, "overrides": overrides, "run": str(out),
            "jdr": report["jdr"]["overall"], "mpjpe_mm": report["mpjpe_mm"]["overall"],
            "pa_mpjpe_mm": report.get("pa_mpjpe_mm"), "checkpoint": str(out / "last.pt")}


def table(rows: list[dict], epochs: int) -> str:
    lines = [
        "| model | params (M) | GMACs / image | of which guide | CPU latency, batch 1 (ms) | JDR (%) | MPJPE (mm) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        guide = f"{r['guide_gmacs']:.3f}" if r["guide_gmacs"] else ""
        lines.append(f"| {r['label']} | {r['params_m']:.2f} | {r['gmacs']:.3f} | {guide} | {r['latency_ms']:.1f} | "
                     f"{100 * r['jdr']:.1f} | {r['mpjpe_mm']:.1f} |")
    return "\n".join(lines) + f"\n\n{epochs} epochs each, `demo_sv_ppt` recipe, 128x128 crops, 4 views per sample, " \
                             "per-view 2D + confidence-weighted DLT.\n"


def plot_tradeoff(rows: list[dict], path: Path) -> None:
    """JDR against MACs for the ViTransPose variants, without and with the guide's MACs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vit = [r for r in rows if r["label"].startswith("ViTransPose")]
    bfs = sorted((r for r in vit if "BFS" in r["label"]), key=lambda r: r["gmacs"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, with_guide in zip(axes, (False, True)):
        cost = (lambda r: r["gmacs"]) if with_guide else (lambda r: r["gmacs"] - r["guide_gmacs"])
        ax.plot([cost(r) for r in bfs], [100 * r["jdr"] for r in bfs], "o-", label="BFS, n neighbours")
        for r in bfs:
            ax.annotate(r["label"].split()[-1], (cost(r), 100 * r["jdr"]), textcoords="offset points", xytext=(4, 4))
        for r in vit:
            if "BFS" not in r["label"]:
                ax.plot(cost(r), 100 * r["jdr"], "s", label=r["label"].replace("ViTransPose ", ""))
        ax.set_xlabel("GMACs per image, " + ("ViT + Lite-HRNet guide" if with_guide else "ViT and decoder only"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("JDR (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("ViTransPose patch selection on the synthetic set: cost vs accuracy (same budget)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default="demo_sv_ppt", help="Shared recipe (data, optimiser, epochs).")
    ap.add_argument("--epochs", type=int, default=None, help="Override the recipe's epochs.")
    ap.add_argument("--out", default="runs/baselines")
    ap.add_argument("--only", default=None, help="Comma-separated labels (substring match) to run.")
    ap.add_argument("--every", type=int, default=2, help="Evaluate every N-th validation frame group.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=None, help="Steps per epoch (smoke runs only).")
    ap.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    models = [m for m in MODELS if not args.only or any(s in m[0] for s in args.only.split(","))]
    guide_ckpt = None
    if any(m[2].get("guide") for m in models):
        guide_label = next(m for m in MODELS if m[1] == GUIDE)
        run_one(*guide_label, args, None)
        guide_ckpt = out / slug(guide_label[0]) / "last.pt"

    cfg = load_pipeline(args.pipeline)
    val = build_datasets(cfg, splits=("val",), token_grid=(16, 16), target_type="heatmap")["val"]
    batch = collate([val[i] for i in range(2)])
    rows = []
    for label, name, overrides in models:
        row = run_one(label, name, overrides, args, guide_ckpt)
        row.update(measure(Path(row["checkpoint"]), batch, args.repeats))
        rows.append(row)
        print(f"{label:<28} {row['params_m']:6.2f} M {row['gmacs']:7.3f} GMACs {row['latency_ms']:7.1f} ms "
              f"JDR {100 * row['jdr']:5.1f} % MPJPE {row['mpjpe_mm']:6.1f} mm", flush=True)
    epochs = args.epochs or cfg["train"]["epochs"]
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out / "results.md", table(rows, epochs))
    if any("BFS" in r["label"] for r in rows):
        plot_tradeoff(rows, out / "tradeoff.png")
    print(f"results: {out / 'results.md'} {out / 'results.json'}")


if __name__ == "__main__":
    main()
