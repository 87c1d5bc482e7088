"""The training loop shared by every model: Adam on the model's own loss, step LR, checkpoints.

The loop asks the model only for the contract of :class:`mvpose.models.base.PoseModel` (its loss,
its keep-ratio hook, ``multiview`` / ``output_kind`` / ``token_grid``) and runs in named steps:
:func:`_setup`, :func:`_resume`, :func:`_train_one_epoch`, :func:`_validate`, :func:`_end_epoch`.

Works the same on one CPU process, one GPU, or several processes under ``torchrun`` (DDP).
Determinism on CPU: data order comes from a ``DistributedSampler`` seeded by (seed, epoch), the
augmentation of a sample from (seed, epoch, index), and the RNG states are saved in checkpoints, so
``--resume`` continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from mvpose.engine.checkpoint import (REQUIRED_FIELDS, atomic_write_text, load_checkpoint, load_weights, restore_rng_state,
                                      rng_state, save_checkpoint)
from mvpose.engine.distributed import DistInfo, all_reduce_mean, cleanup_distributed, init_distributed, unwrap
from mvpose.engine.evaluate import breakdown_of, build_report, forward_views, joint_names_for, predict
from mvpose.engine.runtime import deterministic_algorithms, keep_freed_memory
from mvpose.models.base import PoseModel
from mvpose.safe_load import UntrustedFileError
from mvpose.parallel import worker_context

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def keep_ratio_at(epoch_float: float, tcfg: dict[str, Any], target: float) -> float:
    """The PPT keep ratio at a (fractional) epoch: 1 during ``keep_ratio_warmup_epochs``, then the
    paper's cosine decay to ``target`` over ``keep_ratio_decay_epochs`` (0: ``target`` from the start)."""
    from mvpose.models.ppt import keep_ratio_schedule

    decay = float(tcfg.get("keep_ratio_decay_epochs", 0) or 0)
    if decay <= 0:
        return float(target)
    return keep_ratio_schedule(epoch_float, decay, target, warmup=float(tcfg.get("keep_ratio_warmup_epochs", 0) or 0))


def build_datasets(cfg: dict[str, Any], splits=("train", "val"), token_grid=None, target_type: str = "heatmap"):
    """Datasets from the ``dataset`` section (the synthetic demo set by default).

    ``token_grid`` is the model's token grid (h, w): the rays for 3D positional encodings are given
    per token, so the data must use the model's grid, not a guess in the config.
    """
    from mvpose.data import build_dataset
    from mvpose.data.demo import ensure_demo_data

    d = cfg["dataset"]
    root = d.get("root") or ensure_demo_data(d["name"])
    common = dict(
        views=d["views"],
        image_size=tuple(d["image_size"]),
        heatmap_size=tuple(d["heatmap_size"]),
        token_grid=tuple(token_grid or d["token_grid"]),
        sigma=d.get("sigma", 2.0),
        seed=cfg.get("seed", 0),
        target_type=target_type,
        rays=d.get("rays", "exact"),
    )
    if d.get("augment_config"):
        common["augment_config"] = dict(d["augment_config"])
    out = {}
    for split in splits:
        train = split == "train"
        out[split] = build_dataset(
            d["name"], root, split, augment=train and d.get("augment", True),
            every=d["train_every"] if train else d["eval_every"], **common,
        )
    return out


def build_model_from_config(cfg: dict[str, Any], load_pretrained: bool = True) -> torch.nn.Module:
    """Build ``cfg['model']`` from the registry; ``pretrained: PATH`` loads matching weights from a
    checkpoint or state dict (e.g. a COCO PPT-S for multi-view fine-tuning, as the paper does), an
    mvpose checkpoint or an official PPT / TokenPose file (converted on the fly). Starting Human3.6M
    training from COCO weights maps the 17 keypoint tokens to the Human3.6M joint order, as the
    official multi-view code does (:data:`mvpose.models.convert.COCO_TO_H36M_TOKENS`).
    Rebuilding a trained model from its checkpoint passes ``load_pretrained=False``: its own weights
    replace them anyway, and the pretrained file need not exist any more. The same holds for a
    ViTransPose guide's ``guide_checkpoint``: the guide's weights are part of the model's own.
    A model configuration the model rejects raises :class:`~mvpose.engine.config.ConfigError`."""
    from mvpose.engine.config import ConfigError
    from mvpose.models import build_model

    m = dict(cfg["model"])
    name = m.pop("name")
    pretrained = m.pop("pretrained", None)
    if not load_pretrained and m.get("guide_checkpoint"):
        m["guide_checkpoint"] = None
    d = cfg["dataset"]
    m.setdefault("image_size", tuple(d["image_size"]))
    m.setdefault("heatmap_size", tuple(d["heatmap_size"]))
    try:
        model = build_model(name, **m)
    except ValueError as err:
        raise ConfigError(f"model {name!r}: {err}") from err
    if pretrained and load_pretrained:
        from mvpose.models.convert import COCO_TO_H36M_TOKENS, map_coco_tokens_to_h36m, pretrained_state_dict

        try:
            state, source = pretrained_state_dict(pretrained)
        except UntrustedFileError:  # stays itself: the CLI names the refused global and the opt-in
            raise
        except ValueError as err:  # a missing file stays a FileNotFoundError
            raise ConfigError(f"model.pretrained: {err}") from err
        if source == "coco" and d["name"] == "h36m":
            # The official multi-view code's COCO -> Human3.6M keypoint-token mapping (init_weights).
            for k in [k for k in state if k.endswith("keypoint_tokens") and state[k].shape[1] == 17]:
                state[k] = map_coco_tokens_to_h36m(state[k])
                log.info("pretrained %s: %s mapped from COCO to Human3.6M order %s", pretrained, k,
                         list(COCO_TO_H36M_TOKENS))
        own = model.state_dict()
        # A single-view PPT's keys sit under ``ppt.`` in the multi-view model.
        if not any(k in own for k in state) and any(f"ppt.{k}" in own for k in state):
            state = {f"ppt.{k}": v for k, v in state.items()}
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(usable, strict=False)
        log.warning("pretrained %s: loaded %d of %d tensors (%d skipped: missing or other shape)",
                    pretrained, len(usable), len(own), len(own) - len(usable))
    return model


def optimizer_groups(model: torch.nn.Module, tcfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameter groups for the optimizer: one group at ``train.lr``, except that a multi-view model's
    per-view part (everything of its shared PPT before the fusion layers: backbone, patch embedding,
    keypoint tokens, per-view layers) gets ``train.lr x train.per_view_lr_factor`` when that factor is not 1.

    A lever of multi-view fine-tuning from a single-view PPT: a lower rate keeps the pretrained
    per-view features while the fusion layers, the 3D PE and the head adapt. Group order: fusion and
    rest first, so ``param_groups[0]["lr"]`` is ``train.lr``.
    """
    factor = float(tcfg.get("per_view_lr_factor", 1.0))
    fusion = getattr(model, "fusion_layers", None)
    if factor == 1.0 or fusion is None or not hasattr(model, "ppt"):
        return [{"params": [p for p in model.parameters()]}]
    first_fused = len(model.ppt.layers) - int(fusion)
    per_view, rest = [], []
    for name, p in model.named_parameters():
        parts = name.split(".")
        in_ppt = parts[0] == "ppt" and parts[1] != "head"
        fused = in_ppt and parts[1] == "layers" and int(parts[2]) >= first_fused
        (per_view if in_ppt and not fused else rest).append(p)
    return [{"params": rest}, {"params": per_view, "lr": float(tcfg["lr"]) * factor}]


def weights_checksum(model: torch.nn.Module) -> list[float]:
    """Three numbers that differ when any weight differs (sum, sum of squares, index-weighted sum)."""
    flat = torch.cat([p.detach().double().flatten().cpu() for p in model.parameters()])
    idx = torch.arange(flat.numel(), dtype=torch.float64) % 9973 + 1
    return [float(flat.sum()), float((flat * flat).sum()), float((flat * idx).sum())]


def _check_replicas(model: torch.nn.Module, out_dir: Path, dinfo: DistInfo) -> list[list[float]]:
    """Gather every rank's weight checksum; DDP keeps replicas identical, so a mismatch is a bug."""
    import json

    mine = weights_checksum(unwrap(model))
    every: list = [None] * dinfo.world_size
    torch.distributed.all_gather_object(every, mine)
    if dinfo.is_main:
        atomic_write_text(out_dir / "ddp_replicas.json", json.dumps({"world_size": dinfo.world_size, "checksums": every}) + "\n")
        if any(c != every[0] for c in every):
            raise RuntimeError(f"DDP replicas diverged: weight checksums per rank {every}")
    return every


def available_cpus() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def loader_workers(requested: int, processes: int = 1, cpus: int | None = None) -> int:
    """DataLoader workers per process: ``requested``, at most the cores left after one per training process.

    ``min(requested, cpus // processes - 1)``, never below 0 (0 loads in the training process). On a
    2-core machine a config's 4 workers become 1, so PyTorch's "more workers than CPUs" warning never fires.
    """
    cpus = available_cpus() if cpus is None else int(cpus)
    return max(0, min(int(requested), cpus // max(1, processes) - 1))


# keep_ratio: the PPT keep ratio of the epoch's last training step (the schedule's); val_keep_ratio: the one
# validation ran at, the model's target ratio, as `mvpose evaluate` uses (empty for models that do not prune).
LOG_FIELDS = ["epoch", "lr", "keep_ratio", "train_loss", "samples_per_s", "val_jdr", "val_mpjpe_mm", "seconds",
              "val_keep_ratio"]


class CSVLog:
    """One row per epoch, appended and flushed so an interrupted run keeps its history. A log that
    exists already (``--resume``) keeps its own header's columns."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        if path.exists():
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), None)
            if header:
                self.fields = header
        else:
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(fields)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([row.get(k, "") for k in self.fields])


def _announce_duration(seconds_per_step: float, steps: int, cfg: dict[str, Any]) -> None:
    """Log the measured speed and the expected training time (a warning when it exceeds 15 minutes)."""
    total = seconds_per_step * steps
    text = (f"{cfg['model']['name']} on {cfg['dataset']['name']}: {seconds_per_step:.2f} s per step measured; "
            f"{steps} steps to go, about {total / 60:.0f} min (validation not counted)")
    if total > 15 * 60:
        log.warning("%s. For a run of minutes: --pipeline demo_mv_ppt, or `mvpose demo`", text)
    else:
        log.info(text)


# What a training run writes into its folder (besides config.yaml): a fresh run refuses a folder holding any.
RUN_OUTPUTS = ("last.pt", "best.pt", "log.csv", "tb", "ddp_replicas.json")


def check_run_folder(out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to start a fresh run in a folder that holds another run's outputs (:data:`RUN_OUTPUTS`);
    with ``overwrite``, remove them (the main process only: the caller's job under torchrun).

    A run stopped before its first checkpoint (no ``last.pt`` or ``best.pt``, only its ``config.yaml`` /
    ``log.csv``) has nothing to keep or resume: a fresh run starts there without ``overwrite``.

    Raises:
        FileExistsError: ``out_dir`` holds a previous run and neither ``resume`` nor ``overwrite`` is set;
            the message names the folder and both options.
        FileNotFoundError: ``resume`` and there is no ``out_dir/last.pt``.
        ValueError: both ``resume`` and ``overwrite``.
    """
    import shutil

    out_dir = Path(out_dir)
    if resume and overwrite:
        raise ValueError("give --resume (continue the run in OUT) or --overwrite (start it again), not both")
    found = [name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    checkpointed = any((out_dir / name).is_file() for name in ("last.pt", "best.pt"))
    if resume:
        if not (out_dir / "last.pt").is_file():
            why = (" (the run there stopped before its first checkpoint: start it again without --resume)"
                   if found and not checkpointed else " (nothing to resume)")
            raise FileNotFoundError(f"--resume: {out_dir / 'last.pt'} does not exist{why}")
        return
    if not found:
        return
    if not overwrite and not checkpointed:
        overwrite = True
        log.warning("%s: the run there stopped before its first checkpoint (%s); starting afresh", out_dir, ", ".join(found))
    if not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a training run ({', '.join(found)}): continue it with --resume, start it "
            f"again with --overwrite (removes {', '.join(found)}), or give another --out")
    for name in found:  # tolerant: under torchrun every process may get here
        path = out_dir / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    log.warning("--overwrite: removed %s from %s", ", ".join(found), out_dir)


def train(cfg: dict[str, Any], out_dir: str | Path, resume: bool = False, device: str | None = None, progress: bool = True,
          overwrite: bool = False) -> dict[str, Any]:
    """Train the configured model; returns a summary dict (best JDR, paths).

    Args:
        cfg: merged configuration (see :mod:`mvpose.engine.config`).
        out_dir: run folder: ``last.pt``, ``best.pt``, ``log.csv``, ``config.yaml``, ``report.json``.
        resume: continue from ``out_dir/last.pt``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or None (CUDA when available).
        overwrite: start afresh in a folder that holds a previous run, removing its outputs.

    Raises:
        FileExistsError: ``out_dir`` holds a previous run, without ``resume`` or ``overwrite``
            (:func:`check_run_folder`).
        ValueError: both ``resume`` and ``overwrite``.
    """
    import yaml

    out_dir = Path(out_dir)
    if resume or not overwrite:  # every process, before anything is written
        check_run_folder(out_dir, resume=resume, overwrite=overwrite)
    dinfo: DistInfo = init_distributed(device)
    if overwrite and dinfo.is_main:
        check_run_folder(out_dir, resume=resume, overwrite=True)
    threads = torch.get_num_threads()
    try:
        if dinfo.device.type == "cpu":
            # Same computation, faster on CPU: freed memory is reused instead of being
            # page-faulted in again every step (mvpose.engine.runtime).
            keep_freed_memory()
            if cfg["train"].get("threads"):
                torch.set_num_threads(int(cfg["train"]["threads"]))
        return _train(cfg, out_dir, resume, dinfo, progress, yaml)
    finally:
        torch.set_num_threads(threads)
        cleanup_distributed()


def _init_worker(worker_id: int) -> None:
    """DataLoader worker start: OpenCV's own thread pool would compete with the other workers and
    the training process for the cores (torch already runs one thread in a worker)."""
    import cv2

    cv2.setNumThreads(1)


@dataclass
class _Run:
    """What the named steps of one training run share."""

    cfg: dict[str, Any]
    out_dir: Path
    dinfo: DistInfo
    model: torch.nn.Module  # DDP-wrapped under torchrun (after :func:`_resume`)
    core: PoseModel  # the model itself
    datasets: dict[str, Any]
    sampler: EpochSampler  # around a DistributedSampler
    loader: DataLoader
    val_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    start_epoch: int = 0
    best_jdr: float = -1.0
    step: int = 0
    csv_log: CSVLog | None = None
    tb: Any = None

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    def save(self, epoch: int, path: Path) -> None:
        """Checkpoint: weights, configuration, optimiser / scheduler / scaler, counters and RNG states."""
        save_checkpoint({
            "model": self.core.state_dict(), "config": self.cfg, "model_config": self.core.config,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": epoch, "step": self.step, "best_jdr": self.best_jdr,
            "rng": rng_state(),
        }, path)


def _setup(cfg: dict[str, Any], out_dir: Path, dinfo: DistInfo, yaml) -> _Run:
    """Seed, build the model, the data loaders and the optimiser, then write the run's ``config.yaml``."""
    tcfg = cfg["train"]
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    if dinfo.device.type == "cpu":
        deterministic_algorithms()
    model = build_model_from_config(cfg).to(dinfo.device)
    datasets = build_datasets(cfg, token_grid=model.token_grid, target_type=model.output_kind)
    from mvpose.data import EpochSampler, collate

    # (epoch, index) items: persistent workers hold their own copy of the dataset, so the epoch of the
    # augmentation draws must travel with the index (a set_epoch here would not reach them).
    sampler = EpochSampler(DistributedSampler(datasets["train"], num_replicas=dinfo.world_size, rank=dinfo.rank, shuffle=True,
                                              seed=seed, drop_last=True))
    requested = int(tcfg.get("workers", 0))
    workers = loader_workers(requested, dinfo.world_size)
    if workers != requested:
        log.info("DataLoader workers: %d (train.workers=%d, %d CPU cores for %d process(es))",
                 workers, requested, available_cpus(), dinfo.world_size)
    loader = DataLoader(
        datasets["train"], batch_size=int(tcfg["batch_size"]), sampler=sampler, num_workers=workers,
        collate_fn=collate, drop_last=True, persistent_workers=workers > 0, pin_memory=dinfo.device.type == "cuda",
        worker_init_fn=_init_worker if workers > 0 else None,
        # Not forked from this process: once it has used OpenCV's thread pool (validation, a previous
        # run of the demo), cv2.setNumThreads in a forked worker deadlocks on the copied pool.
        multiprocessing_context=worker_context(preload=["mvpose.data"]) if workers > 0 else None,
    )
    if len(loader) == 0:
        from mvpose.engine.config import ConfigError

        raise ConfigError(
            f"training set has {len(datasets['train'])} samples, fewer than one batch of {tcfg['batch_size']} "
            f"per process; lower train.batch_size or dataset.train_every"
        )
    val_loader = DataLoader(datasets["val"], batch_size=int(cfg["eval"]["batch_size"]), shuffle=False, num_workers=0, collate_fn=collate)
    if dinfo.is_main:  # once the model and the data are known to build: a refused run leaves no folder behind
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))

    optimizer = torch.optim.Adam(optimizer_groups(model, tcfg), lr=float(tcfg["lr"]), weight_decay=float(tcfg.get("weight_decay", 0.0)))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(tcfg["lr_steps"]), gamma=float(tcfg["lr_factor"]))
    use_amp = bool(tcfg.get("amp", True)) and dinfo.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    return _Run(cfg, out_dir, dinfo, model, model, datasets, sampler, loader, val_loader, optimizer, scheduler, scaler, use_amp)


def _resume(run: _Run, ckpt: dict[str, Any]) -> None:
    """Continue from ``last.pt`` (read by :func:`_train` before the set-up): weights, optimiser,
    scheduler, scaler, counters and RNG states."""
    load_weights(run.core, ckpt["model"], str(run.last_path))
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt.get("scaler", {}))
    run.start_epoch, run.best_jdr, run.step = ckpt["epoch"] + 1, ckpt.get("best_jdr", -1.0), ckpt.get("step", 0)
    restore_rng_state(ckpt["rng"])
    log.info("resumed from %s at epoch %d", run.last_path, run.start_epoch)


def _open_logs(run: _Run) -> None:
    """The main process's ``log.csv`` and, when installed, TensorBoard writer."""
    if not run.dinfo.is_main:
        return
    run.csv_log = CSVLog(run.out_dir / "log.csv", LOG_FIELDS)
    try:
        from torch.utils.tensorboard import SummaryWriter

        run.tb = SummaryWriter(str(run.out_dir / "tb"))
    except ImportError:  # TensorBoard is optional
        run.tb = None


def _train_one_epoch(run: _Run, epoch: int, steps_per_epoch: int, progress: bool) -> dict[str, Any]:
    """One epoch of optimiser steps; returns the log row so far (``epoch``, ``lr``, ``keep_ratio``,
    ``train_loss`` averaged over processes, ``samples_per_s``)."""
    cfg, tcfg, dinfo, model = run.cfg, run.cfg["train"], run.dinfo, run.model
    epochs = int(tcfg["epochs"])
    target_r = run.core.scheduled_keep_ratio
    run.sampler.set_epoch(epoch)  # the shuffle and, carried with each index, the augmentation draws
    model.train()
    t0 = time.perf_counter()
    loss_sum, seen = torch.zeros((), device=dinfo.device), 0
    bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", unit="step", disable=not (progress and dinfo.is_main), leave=False)
    r = None
    for i, batch in enumerate(run.loader):
        if i >= steps_per_epoch:
            break
        if target_r is not None:
            r = keep_ratio_at(epoch + i / steps_per_epoch, tcfg, target_r)
            run.core.set_keep_ratio(r)
        with torch.autocast(device_type=dinfo.device.type, dtype=torch.float16, enabled=run.use_amp):
            out = forward_views(model, batch, dinfo.device)
            loss = run.core.loss(out, batch)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if tcfg.get("grad_clip"):
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.step += 1
        n = batch["image"].shape[0]
        seen += n
        loss_sum += loss.detach() * n
        bar.set_postfix(loss=f"{loss.item():.2e}", sps=f"{seen * dinfo.world_size / (time.perf_counter() - t0):.1f}")
        bar.update(1)
        if i == 1 and epoch == run.start_epoch and dinfo.is_main:
            _announce_duration((time.perf_counter() - t0) / 2, steps_per_epoch * (epochs - run.start_epoch), cfg)
    bar.close()
    run.scheduler.step()
    train_loss = float(all_reduce_mean(loss_sum / max(seen, 1)))
    sps = seen * dinfo.world_size / (time.perf_counter() - t0)
    return {
        "epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "keep_ratio": r if r is not None else "",
        "train_loss": train_loss, "samples_per_s": round(sps, 2),
    }


def _validate(run: _Run, epoch: int, row: dict[str, Any], t0: float, progress: bool) -> None:
    """Evaluate on the validation split (main process): ``val_jdr``, ``val_mpjpe_mm`` and
    ``val_keep_ratio`` into ``row``.

    A token-pruning model is validated at its target keep ratio (``model.keep_ratio``), whatever
    the schedule reached: the ratio its checkpoint is rebuilt with, so `mvpose evaluate` on
    ``best.pt`` reproduces the logged figures and ``best.pt`` is selected at the ratio it is used at.
    A failing validation writes the row it has and re-raises; the trained epoch is already saved.
    """
    cfg = run.cfg
    joint_names = joint_names_for(cfg["dataset"]["name"], int(cfg["model"].get("num_joints", 17)))
    target_r = run.core.scheduled_keep_ratio
    if target_r is not None:  # the next training step sets the scheduled ratio again
        run.core.set_keep_ratio(target_r)
        row["val_keep_ratio"] = target_r
    try:
        pred = predict(run.core, run.val_loader, run.dinfo.device, decode=cfg["eval"]["decode"], progress=progress)
        rep = build_report(pred, joint_names, cfg["eval"]["jdr_head_size"], cfg["eval"]["jdr_factor"],
                           breakdown=breakdown_of(run.datasets["val"]))
    except Exception:
        log.error("epoch %d: validation failed; the trained epoch is saved in %s (continue with --resume)",
                  epoch + 1, run.last_path)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        run.csv_log.write(row)
        raise
    # Data without 3D ground truth (COCO) has no MPJPE: the column stays empty.
    row["val_jdr"], row["val_mpjpe_mm"] = rep["jdr"]["overall"], (rep["mpjpe_mm"] or {}).get("overall", "")
    log.info("epoch %d: loss %.3e JDR %.3f MPJPE %s mm", epoch + 1, row["train_loss"], row["val_jdr"], row["val_mpjpe_mm"])


def _end_epoch(run: _Run, epoch: int, row: dict[str, Any], is_val_epoch: bool, summary: dict[str, Any]) -> None:
    """Main process: ``best.pt`` on a better JDR, ``last.pt`` again after validation, the log row."""
    if "val_jdr" in row and row["val_jdr"] > run.best_jdr:
        run.best_jdr = row["val_jdr"]
        run.save(epoch, run.out_dir / "best.pt")
        summary["best_epoch"] = epoch + 1
    if is_val_epoch:  # again, with best_jdr and the RNG state after validation (exact --resume)
        run.save(epoch, run.last_path)
    run.csv_log.write(row)
    if run.tb is not None:
        for k in ("train_loss", "val_jdr", "val_mpjpe_mm", "lr"):
            if row.get(k) not in (None, ""):
                run.tb.add_scalar(k, float(row[k]), epoch + 1)


#: Settings a resumed run may change (dotted keys; a trailing dot: the whole section): how long it runs, how it
#: reads its data and how it is evaluated. Any other change could not take effect (the model, optimiser and
#: schedule come back from ``last.pt``) or would make the run other than the one recorded.
RESUME_CHANGEABLE = ("train.epochs", "train.max_steps_per_epoch", "train.workers", "train.threads",
                     "train.val_every_epochs", "dataset.root", "eval.")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_conflicts(stored: dict[str, Any], cfg: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, value in the run, value asked for)`` for every setting that differs between a run's configuration
    and the one a resume asks for, except :data:`RESUME_CHANGEABLE`."""
    plain = lambda c: _flat(json.loads(json.dumps(c, default=str)))  # noqa: E731  (tuples == lists)
    a, b = plain(stored), plain(cfg)
    unset = "<unset>"
    return [(k, a.get(k, unset), b.get(k, unset)) for k in sorted(set(a) | set(b))
            if a.get(k, unset) != b.get(k, unset) and not any(k == c or (c.endswith(".") and k.startswith(c))
                                                             for c in RESUME_CHANGEABLE)]


def _train(cfg, out_dir: Path, resume: bool, dinfo: DistInfo, progress: bool, yaml) -> dict[str, Any]:
    ckpt = None
    if resume:  # read first: an unreadable last.pt stops the run before anything is built or written
        ckpt = load_checkpoint(out_dir / "last.pt", map_location=dinfo.device,
                               required=REQUIRED_FIELDS + ("optimizer", "scheduler", "epoch", "rng"))
        trained_root, asked_root = ckpt["config"].get("dataset", {}).get("root"), cfg["dataset"].get("root")
        if asked_root is None and trained_root:
            # No --data-root on resume: the run's data, not the synthetic default the pipeline would fall back to.
            cfg["dataset"]["root"] = trained_root
            log.info("--resume: data root %s (the run's)", trained_root)
        elif asked_root != trained_root:
            log.warning("--resume: data root %s, the run trained on %s so far (moved data is fine; other data makes "
                        "the run a mix)", asked_root or "the synthetic demo set", trained_root or "the synthetic demo set")
        conflicts = resume_conflicts(ckpt["config"], cfg)
        if conflicts:
            from mvpose.engine.config import ConfigError

            first = [c for c in conflicts if c[0] == "name"] + [c for c in conflicts if c[0] != "name"]
            shown = "; ".join(f"{k}: {old!r} in the run, {new!r} asked for" for k, old, new in first[:6])
            more = f" (and {len(conflicts) - 6} more)" if len(conflicts) > 6 else ""
            if first[0][0] == "name":
                shown = f"another pipeline (the run is --pipeline {first[0][1]}): " + shown
            raise ConfigError(
                f"--resume: {out_dir / 'last.pt'} was trained with other settings: {shown}{more}. A resumed run keeps "
                f"its model, optimiser and schedule: resume with the run's settings ({out_dir / 'config.yaml'}; "
                f"these may change: {', '.join(c.rstrip('.') for c in RESUME_CHANGEABLE)}), or start a new run "
                "(another --out, or --overwrite)")
    run = _setup(cfg, out_dir, dinfo, yaml)
    if ckpt is not None:
        _resume(run, ckpt)
    if dinfo.enabled:
        run.model = torch.nn.parallel.DistributedDataParallel(run.core, device_ids=[dinfo.local_rank] if dinfo.device.type == "cuda" else None)
    _open_logs(run)

    tcfg = cfg["train"]
    epochs = int(tcfg["epochs"])
    max_steps = tcfg.get("max_steps_per_epoch")
    steps_per_epoch = min(len(run.loader), int(max_steps)) if max_steps else len(run.loader)
    summary: dict[str, Any] = {"out_dir": str(out_dir)}
    if run.start_epoch >= epochs and dinfo.is_main:
        log.warning("--resume: the run in %s has finished %d epoch(s) and train.epochs is %d: nothing to train "
                    "(raise train.epochs to continue it)", out_dir, run.start_epoch, epochs)
    for epoch in range(run.start_epoch, epochs):
        t0 = time.perf_counter()
        row = _train_one_epoch(run, epoch, steps_per_epoch, progress)
        is_val_epoch = (epoch + 1) % int(tcfg.get("val_every_epochs", 1)) == 0 or epoch + 1 == epochs
        if dinfo.is_main:
            # The trained epoch is on disk before validation runs: a failing validation loses nothing.
            run.save(epoch, run.last_path)
        if dinfo.is_main and is_val_epoch:
            _validate(run, epoch, row, t0, progress)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        if dinfo.is_main:
            _end_epoch(run, epoch, row, is_val_epoch, summary)
        summary.update(last_epoch=epoch + 1, train_loss=row["train_loss"])
        if dinfo.enabled:
            torch.distributed.barrier()
    if run.tb is not None:
        run.tb.close()
    if dinfo.enabled:
        summary["replica_checksums"] = _check_replicas(run.model, out_dir, dinfo)
    summary["best_jdr"] = run.best_jdr
    summary["checkpoint"] = str(out_dir / "best.pt")
    return summary
