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

Every run is also evaluated on the occlusion validation split (``mvpose synth --occlusion``: the
same validation sequences with objects hiding limbs in 1-2 of the 4 views; ``--occlusion-root``,
default ``data/synth_h36m_occl``, generated on first use): JDR on the joints hidden in their view,
on the visible ones, and MPJPE. ``--seeds 0,1,2`` repeats the fine-tuning with each seed (``OUT/seed_N``)
and writes ``OUT/summary.json``: per method the mean and the spread (max - min) over the seeds, and
whether multi-view + 3D PE beats single view by more than the larger spread on occlusion-split
hidden-joint JDR and MPJPE. Levers: ``--epochs`` (fine-tuning length), ``--set`` (all fine-tuning
runs, e.g. ``model.keep_ratio=0.9``), ``--mv-set`` (multi-view runs only, e.g. ``model.depth=5
model.fusion_layers=2`` for a second, new fusion layer, or ``train.per_view_lr_factor=0.1``).

Outputs (``--out``, default runs/fusion): run folders, ``results.json``, ``results.md`` and
``per_action_mpjpe.png``. Finished runs are reused, so an interrupted comparison resumes.

Example:
  mvpose train --pipeline demo_pretrain_ppt --out runs/pretrain      # ~15 min on 2 cores
  python scripts/compare_fusion.py --pretrained runs/pretrain/last.pt --epochs 10
  python scripts/compare_fusion.py --pretrained mvpose/weights/ppt_tiny_synth.pt --epochs 5 --runs sv,mv \\
      --seeds 0,1,2 --mv-set train.per_view_lr_factor=0.1 --out runs/fusion_pvlr
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mvpose.engine.checkpoint import atomic_save, atomic_write_text, load_checkpoint
from mvpose.engine.config import apply_overrides, load_pipeline
from mvpose.data.demo import ensure_demo_data
from mvpose.engine.runner import evaluate_checkpoint, finetune_overrides
from mvpose.engine.train import train
from mvpose.viz.plots import plot_mpjpe_per_action

RUNS = {
    "sv": ("single-view PPT + DLT", "demo_sv_ppt"),
    "mv_no3dpe": ("multi-view PPT, no 3D PE", "demo_mv_ppt_no3dpe"),
    "mv": ("multi-view PPT + 3D PE", "demo_mv_ppt"),
}


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


def compare(args, seed: int, out: Path) -> list[dict]:
    """One seed of the comparison into ``out``; returns the result rows."""
    overrides = finetune_overrides(args.pretrained, args.epochs, args.lr) + [f"seed={seed}"] + list(args.set)
    if args.max_steps:
        overrides.append(f"train.max_steps_per_epoch={args.max_steps}")
    occl_root = args.occlusion_root or str(ensure_demo_data("h36m_occl"))
    if args.train_root:
        overrides.append(f"dataset.root={args.train_root}")
    # The standard split is always the demo set's validation subjects, whatever the runs trained on.
    std_root = str(ensure_demo_data("h36m"))
    rows, reports = [], []

    def evaluate_once(ckpt: Path, run: Path, name: str, **kw) -> dict:
        if not (run / f"{name}.json").is_file():
            evaluate_checkpoint(ckpt, every=args.every, out_dir=run, name=name, progress=not args.quiet, **kw)
        return json.loads((run / f"{name}.json").read_text())

    def record(label: str, pipeline: str, run: Path, ablations: bool = True) -> None:
        ckpt = run / "last.pt"  # the end of the budget: no model selection on the validation set
        rep = evaluate_once(ckpt, run, "report", data_root=std_root)
        occ = evaluate_once(ckpt, run, "report_occlusion", data_root=occl_root)
        rep1 = solo = None
        if ablations and not args.skip_ablations:
            rep1 = evaluate_once(with_model_config(ckpt, "r1", keep_ratio=1.0), run, "report_r1", data_root=std_root)
            if pipeline.startswith("demo_mv"):
                # The same weights with the fusion layers attending within each view only.
                solo = evaluate_once(with_model_config(ckpt, "nofusion", fuse_views=False), run, "report_nofusion",
                                     data_root=std_root)
        rep["label"] = label
        reports.append(rep)
        rows.append({
            "label": label, "pipeline": pipeline, "run": str(run), "seed": seed,
            "jdr": rep["jdr"]["overall"], "jdr_limbs": limb_jdr(rep), "jdr_hidden": rep["jdr"].get("hidden"),
            "jdr_visible": rep["jdr"].get("visible"), "mpjpe_mm": rep["mpjpe_mm"]["overall"], "pa_mpjpe_mm": rep.get("pa_mpjpe_mm"),
            "occlusion_jdr": occ["jdr"]["overall"], "occlusion_jdr_hidden": occ["jdr"]["hidden"],
            "occlusion_jdr_visible": occ["jdr"]["visible"], "occlusion_mpjpe_mm": occ["mpjpe_mm"]["overall"],
            "jdr_r1": rep1["jdr"]["overall"] if rep1 else None, "mpjpe_mm_r1": rep1["mpjpe_mm"]["overall"] if rep1 else None,
            "jdr_nofusion": solo["jdr"]["overall"] if solo else None,
            "mpjpe_mm_nofusion": solo["mpjpe_mm"]["overall"] if solo else None,
        })
        r = rows[-1]
        print(f"seed {seed} {label:<32} JDR {100 * r['jdr']:5.1f} % (limbs {100 * r['jdr_limbs']:5.1f} %) MPJPE "
              f"{r['mpjpe_mm']:6.1f} mm | occlusion: hidden {100 * (r['occlusion_jdr_hidden'] or 0):5.1f} % visible "
              f"{100 * r['occlusion_jdr_visible']:5.1f} % MPJPE {r['occlusion_mpjpe_mm']:6.1f} mm", flush=True)

    if not args.no_references:
        # References: what the crop alone gives, and the common starting point of the runs.
        prior = out / "crop_prior"
        if not (prior / "report.json").is_file():
            cfg = apply_overrides(load_pipeline("demo_crop_prior"), [f"seed={seed}"])
            train(cfg, prior, resume=(prior / "last.pt").is_file(), progress=not args.quiet)
        record("crop prior (ignores the image)", "demo_crop_prior", prior, ablations=False)
        start = out / "pretrained"
        if not (start / "last.pt").is_file():
            start.mkdir(parents=True, exist_ok=True)
            atomic_save(load_checkpoint(args.pretrained), start / "last.pt")
        record("pretrained PPT, not fine-tuned", "demo_pretrain_ppt", start)

    for key in args.runs.split(","):
        label, pipeline = RUNS[key]
        run = out / pipeline
        if not (run / "report.json").is_file():
            sets = overrides + (list(args.mv_set) if pipeline.startswith("demo_mv") else [])
            cfg = apply_overrides(load_pipeline(pipeline), sets)
            train(cfg, run, resume=(run / "last.pt").is_file(), progress=not args.quiet)
        record(label, pipeline, run)

    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    mm = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    lines = ["| method | JDR (%) | JDR limbs (%) | JDR hidden joints (%) | MPJPE (mm) | PA-MPJPE (mm) | occlusion: JDR hidden (%) | "
             "JDR visible (%) | MPJPE (mm) | JDR at r=1 (%) | MPJPE at r=1 (mm) | JDR, fusion off (%) | MPJPE, fusion off (mm) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {pct(r['jdr'])} | {pct(r['jdr_limbs'])} | {pct(r['jdr_hidden'])} | {mm(r['mpjpe_mm'])} | "
                     f"{mm(r['pa_mpjpe_mm'])} | {pct(r['occlusion_jdr_hidden'])} | {pct(r['occlusion_jdr_visible'])} | "
                     f"{mm(r['occlusion_mpjpe_mm'])} | {pct(r['jdr_r1'])} | {mm(r['mpjpe_mm_r1'])} | "
                     f"{pct(r['jdr_nofusion'])} | {mm(r['mpjpe_mm_nofusion'])} |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "results.json", json.dumps({"command": args.command, "seed": seed, "overrides": overrides,
                                                        "mv_overrides": list(args.mv_set), "rows": rows}, indent=2) + "\n")
    fine_tuned = [r for r in reports if r["label"] in {RUNS[k][0] for k in args.runs.split(",")}]
    plot_mpjpe_per_action(fine_tuned, [r["label"] for r in fine_tuned], out / "per_action_mpjpe.png",
                          title="Synthetic Human3.6M-format set, same pretrained PPT and budget")
    print(f"results: {out / 'results.md'}")
    return rows


SUMMARY_METRICS = ("occlusion_jdr_hidden", "occlusion_mpjpe_mm", "occlusion_jdr_visible", "jdr", "mpjpe_mm")


def summarize(rows: list[dict]) -> dict:
    """Per method: mean, min, max and spread (max - min) over seeds of :data:`SUMMARY_METRICS`; and the
    verdict: does multi-view + 3D PE beat single view by more than the larger of the two methods'
    spreads on occlusion-split hidden-joint JDR (higher is better) and MPJPE (lower is better)?"""
    methods: dict[str, dict] = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        stats = {}
        for m in SUMMARY_METRICS:
            vals = [r[m] for r in mine if r.get(m) is not None]
            if vals:
                stats[m] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "spread": max(vals) - min(vals),
                            "values": vals}
        methods[label] = {"seeds": [r["seed"] for r in mine], **stats}
    out: dict = {"methods": methods}
    sv, mv = methods.get(RUNS["sv"][0]), methods.get(RUNS["mv"][0])
    if sv and mv:
        verdict = {}
        for m, sign in (("occlusion_jdr_hidden", 1.0), ("occlusion_mpjpe_mm", -1.0)):
            gain = sign * (mv[m]["mean"] - sv[m]["mean"])
            spread = max(mv[m]["spread"], sv[m]["spread"])
            verdict[m] = {"gain_of_multiview": gain, "larger_spread": spread, "beats_by_more_than_spread": gain > spread}
        out["verdict"] = verdict
    return out


def main() -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", required=True, help="Single-view PPT checkpoint (demo_pretrain_ppt).")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0, help="Fine-tuning seed (data order, augmentation, new weights).")
    ap.add_argument("--seeds", default=None, help="Comma-separated seeds, each into OUT/seed_N, plus OUT/summary.json.")
    ap.add_argument("--runs", default="sv,mv_no3dpe,mv", help=f"Methods to fine-tune, of {','.join(RUNS)}.")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override for every fine-tuning run.")
    ap.add_argument("--mv-set", action="append", default=[], metavar="KEY=VALUE", help="Override for the multi-view runs only.")
    ap.add_argument("--occlusion-root", default=None, help="Occlusion validation split (default: data/synth_h36m_occl).")
    ap.add_argument("--train-root", default=None,
                    help="Fine-tuning data of every method (default: the demo set), e.g. an occlusion training set: "
                         "data/synth_h36m_occl (the demo occlusion set: its training subjects)")
    ap.add_argument("--no-references", action="store_true", help="Skip the crop prior and pretrained reference rows.")
    ap.add_argument("--skip-ablations", action="store_true", help="Skip the r = 1 and fusion-off evaluations.")
    ap.add_argument("--every", type=int, default=1, help="Evaluate every N-th validation frame group.")
    ap.add_argument("--out", default="runs/fusion")
    ap.add_argument("--max-steps", type=int, default=None, help="Steps per epoch (smoke runs only).")
    ap.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = ap.parse_args()
    args.command = "python scripts/compare_fusion.py " + " ".join(sys.argv[1:])
    if not Path(args.pretrained).is_file():
        ap.error(f"--pretrained {args.pretrained}: no such checkpoint (train it first, see the example above)")
    unknown = [k for k in args.runs.split(",") if k not in RUNS]
    if unknown:
        ap.error(f"--runs: unknown {unknown}; choose from {list(RUNS)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    if args.seeds is None:
        compare(args, args.seed, out)
        return
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows += compare(args, seed, out / f"seed_{seed}")
    summary = {"command": args.command, **summarize(rows)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary.get("verdict", {}), indent=1))


if __name__ == "__main__":
    main()
