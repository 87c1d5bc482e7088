"""Experiment configuration: a pipeline YAML plus `--set key=value` overrides, as a plain dict.

No global config object: the dict is passed explicitly to the functions that need it and saved in
every checkpoint, so a run can be rebuilt from its checkpoint alone.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from mvpose.resources import pipelines_dir


class _Loader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``2e-3`` / ``1E5`` as numbers (YAML 1.2 floats; PyYAML
    follows YAML 1.1, where a float needs a dot, so ``--set train.lr=2e-3`` was a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)

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
        doc = yaml.load(p.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, found {type(doc).__name__}")
    unknown = set(doc) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"{p}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    return deep_update(DEFAULTS, doc)


# Sections whose keys are not fixed by DEFAULTS: ``model`` (the model's constructor arguments, checked
# by :func:`check_model_keys`) and ``dataset.augment_config`` (AugmentConfig fields).
OPEN_SECTIONS = ("model", "dataset.augment_config")
# Keys that may be null although their default is not.
NULLABLE = ("train.grad_clip", "train.threads", "train.max_steps_per_epoch", "dataset.root")
# Lower bounds of counts: a value below gives an empty run or a crash deep in the loop.
MINIMUM = {"train.epochs": 1, "train.batch_size": 1, "eval.batch_size": 1, "dataset.views": 1, "train.workers": 0,
           "dataset.train_every": 1, "dataset.eval_every": 1, "train.val_every_epochs": 1}
CHOICES = {"dataset.rays": ("exact", "official"), "eval.decode": ("udp", "argmax", "soft")}
# Values that must be above zero (a learning rate of -1 reaches the optimiser as a bare PyTorch error).
POSITIVE = ("train.lr", "train.lr_factor", "train.grad_clip", "train.per_view_lr_factor", "dataset.sigma",
            "eval.jdr_head_size", "eval.jdr_factor")


def _known_keys(section: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in section.items():
        out.append(prefix + k)
        if isinstance(v, dict) and prefix + k not in OPEN_SECTIONS:
            out += _known_keys(v, prefix + k + ".")
    return out


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _wanted_type(default: Any, value: Any) -> str | None:
    """What ``value`` should be to have the type of ``default`` (a bool is no number), or None when it has it."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    return None if isinstance(value, type(default)) else _type_name(default)


def check_value(key: str, value: Any) -> None:
    """Check one ``key`` (dotted) against the type of its default in :data:`DEFAULTS` and the bounds
    of :data:`MINIMUM` / :data:`CHOICES`.

    Raises:
        ConfigError: ``--set KEY: expected <type>, found <value>``.
    """
    node: Any = DEFAULTS
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return  # inside an open section
        node = node[part]
    default = node
    if value is None:
        if default is None or key in NULLABLE:
            return
        raise ConfigError(f"--set {key}: expected {_type_name(default)}, found null")
    if default is None or isinstance(default, dict) and key in OPEN_SECTIONS and isinstance(value, dict):
        pass
    elif (want := _wanted_type(default, value)) is not None:
        raise ConfigError(f"--set {key}: expected {want}, found {value!r}")
    if key in POSITIVE and isinstance(value, (int, float)) and not value > 0:
        raise ConfigError(f"--set {key}: expected a number above 0, found {value!r}")
    if key in MINIMUM and isinstance(value, (int, float)) and value < MINIMUM[key]:
        raise ConfigError(f"--set {key}: expected at least {MINIMUM[key]}, found {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"--set {key}: expected one of {', '.join(CHOICES[key])}, found {value!r}")


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (numbers, lists, null, booleans).

    Keys must be those of :data:`DEFAULTS` (or lie in an open section, :data:`OPEN_SECTIONS`) and
    values of their default's type (:func:`check_value`).

    Raises:
        ConfigError: malformed item, unknown key (with the closest known key), value of the wrong type.
    """
    cfg = copy.deepcopy(cfg)
    known = _known_keys(DEFAULTS)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=2")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.load(raw, Loader=_Loader)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: value is not valid YAML: {err}") from err
        parts = key.split(".")
        if not any(key == k or key.startswith(k + ".") for k in OPEN_SECTIONS) and key not in known:
            raise ConfigError(f"--set {key}: unknown key{_suggest(key, known)}")
        check_value(key, value)
        node = cfg
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                if part in node:
                    raise ConfigError(f"--set {item!r}: '{part}' is not a section")
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return cfg


def model_parameters(name: str, own_only: bool = False) -> list[str] | None:
    """The keyword arguments the registered model ``name`` accepts, or None when it takes any
    (``**kwargs``; ``own_only``: the named ones all the same). Read with :func:`inspect.signature` from the class of a
    :func:`mvpose.models.register_config` entry, else from the factory itself.

    Raises:
        ConfigError: no model is registered under ``name``.
    """
    import mvpose.models  # noqa: F401 - importing it registers every model
    from mvpose.models import registry

    try:
        factory = registry.model_factory(name)
    except ValueError as err:
        raise ConfigError(f"model.name: {err}") from err
    target = getattr(factory, "model_class", factory)  # register_config entries name their class
    params = inspect.signature(target).parameters.values()
    if not own_only and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def _check_model_value_types(name: str, values: dict[str, Any]) -> None:
    """A number, flag or text where the model's default (registered configuration, else constructor) is one."""
    from mvpose.models import registry

    factory = registry.model_factory(name)
    target = getattr(factory, "model_class", factory)
    defaults = {p.name: p.default for p in inspect.signature(target).parameters.values()
                if p.default is not inspect.Parameter.empty}
    defaults.update(getattr(factory, "model_defaults", {}))
    for key, value in values.items():
        default = defaults.get(key)
        if default is None or value is None:
            continue
        if isinstance(default, (list, tuple)):  # a YAML list for a tuple default is fine
            want = None if isinstance(value, (list, tuple)) else "a list"
        elif isinstance(default, (bool, int, float, str)):
            want = _wanted_type(default, value)
        else:
            continue
        if want is not None:
            raise ConfigError(f"--set model.{key}: expected {want} (model {name!r} has {default!r}), found {value!r}")


def _all_model_parameters() -> list[str]:
    """Every constructor argument of the registered models' classes (the candidates of a suggestion)."""
    from mvpose.models import list_models

    names: set[str] = set()
    for model in list_models():
        names.update(model_parameters(model, own_only=True) or ())
    return sorted(names)


def check_model_keys(cfg: dict[str, Any]) -> None:
    """Check that every ``model.*`` key (besides ``name`` and ``pretrained``) is an argument of the model.

    A model whose constructor passes ``**kwargs`` on (the multi-view PPT to its per-view PPT) is built
    on the ``meta`` device (no memory, no weights) to let it reject an unknown argument itself.

    Raises:
        ConfigError: ``--set model.KEY: unknown key for model NAME; did you mean ...?``.
    """
    import re

    m = {k: v for k, v in (cfg.get("model") or {}).items() if k != "pretrained"}
    name = m.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"model.name: expected a registered model name, found {name!r}")
    accepted = model_parameters(name)
    if accepted is not None:
        for key in m:
            if key not in accepted:
                raise ConfigError(f"--set model.{key}: unknown key for model {name!r}{_suggest(key, accepted)} "
                                  f"(accepted: {', '.join(sorted(accepted))})")
    _check_model_value_types(name, m)
    if accepted is not None:
        return
    import torch

    from mvpose.models import build_model

    try:
        with torch.device("meta"):
            build_model(name, **m)
    except TypeError as err:
        found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if found is None:
            raise ConfigError(f"model {name!r}: {err}") from err
        key = found.group(1)
        raise ConfigError(f"--set model.{key}: unknown key for model {name!r}"
                          f"{_suggest(key, _all_model_parameters())}") from err
    except Exception:  # noqa: BLE001 - anything else is for the real build to report
        return
