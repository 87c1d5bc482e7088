#!/usr/bin/env python
"""Does multi-view fusion beat single view? The synthetic comparison of issue #4, in one command.

Protocol (the paper's, scaled to a CPU): one tiny single-view PPT is pretrained on every training
image (``mvpose/pipelines/demo_pretrain_ppt.yaml``; the paper starts from a COCO-pretrained PPT). From
that same checkpoint, with the same fine-tuning budget (epochs, optimiser, data, augmentation):

* single-view PPT, each view alone, then confidence-weighted DLT (``demo_sv_ppt``);
* multi-view PPT without 3D positional encodings (``demo_mv_ppt_no3dpe``);
* multi-view PPT with 3D positional encodings (``demo_mv_ppt``).

Every model is evaluated on all validation frames (subjects 9 and 11) at keep ratio 0.7 and, to
measure what pruning costs in accuracy, again at r = 1 (all tokens) with the same weights.
Two reference rows come first: the crop prior (``demo_crop_prior``: heatmaps that ignore the
image, i.e. what the person-centred crop alone gives) and the pretrained checkpoint itself.
"JDR limbs" leaves out the joints the crop gives away (root, belly, neck, nose, head). The
multi-view models are evaluated a third time with ``fuse_views=False`` ("fusion off"): the same
weights, the fusion layers attending within each view only, which isolates what cross-view
attention adds to the very same network.

Outputs (``--out``, default runs/fusion): run folders, ``results.json``, ``results.md`` and
``per_action_mpjpe.png``. Finished runs are reused, so an interrupted comparison resumes.

Example:
  mvpose train --pipeline demo_pretrain_ppt --out runs/pretrain      # ~15 min on 2 cores
  python scripts/compare_fusion.py --pretrained runs/pretrain/last.pt --epochs 10
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mvpose.engine.checkpoint import atomic_save, atomic_write_text, load_checkpoint
from mvpose.engine.config import apply_overrides, load_pipeline
from mvpose.engine.runner import evaluate_checkpoint
from mvpose.engine.train import train
from mvpose.viz.plots import plot_mpjpe_per_action

RUNS = [
    ("single-view PPT + DLT", "demo_sv_ppt"),
    ("multi-view PPT, no 3D PE", "demo_mv_ppt_no3dpe"),
    ("multi-view PPT + 3D PE", "demo_mv_ppt"),
]


def finetune_overrides(pretrained: str, epochs: int, lr: float) -> list[str]:
    """The fine-tuning recipe shared by every run (data and augmentation as in the pretraining)."""
    return [
        f"model.pretrained={pretrained}",
        "dataset.sigma=2.0",
        "dataset.augment_config={half_body_prob: 0.0, rotation_factor: 15.0, scale_factor: 0.2}",
        f"train.epochs={epochs}",
        f"train.lr={lr}",
        f"train.lr_steps=[{max(epochs - 2, 1)}, {max(epochs - 1, 1)}]",
        "train.lr_factor=0.3",
        # The pretrained HTI already finds the person: prune at r from the first step, as the
        # paper's multi-view fine-tuning does.
        "train.keep_ratio_warmup_epochs=0",
        "train.keep_ratio_decay_epochs=0",
    ]


# The joints a person-centred crop does not give away (the crop prior finds root, belly, neck and
# head; see mvpose.models.prior): JDR over these shows what a model learned from the image.
LIMBS = ("lhip", "rhip", "lkne", "rkne", "lank", "rank", "lsho", "rsho", "lelb", "relb", "lwri", "rwri")


def limb_jdr(report: dict) -> float:
    """Mean JDR over :data:`LIMBS` (every joint is counted in every sample, so the mean is the rate)."""
    per_joint = report["jdr"]["per_joint"]
    return sum(per_joint[j] for j in LIMBS) / len(LIMBS)


def with_model_config(checkpoint: Path, suffix: str, **changes) -> Path:
    """A copy of ``checkpoint`` whose model config has ``changes`` (same weights), e.g. another keep ratio."""
    ckpt = load_checkpoint(checkpoint)
    ckpt["config"]["model"].update(changes)
    out = checkpoint.with_name(f"{checkpoint.stem}_{suffix}.pt")
    atomic_save(ckpt, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", required=True, help="Single-view PPT checkpoint (demo_pretrain_ppt).")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0, help="Fine-tuning seed (data order, augmentation, new weights).")
    ap.add_argument("--every", type=int, default=1, help="Evaluate every N-th validation frame group.")
    ap.add_argument("--out", default="runs/fusion")
    ap.add_argument("--max-steps", type=int, default=None, help="Steps per epoch (smoke runs only).")
    ap.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = ap.parse_args()
    if not Path(args.pretrained).is_file():
        ap.error(f"--pretrained {args.pretrained}: no such checkpoint (train it first, see the example above)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    overrides = finetune_overrides(args.pretrained, args.epochs, args.lr)
    overrides.append(f"seed={args.seed}")
    if args.max_steps:
        overrides.append(f"train.max_steps_per_epoch={args.max_steps}")

    rows, reports = [], []

    def record(label: str, pipeline: str, run: Path, keep_ratios: bool = True) -> None:
        ckpt = run / "last.pt"  # the end of the budget: no model selection on the validation set
        if not (run / "report.json").is_file():
            evaluate_checkpoint(ckpt, every=args.every, out_dir=run, progress=not args.quiet)
        rep = json.loads((run / "report.json").read_text())
        rep1 = solo = None
        if keep_ratios:
            if not (run / "report_r1.json").is_file():
                evaluate_checkpoint(with_model_config(ckpt, "r1", keep_ratio=1.0), every=args.every, out_dir=run,
                                    name="report_r1", progress=not args.quiet)
            rep1 = json.loads((run / "report_r1.json").read_text())
        if pipeline.startswith("demo_mv"):
            # Ablation: the same weights with the fusion layers attending within each view only.
            if not (run / "report_nofusion.json").is_file():
                evaluate_checkpoint(with_model_config(ckpt, "nofusion", fuse_views=False), every=args.every, out_dir=run,
                                    name="report_nofusion", progress=not args.quiet)
            solo = json.loads((run / "report_nofusion.json").read_text())
        rep["label"] = label
        reports.append(rep)
        rows.append({
            "label": label, "pipeline": pipeline, "run": str(run),
            "jdr": rep["jdr"]["overall"], "jdr_limbs": limb_jdr(rep), "jdr_hidden": rep["jdr"].get("hidden"),
            "mpjpe_mm": rep["mpjpe_mm"]["overall"], "pa_mpjpe_mm": rep.get("pa_mpjpe_mm"),
            "jdr_r1": rep1["jdr"]["overall"] if rep1 else None, "mpjpe_mm_r1": rep1["mpjpe_mm"]["overall"] if rep1 else None,
            "jdr_nofusion": solo["jdr"]["overall"] if solo else None,
            "mpjpe_mm_nofusion": solo["mpjpe_mm"]["overall"] if solo else None,
        })
        r = rows[-1]
        print(f"{label:<32} JDR {100 * r['jdr']:5.1f} % (limbs {100 * r['jdr_limbs']:5.1f} %) MPJPE {r['mpjpe_mm']:6.1f} mm", flush=True)

    # References: what the crop alone gives, and the common starting point of the three runs.
    prior = out / "crop_prior"
    if not (prior / "report.json").is_file():
        cfg = apply_overrides(load_pipeline("demo_crop_prior"), [f"seed={args.seed}"])
        train(cfg, prior, resume=(prior / "last.pt").is_file(), progress=not args.quiet)
    record("crop prior (ignores the image)", "demo_crop_prior", prior, keep_ratios=False)
    start = out / "pretrained"
    if not (start / "last.pt").is_file():
        start.mkdir(parents=True, exist_ok=True)
        atomic_save(load_checkpoint(args.pretrained), start / "last.pt")
    record("pretrained PPT, not fine-tuned", "demo_pretrain_ppt", start)

    for label, pipeline in RUNS:
        run = out / pipeline
        if not (run / "report.json").is_file():
            cfg = apply_overrides(load_pipeline(pipeline), overrides)
            train(cfg, run, resume=(run / "last.pt").is_file(), progress=not args.quiet)
        record(label, pipeline, run)

    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    mm = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    lines = ["| method | JDR (%) | JDR limbs (%) | JDR hidden joints (%) | MPJPE (mm) | PA-MPJPE (mm) | JDR at r=1 (%) | "
             "MPJPE at r=1 (mm) | JDR, fusion off (%) | MPJPE, fusion off (mm) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {pct(r['jdr'])} | {pct(r['jdr_limbs'])} | {pct(r['jdr_hidden'])} | {mm(r['mpjpe_mm'])} | "
                     f"{mm(r['pa_mpjpe_mm'])} | {pct(r['jdr_r1'])} | {mm(r['mpjpe_mm_r1'])} | "
                     f"{pct(r['jdr_nofusion'])} | {mm(r['mpjpe_mm_nofusion'])} |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    plot_mpjpe_per_action(reports[1:], [r["label"] for r in reports[1:]], out / "per_action_mpjpe.png",
                          title="Synthetic Human3.6M-format set, same pretrained PPT and budget")
    print(f"results: {out / 'results.md'}")


if __name__ == "__main__":
    main()
