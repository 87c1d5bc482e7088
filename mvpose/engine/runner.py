"""High-level jobs behind the CLI: evaluate a checkpoint, draw kept tokens, run the demo story."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mvpose.engine.checkpoint import load_checkpoint
from mvpose.engine.evaluate import (breakdown_of, build_report, evaluate_coco, forward_views, joint_names_for, output_kind,
                                     predict, write_report)

log = logging.getLogger(__name__)


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu",
               trust: bool | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint (its own config) and load the weights (see :func:`mvpose.load_model`). The file is read
    without running code from it unless ``trust`` (see :func:`mvpose.engine.checkpoint.load_checkpoint`)."""
    from mvpose.engine.train import build_model_from_config

    ckpt = load_checkpoint(checkpoint, map_location=device, trust=trust)
    cfg = ckpt["config"]
    model = build_model_from_config(cfg, load_pretrained=False)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ValueError(f"{checkpoint}: the weights do not fit the model of its config ({err})") from err
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

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_model(checkpoint, dev, trust=trust)
    cfg = copy.deepcopy(cfg)
    if model_name and cfg["model"]["name"] != model_name:
        raise ValueError(f"{checkpoint}: holds model {cfg['model']['name']!r}, not {model_name!r}")
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
    ds = build_datasets(cfg, splits=(split,), token_grid=model.token_grid, target_type=output_kind(model))[split]
    loader = DataLoader(ds, batch_size=int(cfg["eval"]["batch_size"]), shuffle=False, num_workers=0, collate_fn=collate)
    if flip_test is None:
        flip_test = bool(cfg["eval"].get("flip_test", False))
    pred = predict(model, loader, dev, decode=cfg["eval"]["decode"], min_confidence=cfg["eval"].get("min_confidence", 0.0),
                   flip_index=ds.skeleton.flip_index if flip_test else None, progress=progress)
    names = joint_names_for(cfg["dataset"]["name"], pred["pred2d"].shape[2])
    report = build_report(pred, names, cfg["eval"]["jdr_head_size"], cfg["eval"]["jdr_factor"], breakdown=breakdown_of(ds))
    report.update(model=cfg["model"]["name"], label=cfg.get("name", cfg["model"]["name"]), dataset=cfg["dataset"]["name"],
                  checkpoint=str(checkpoint), split=split, flip_test=bool(flip_test),
                  rays=cfg["dataset"].get("rays", "exact"))
    out_dir = Path(out_dir or Path(checkpoint).parent)
    coco_gt = ds.coco
    if coco_gt is not None:
        results_path = out_dir / f"{name}_coco_results.json"
        report["coco"] = evaluate_coco(pred, coco_gt, results_path)
        report["coco_results"] = str(results_path)
    paths = write_report(report, out_dir, stem=name)
    return report, paths


@torch.no_grad()
def plot_kept_tokens(checkpoint: str | Path, out: str | Path, data_root: str | None = None, samples: int = 2) -> Path:
    """Draw the tokens each view keeps after the last pruning, over the input crops."""
    from mvpose.data import collate
    from mvpose.engine.train import build_datasets
    from mvpose.viz.plots import draw_tokens, plot_token_grid

    model, cfg = load_model(checkpoint)
    if data_root:
        cfg["dataset"]["root"] = data_root
    ds = build_datasets(cfg, splits=("val",), token_grid=model.token_grid)["val"]
    batch = collate([ds[i] for i in range(min(samples, len(ds)))])
    out_model = forward_views(model, batch, torch.device("cpu"))
    kept = out_model.get("kept_indices")
    if kept is None:
        raise ValueError(f"{checkpoint}: model {cfg['model']['name']!r} does not prune tokens")
    grid = tuple(out_model.get("token_grid", cfg["dataset"]["token_grid"]))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    images, titles = [], []
    B, V = batch["image"].shape[:2]
    for b in range(B):
        for v in range(V):
            img = ((batch["image"][b, v] * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
            images.append(draw_tokens(img, kept[b, v].cpu().numpy(), grid, batch["joints_2d_crop"][b, v].numpy()))
            titles.append(f"sample {b} view {v}: {kept.shape[-1]} of {grid[0] * grid[1]} tokens kept (dots: GT)")
    return plot_token_grid(images, titles, out, cols=V)


def run_demo(out: str | Path, epochs: int | None = None, device: str | None = None) -> dict[str, Path]:
    """Generate data if missing, train single-view and multi-view PPT, evaluate, plot."""
    from mvpose.engine.config import load_pipeline
    from mvpose.engine.train import train
    from mvpose.viz.plots import plot_mpjpe_per_action

    out = Path(out)
    paths: dict[str, Path] = {}
    reports = []
    for pipeline, label in (("demo_sv_ppt", "single-view PPT + DLT"), ("demo_mv_ppt", "multi-view PPT + 3D PE")):
        cfg = load_pipeline(pipeline)
        if epochs is not None:
            cfg["train"]["epochs"] = epochs
        run_dir = out / pipeline
        summary = train(cfg, run_dir, device=device)
        report, (jpath, _) = evaluate_checkpoint(summary["checkpoint"], out_dir=run_dir, device=device)
        report["label"] = label
        reports.append(report)
        paths[f"{pipeline} report"] = jpath
        paths[f"{pipeline} checkpoint"] = Path(summary["checkpoint"])
        log.warning("%s: JDR %.3f MPJPE %.1f mm", label, report["jdr"]["overall"], report["mpjpe_mm"]["overall"])
    paths["per-action MPJPE plot"] = plot_mpjpe_per_action(reports, [r["label"] for r in reports], out / "per_action_mpjpe.png",
                                                           title="Synthetic Human3.6M-format set: MPJPE per action")
    try:
        paths["kept tokens plot"] = plot_kept_tokens(paths["demo_mv_ppt checkpoint"], out / "tokens.png")
    except ValueError as err:
        log.warning("no token plot: %s", err)
    return paths
