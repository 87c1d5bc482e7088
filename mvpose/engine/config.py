"""Experiment configuration: a pipeline YAML plus `--set key=value` overrides, as a plain dict.

No global config object: the dict is passed explicitly to the functions that need it and saved in
every checkpoint, so a run can be rebuilt from its checkpoint alone.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from mvpose.resources import pipelines_dir

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "dataset": {
        "name": "h36m",
        "root": None,  # None: the synthetic demo set, generated on first use
        "views": 4,
        "image_size": [256, 256],  # H, W
        "heatmap_size": [64, 64],
        "token_grid": [16, 16],
        "train_every": 5,
        "eval_every": 64,
        "sigma": 2.0,
        "augment": True,
        # Overrides of mvpose.data.transforms.AugmentConfig (scale_factor, rotation_factor, ...).
        "augment_config": {},
        # 3D PE rays through the token centres: "exact" (undistorted, the crop's own map) or "official"
        # (the official multi-view PPT formula, mvpose.data.rays).
        "rays": "exact",
    },
    "model": {"name": "mv_ppt_s"},
    "train": {
        "epochs": 20,
        "batch_size": 8,
        "lr": 1.0e-3,
        "lr_steps": [10, 15],
        "lr_factor": 0.1,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        # PPT keep ratio: 1 for the warm-up epochs, then a cosine decay to r over the decay epochs
        # (paper, COCO: 10 + 100; multi-view fine-tuning: r throughout, i.e. 0 + 0).
        "keep_ratio_warmup_epochs": 0,
        "keep_ratio_decay_epochs": 0,
        "workers": 2,
        # Intra-op threads of the training process on CPU; None: torch's default.
        "threads": None,
        "amp": True,  # only takes effect on CUDA
        "max_steps_per_epoch": None,
        "val_every_epochs": 1,
        # Multi-view models: learning rate of the per-view part (backbone, patch embedding, keypoint
        # tokens, per-view layers) as a fraction of train.lr; the fusion layers, 3D PE and head get
        # train.lr (mvpose.engine.train.optimizer_groups).
        "per_view_lr_factor": 1.0,
    },
    "eval": {"batch_size": 8, "jdr_head_size": 25.6, "jdr_factor": 0.5, "decode": "udp", "min_confidence": 0.0,
             "flip_test": False},
}


class ConfigError(ValueError):
    """A pipeline file or override is malformed; the message names the file or the key."""


def deep_update(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``other`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_pipeline(path: str | Path) -> Path:
    """A pipeline file path as given, or the name of a shipped pipeline (with or without ``.yaml``).

    Shipped pipelines are package data in ``mvpose/pipelines/`` (:func:`mvpose.resources.pipelines_dir`),
    so names work from a wheel install as from a checkout.

    Raises:
        ConfigError: neither a file nor a shipped name; the message lists the shipped names.
    """
    p = Path(path)
    shipped = pipelines_dir()
    for cand in (p, shipped / p, shipped / f"{p}.yaml"):
        if cand.is_file():
            return cand
    known = sorted(q.stem for q in shipped.glob("*.yaml"))
    raise ConfigError(f"pipeline {str(path)!r} not found (as a file or in {shipped}); known: {known}")


def load_pipeline(path: str | Path) -> dict[str, Any]:
    """Read a pipeline YAML and merge it over :data:`DEFAULTS`."""
    p = resolve_pipeline(path)
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, found {type(doc).__name__}")
    unknown = set(doc) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"{p}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    return deep_update(DEFAULTS, doc)


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (numbers, lists, null, booleans)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=2")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: value is not valid YAML: {err}") from err
        node = cfg
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                if part in node:
                    raise ConfigError(f"--set {item!r}: '{part}' is not a section")
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return cfg
