"""High-level jobs behind the CLI: evaluate a checkpoint, draw kept tokens, run the demo story."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mvpose.engine.checkpoint import atomic_write_text, load_checkpoint, load_weights
from mvpose.engine.evaluate import (breakdown_of, build_report, dataset_joint_names, evaluate_coco, forward_views,
                                     joint_names_for, joint_set_issue, output_kind, predict, write_report)

log = logging.getLogger(__name__)


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu",
               trust: bool | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint (its own config) and load the weights (see :func:`mvpose.load_model`). The file is read
    without running code from it unless ``trust`` (see :func:`mvpose.engine.checkpoint.load_checkpoint`)."""
    from mvpose.engine.train import build_model_from_config

    ckpt = load_checkpoint(checkpoint, map_location=device, trust=trust)
    cfg = ckpt["config"]
    model = build_model_from_config(cfg, load_pretrained=False)
    load_weights(model, ckpt["model"], f"{checkpoint} (model {cfg['model'].get('name')!r} of its config)")
    return model.to(device).eval(), cfg


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str | None = None,
    views: int | None = None,
    data_root: str | None = None,
    split: str = "val",
    every: int | None = None,
    out_dir: str | Path | None = None,
    name: str = "report",
    model_name: str | None = None,
    device: str | None = None,
    flip_test: bool | None = None,
    progress: bool = True,
    rays: str | None = None,
    trust: bool | None = None,
) -> tuple[dict[str, Any], tuple[Path, Path]]:
    """Evaluate a checkpoint; writes ``name.json`` / ``name.csv`` and returns the report and paths.

    On COCO data the report also holds ``coco``: keypoint AP / AR from pycocotools
    (``AP``, ``AP50``, ``AP75``, ``APm``, ``APl``, ``AR``, ...) of the results written to
    ``name_coco_results.json``; data without 3D ground truth has no MPJPE (null, see ``note``).
    ``flip_test`` (default: the config's ``eval.flip_test``, off) averages in the flipped crops;
    ``progress`` shows a progress bar; ``rays`` ("exact" / "official", default the checkpoint's
    ``dataset.rays``) chooses the 3D PE ray formula (:mod:`mvpose.data.rays`); ``trust=True``
    (``--trust-checkpoint``) loads a checkpoint that asks for more than tensors and plain values in
    full, running any code it holds.
    """
    from mvpose.data import collate
    from mvpose.engine.train import build_datasets

    from mvpose.engine.distributed import check_device

    dev = check_device(device)
    model, cfg = load_model(checkpoint, dev, trust=trust)
    cfg = copy.deepcopy(cfg)
    if model_name and cfg["model"]["name"] != model_name:
        raise ValueError(f"{checkpoint}: holds model {cfg['model']['name']!r}, not {model_name!r}")
    trained_on = cfg["dataset"]["name"]
    if dataset is not None:
        if dataset != cfg["dataset"]["name"]:
            cfg["dataset"]["root"] = None
        cfg["dataset"]["name"] = dataset
    if views is not None:
        cfg["dataset"]["views"] = views
    if data_root is not None:
        cfg["dataset"]["root"] = data_root
    if every is not None:
        cfg["dataset"]["eval_every"] = every
    if rays is not None:
        cfg["dataset"]["rays"] = rays
    expected = dataset_joint_names(cfg["dataset"]["name"])
    early = joint_set_issue(trained_on, cfg["dataset"]["name"], expected) if expected is not None else None
    if early:  # said before the (possibly long) evaluation, not only after its numbers
        log.warning("%s: %s", checkpoint, early)
    stored = cfg["dataset"].get("root")
    if data_root is None and stored and not Path(stored).is_dir():
        where = " (a path relative to the folder it was trained from)" if not Path(stored).is_absolute() else ""
        raise FileNotFoundError(f"{checkpoint}: its data root {stored}{where} is not found from {Path.cwd()}; "
                                "give the dataset with --data-root")
    ds = build_datasets(cfg, splits=(split,), token_grid=model.token_grid, target_type=output_kind(model))[split]
    loader = DataLoader(ds, batch_size=int(cfg["eval"]["batch_size"]), shuffle=False, num_workers=0, collate_fn=collate)
    if flip_test is None:
        flip_test = bool(cfg["eval"].get("flip_test", False))
    pred = predict(model, loader, dev, decode=cfg["eval"]["decode"], min_confidence=cfg["eval"].get("min_confidence", 0.0),
                   flip_index=ds.skeleton.flip_index if flip_test else None, progress=progress)
    names = joint_names_for(cfg["dataset"]["name"], pred["pred2d"].shape[2])
    report = build_report(pred, names, cfg["eval"]["jdr_head_size"], cfg["eval"]["jdr_factor"], breakdown=breakdown_of(ds))
    issue = joint_set_issue(trained_on, cfg["dataset"]["name"], list(ds.skeleton.joints))
    if issue:
        if issue != early:
            log.warning("%s: %s", checkpoint, issue)
        report.setdefault("issues", []).append(issue)
    report.update(model=cfg["model"]["name"], label=cfg.get("name", cfg["model"]["name"]), dataset=cfg["dataset"]["name"],
                  checkpoint=str(checkpoint), split=split, flip_test=bool(flip_test),
                  rays=cfg["dataset"].get("rays", "exact"), keep_ratio=getattr(model, "scheduled_keep_ratio", None))
    out_dir = Path(out_dir or Path(checkpoint).parent)
    coco_gt = ds.coco
    if coco_gt is not None:
        results_path = out_dir / f"{name}_coco_results.json"
        report["coco"] = evaluate_coco(pred, coco_gt, results_path)
        report["coco_results"] = str(results_path)
    paths = write_report(report, out_dir, stem=name)
    return report, paths


MEAN_RGB = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD_RGB = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def crop_rgb(image: torch.Tensor) -> "np.ndarray":
    """(3, H, W) normalised network input -> (H, W, 3) uint8 RGB picture."""
    return ((image.cpu() * STD_RGB + MEAN_RGB).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()


@torch.no_grad()
def sample_outputs(model: torch.nn.Module, batch: dict[str, Any], decode: str = "udp") -> dict[str, torch.Tensor]:
    """A model's 2D and 3D estimate of a batch, for pictures.

    Returns:
        ``crop_xy`` (B, V, J, 2) crop pixels, ``conf`` (B, V, J), ``kept`` (B, V, K) kept token indices
        or None, ``grid`` (h, w) or None, ``points3d`` (B, J, 3) world mm (confidence-weighted DLT of
        the views, as :func:`mvpose.engine.evaluate.predict` does), or None for data without 3D (COCO).
    """
    from mvpose.data.dataset import sample_cameras
    from mvpose.engine.distributed import unwrap
    from mvpose.geometry.triangulation import triangulate

    model.eval()
    out = forward_views(model, batch, torch.device("cpu"))
    crop_xy, conf = unwrap(model).predict(out, tuple(batch["image"].shape[-2:]), decode)
    points3d = None
    if "has_3d" in batch and bool(batch["has_3d"].all()):
        points3d = triangulate(crop_xy.double(), sample_cameras(batch).to(dtype=torch.float64), conf.clamp_min(0).double()).points3d
    grid = out.get("token_grid", getattr(model, "token_grid", None))
    return {"crop_xy": crop_xy, "conf": conf, "kept": out.get("kept_indices"), "grid": None if grid is None else tuple(grid),
            "points3d": points3d}


@torch.no_grad()
def plot_kept_tokens(checkpoint: str | Path, out: str | Path, data_root: str | None = None, samples: int = 2) -> Path:
    """Draw the tokens each view keeps after the last pruning over the input crops, with the predicted
    pose (coloured) and the true pose (white dashed; red x: hidden in that view)."""
    from mvpose.data import collate
    from mvpose.engine.train import build_datasets
    from mvpose.skeletons import get_skeleton
    from mvpose.viz.plots import plot_pose_panels

    model, cfg = load_model(checkpoint)
    if data_root:
        cfg["dataset"]["root"] = data_root
    ds = build_datasets(cfg, splits=("val",), token_grid=model.token_grid)["val"]
    batch = collate([ds[i] for i in range(min(samples, len(ds)))])
    res = sample_outputs(model, batch, cfg["eval"]["decode"])
    if res["kept"] is None:
        raise ValueError(f"{checkpoint}: model {cfg['model']['name']!r} does not prune tokens")
    grid = res["grid"] or tuple(cfg["dataset"]["token_grid"])
    skeleton = getattr(ds, "skeleton", None) or get_skeleton("h36m")
    B, V = batch["image"].shape[:2]
    panels = []
    for b in range(B):
        for v in range(V):
            panels.append({
                "image": crop_rgb(batch["image"][b, v]), "kept": res["kept"][b, v].cpu().numpy(), "grid": grid,
                "truth": batch["joints_2d_crop"][b, v].numpy(), "pred": res["crop_xy"][b, v].numpy(),
                "hidden": batch["joints_vis"][b, v].numpy() < 0.5,
                "title": f"sample {b + 1}, view {v + 1}: {res['kept'].shape[-1]} of {grid[0] * grid[1]} tokens kept",
            })
    return plot_pose_panels(panels, out, cols=V, limbs=skeleton.limbs, names=skeleton.joints,
                            suptitle=f"{cfg.get('name', cfg['model']['name'])}: kept tokens and 2D poses")


#: Shipped weights the demo fine-tunes from (``mvpose/weights/``, model card beside them).
DEMO_PRETRAINED = "ppt_tiny_synth"
#: Fine-tuning budget of each demo method (epochs of 75 steps, batch 8 four-view samples).
DEMO_FINETUNE_EPOCHS = 4
DEMO_FINETUNE_LR = 5e-4
DEMO_METHODS = (("demo_sv_ppt", "single-view PPT + DLT"), ("demo_mv_ppt", "multi-view PPT + 3D PE"))
#: The demo set both methods fine-tune on: the occlusion set (1-2 of 4 views occluded in every
#: frame), where the other views carry what one camera cannot see (README, "The demo").
DEMO_TRAIN_SET = "h36m_occl"
#: Overrides of the multi-view run only: the 4 pretrained layers run per view and one fusion layer
#: is added on top, zero-initialised (:class:`mvpose.models.multiview.MultiViewPPT`
#: ``zero_init_fusion``), so the multi-view model starts at the pretrained single-view predictions;
#: with the paper's split (the last pretrained layer fusing the views) the short fine-tuning ended
#: 2.9 points of hidden-joint JDR and 10 mm below single view (README, "Fusion vs single view").
DEMO_MV_OVERRIDES = ("model.depth=5", "model.fusion_layers=1", "model.zero_init_fusion=true")


def finetune_overrides(pretrained: str | Path, epochs: int, lr: float) -> list[str]:
    """``--set`` overrides of the fine-tuning recipe shared by every method started from ``pretrained``
    (data and augmentation as in the pretraining, Adam ``lr`` decayed x0.3 at the last two epochs,
    keep ratio 0.7 from the first step: the pretrained HTI already finds the person, as in the
    paper's multi-view fine-tuning)."""
    return [
        f"model.pretrained={pretrained}",
        "dataset.sigma=2.0",
        "dataset.augment_config={half_body_prob: 0.0, rotation_factor: 15.0, scale_factor: 0.2}",
        f"train.epochs={epochs}",
        f"train.lr={lr}",
        f"train.lr_steps=[{max(epochs - 2, 1)}, {max(epochs - 1, 1)}]",
        "train.lr_factor=0.3",
        "train.keep_ratio_warmup_epochs=0",
        "train.keep_ratio_decay_epochs=0",
    ]


def _row(label: str, rep: dict[str, Any], rep_occl: dict[str, Any]) -> dict[str, Any]:
    return {"label": label, "jdr": rep["jdr"]["overall"], "jdr_visible": rep["jdr"]["visible"], "jdr_hidden": rep["jdr"]["hidden"],
            "mpjpe_mm": rep["mpjpe_mm"]["overall"], "occlusion_jdr": rep_occl["jdr"]["overall"],
            "occlusion_jdr_visible": rep_occl["jdr"]["visible"], "occlusion_jdr_hidden": rep_occl["jdr"]["hidden"],
            "occlusion_mpjpe_mm": rep_occl["mpjpe_mm"]["overall"]}


def results_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`run_demo` rows: JDR overall / on visible / on hidden joints and MPJPE, both splits."""
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    lines = ["| method | JDR % | visible % | hidden % | MPJPE mm | occlusion: JDR % | visible % | hidden % | MPJPE mm |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {pct(r['jdr'])} | {pct(r['jdr_visible'])} | {pct(r['jdr_hidden'])} | {r['mpjpe_mm']:.1f} | "
                     f"{pct(r['occlusion_jdr'])} | {pct(r['occlusion_jdr_visible'])} | {pct(r['occlusion_jdr_hidden'])} | "
                     f"{r['occlusion_mpjpe_mm']:.1f} |")
    return "\n".join(lines) + "\n"


def pick_occluded_sample(dataset) -> int:
    """Index of the sample with the most joints hidden over its views (first on ties): chosen from the
    ground truth alone, never from any method's result."""
    hidden = [int((dataset[i]["joints_vis"] < 0.5).sum()) for i in range(len(dataset))]
    return int(np.argmax(hidden))


def plot_demo_sample(checkpoints: dict[str, Path], data_root: str | Path, out_dir: Path) -> dict[str, Path]:
    """``views.png`` (kept tokens, predicted and true 2D pose per view, one row per method) and
    ``skeleton3d.png`` (the triangulated skeletons beside the truth) of one occlusion-split sample."""
    from mvpose.data import collate
    from mvpose.engine.train import build_datasets
    from mvpose.skeletons import get_skeleton
    from mvpose.viz.plots import plot_pose_panels, plot_skeletons_3d

    models = {label: load_model(ckpt) for label, ckpt in checkpoints.items()}
    cfg = copy.deepcopy(next(iter(models.values()))[1])
    cfg["dataset"]["root"] = str(data_root)
    ds = build_datasets(cfg, splits=("val",), token_grid=getattr(next(iter(models.values()))[0], "token_grid", None))["val"]
    idx = pick_occluded_sample(ds)
    batch = collate([ds[idx]])
    skeleton = get_skeleton("h36m")
    hidden = batch["joints_vis"][0].numpy() < 0.5
    panels, preds3d = [], {}
    V = batch["image"].shape[1]
    for label, (model, mcfg) in models.items():
        res = sample_outputs(model, batch, mcfg["eval"]["decode"])
        preds3d[label] = res["points3d"][0].numpy()
        for v in range(V):
            err = (res["crop_xy"][0, v] - batch["joints_2d_crop"][0, v]).norm(dim=-1).mean()
            kept = None if res["kept"] is None else res["kept"][0, v].cpu().numpy()
            panels.append({
                "image": crop_rgb(batch["image"][0, v]), "kept": kept, "grid": res["grid"],
                "truth": batch["joints_2d_crop"][0, v].numpy(), "pred": res["crop_xy"][0, v].numpy(), "hidden": hidden[v],
                "title": f"view {v + 1}: {int(hidden[v].sum())}/{hidden.shape[1]} joints hidden, "
                         + (f"{kept.shape[0]}/{res['grid'][0] * res['grid'][1]} tokens kept, " if kept is not None else "")
                         + f"error {err:.1f} px",
            })
    info = f"subject {batch['subject'][0]}, action {batch['action'][0]}, occlusion split sample {idx}"
    views = plot_pose_panels(panels, out_dir / "views.png", cols=V, limbs=skeleton.limbs, names=skeleton.joints,
                             row_labels=list(models), suptitle=info)
    sk = plot_skeletons_3d(batch["joints_3d"][0].numpy(), preds3d, skeleton.limbs, skeleton.joints, out_dir / "skeleton3d.png",
                           title=info)
    return {"views plot": views, "3D skeleton plot": sk}


def run_demo(out: str | Path, epochs: int | None = None, device: str | None = None, from_scratch: bool = False) -> dict[str, Path]:
    """The demo: fine-tune single-view and multi-view PPT from the shipped pretrained PPT, evaluate, plot.

    Generates the synthetic set (``data/synth_h36m``) and its occlusion twin (``data/synth_h36m_occl``:
    the same sequences with 1-2 of the 4 views occluded in every frame) if missing; fine-tunes
    ``demo_sv_ppt`` (single view, then DLT) and ``demo_mv_ppt`` (multi-view PPT + 3D PE: the pretrained
    layers per view, one new zero-initialised fusion layer: :data:`DEMO_MV_OVERRIDES`) from :data:`DEMO_PRETRAINED` on
    the occlusion set's training subjects (:data:`DEMO_TRAIN_SET`) with the same budget
    (:data:`DEMO_FINETUNE_EPOCHS` epochs, :func:`finetune_overrides`); evaluates the pretrained model
    and both methods at the end of the budget (``last.pt``, no model selection) on both splits (JDR
    overall, on visible and on hidden joints, MPJPE); writes ``results.md`` / ``results.json``,
    ``per_action_mpjpe.png``, ``views.png`` and ``skeleton3d.png``.

    Args:
        epochs: fine-tuning (or, ``from_scratch``, training) epochs per method.
        from_scratch: train both from random weights on the standard set with the pipelines' own
            recipe (6 epochs, keep-ratio warm-up) and evaluate their best validation checkpoint, as
            before the pretrained start existed.

    Returns:
        name -> path of everything written.

    Raises:
        mvpose.resources.WeightsChecksumError: the shipped weights are damaged (not with ``from_scratch``).
    """
    from mvpose.data.demo import ensure_demo_data
    from mvpose.engine.config import apply_overrides, load_pipeline
    from mvpose.engine.train import train
    from mvpose.resources import shipped_weights_path
    from mvpose.viz.plots import plot_mpjpe_per_action

    out = Path(out)
    root = ensure_demo_data("h36m")
    occl = ensure_demo_data("h36m_occl")
    paths: dict[str, Path] = {}
    rows, reports, checkpoints = [], [], {}
    overrides: list[str] = []
    if not from_scratch:
        pretrained = shipped_weights_path(DEMO_PRETRAINED)
        n = epochs or DEMO_FINETUNE_EPOCHS
        # Validated once, at the end (what is evaluated is last.pt anyway): minutes saved on 2 cores.
        overrides = finetune_overrides(pretrained, n, DEMO_FINETUNE_LR) + [f"train.val_every_epochs={n}"]
        ref = out / "pretrained"
        rep, _ = evaluate_checkpoint(pretrained, data_root=str(root), out_dir=ref, device=device, progress=False)
        rep_o, _ = evaluate_checkpoint(pretrained, data_root=str(occl), out_dir=ref, name="report_occlusion", device=device,
                                       progress=False)
        rows.append(_row(f"pretrained {DEMO_PRETRAINED} (start, not fine-tuned)", rep, rep_o))
    elif epochs is not None:
        overrides = [f"train.epochs={epochs}"]
    train_root = root if from_scratch else ensure_demo_data(DEMO_TRAIN_SET)
    for pipeline, label in DEMO_METHODS:
        sets = overrides + [f"dataset.root={train_root}"]
        if not from_scratch and pipeline.startswith("demo_mv"):
            sets += list(DEMO_MV_OVERRIDES)
        cfg = apply_overrides(load_pipeline(pipeline), sets)
        run_dir = out / pipeline
        summary = train(cfg, run_dir, device=device, overwrite=True)  # a demo run again starts afresh
        ckpt = Path(summary["checkpoint"]) if from_scratch else run_dir / "last.pt"
        report, (jpath, _) = evaluate_checkpoint(ckpt, data_root=str(root), out_dir=run_dir, device=device, progress=False)
        rep_o, (opath, _) = evaluate_checkpoint(ckpt, data_root=str(occl), out_dir=run_dir, name="report_occlusion",
                                                device=device, progress=False)
        report["label"] = label
        reports.append(report)
        rows.append(_row(label, report, rep_o))
        checkpoints[label] = ckpt
        paths[f"{pipeline} report"] = jpath
        paths[f"{pipeline} occlusion report"] = opath
        paths[f"{pipeline} checkpoint"] = ckpt
        log.warning("%s: JDR %.3f MPJPE %.1f mm; occlusion split: hidden-joint JDR %.3f MPJPE %.1f mm", label,
                    rows[-1]["jdr"], rows[-1]["mpjpe_mm"], rows[-1]["occlusion_jdr_hidden"] or float("nan"),
                    rows[-1]["occlusion_mpjpe_mm"])
    table = results_table(rows)
    atomic_write_text(out / "results.md", table)
    atomic_write_text(out / "results.json", json.dumps(
        {"from_scratch": from_scratch, "pretrained": None if from_scratch else DEMO_PRETRAINED, "overrides": overrides,
         "rows": rows}, indent=1) + "\n")
    paths["results table"] = out / "results.md"
    paths["per-action MPJPE plot"] = plot_mpjpe_per_action(reports, [r["label"] for r in reports], out / "per_action_mpjpe.png",
                                                           title="Synthetic Human3.6M-format set: MPJPE per action")
    paths.update(plot_demo_sample(checkpoints, occl, out))
    return paths
