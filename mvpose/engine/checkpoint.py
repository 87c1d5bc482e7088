"""Checkpoints: written atomically (temporary file + rename), so an interrupted run never leaves a
half-written file where a good one used to be, and only of plain types (tensors, dicts, lists, tuples,
numbers, strings), so that they load with ``torch.load(weights_only=True)``; read through
:mod:`mvpose.safe_load`, which never runs code from a file unless told to trust it."""

from __future__ import annotations

import collections
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mvpose.safe_load import read_torch_file


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path.tmp`` in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` (strict) with a short error: how many tensors are missing, unexpected or
    of another shape, with the first few names, instead of PyTorch's list of every key.

    Raises:
        ValueError: naming ``source`` (e.g. the checkpoint path), when the weights do not fit ``model``.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        first = lambda keys: ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")  # noqa: E731
        parts = ([f"{len(missing)} of the model's {len(own)} tensors missing ({first(missing)})"] if missing else []) + \
                ([f"{len(unexpected)} not in the model ({first(unexpected)})"] if unexpected else []) + \
                ([f"{len(shapes)} of another shape ({shapes[0][0]}: {list(shapes[0][1])} in the file, "
                  f"{list(shapes[0][2])} in the model)"] if shapes else [])
        raise ValueError(f"{source}: the weights do not fit {type(model).__name__}: " + "; ".join(parts)
                         + ": weights of another model or configuration?")
    model.load_state_dict(state)


#: Fields of an mvpose checkpoint the engine reads to rebuild and evaluate its model (dotted paths).
REQUIRED_FIELDS: tuple[str, ...] = (
    "model", "config", "config.model", "config.model.name", "config.dataset", "config.dataset.name",
    "config.dataset.image_size", "config.dataset.heatmap_size", "config.eval", "config.eval.batch_size",
    "config.eval.decode", "config.eval.jdr_head_size", "config.eval.jdr_factor",
)


def to_plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` with only types ``torch.load(weights_only=True)`` accepts without an allowlist.

    numpy arrays become tensors (``uint32`` / ``uint16`` widened to ``int64``), numpy scalars Python
    numbers, paths strings; dicts (``dict``, ``OrderedDict``, ``Counter`` kept as such), lists and tuples
    are converted element-wise. Tensors, ``torch.Size``, ``torch.dtype``, ``int`` / ``float`` / ``str`` /
    ``bool`` / ``bytes`` / ``None`` pass unchanged.

    Raises:
        TypeError: naming the entry (``where``, e.g. ``checkpoint['rng']['numpy'][1]``) that holds another type.
    """
    if isinstance(obj, np.ndarray):
        if obj.dtype in (np.uint16, np.uint32):
            obj = obj.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):  # before float: numpy.float64 is a float subclass
        return obj.item()
    if obj is None or isinstance(obj, (torch.Tensor, torch.Size, torch.dtype, bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if type(obj) in (dict, collections.OrderedDict, collections.Counter):
        # Built from a dict, not from (key, value) pairs: Counter(pairs) would count the pairs (a resumed
        # MultiStepLR's milestones would become {(10, 1): 1} and the learning rate would never drop).
        return type(obj)({(k if isinstance(k, (str, int)) else to_plain(k, where)): to_plain(v, f"{where}[{k!r}]")
                          for k, v in obj.items()})
    if type(obj) in (list, tuple):
        return type(obj)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a checkpoint that "
                    "loads with weights_only=True; convert it to tensors, dicts, lists or numbers")


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """:func:`to_plain` then :func:`atomic_save`: a checkpoint that loads with ``weights_only=True``."""
    atomic_save(to_plain(ckpt), path)


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python random states, for :func:`restore_rng_state` (plain types after
    :func:`to_plain`)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng_state(rng: dict[str, Any]) -> None:
    """Restore :func:`rng_state` as saved: the numpy key may be a ``uint32`` array (old checkpoints) or
    an ``int64`` tensor / list (plain checkpoints); the Python state a tuple or, after a round trip, a list."""
    torch.set_rng_state(rng["torch"])
    name, key, *rest = rng["numpy"]
    key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state((name, key.astype(np.uint32), *rest))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


def _field(ckpt: dict[str, Any], dotted: str) -> bool:
    node: Any = ckpt
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", trust: bool | None = None,
                    required: tuple[str, ...] = REQUIRED_FIELDS) -> dict[str, Any]:
    """Load an mvpose checkpoint (``{"model": state dict, "config": ..., ...}``) without running code from it.

    Checkpoints of older mvpose versions (numpy random state, numpy scalars) load as well and are
    returned in plain form (:func:`to_plain`); ``mvpose checkpoint upgrade OLD NEW`` rewrites them.

    Args:
        path: the checkpoint.
        map_location: as for ``torch.load``.
        trust: as :func:`mvpose.safe_load.read_torch_file` (``--trust-checkpoint``).
        required: dotted fields that must be present (default :data:`REQUIRED_FIELDS`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        mvpose.safe_load.UntrustedFileError: the file asks for a global outside the allowlist.
        ValueError: naming ``path``, when it is not readable, not a dict, or lacks a required field (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = read_torch_file(path, map_location=map_location, trust=trust)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not an mvpose checkpoint (expected a dict with 'model' and 'config', "
                         f"found {type(ckpt).__name__})")
    missing: list[str] = []
    for f in required:  # a missing section, not each of its fields
        if not _field(ckpt, f) and not any(f.startswith(m + ".") for m in missing):
            missing.append(f)
    if missing:
        raise ValueError(f"{path}: not a complete mvpose checkpoint: field {missing[0]!r} is missing"
                         + (f" (also {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""))
    try:
        return to_plain(ckpt, str(path))
    except TypeError:  # only a trusted file can hold other objects; hand them on as they are
        return ckpt


def upgrade_checkpoint(src: str | Path, dst: str | Path, trust: bool | None = None) -> dict[str, Any]:
    """Rewrite a checkpoint of an older mvpose version (numpy random state and scalars) in plain form,
    so that it loads with ``weights_only=True`` alone. Reading ``src`` allows only the numpy
    reconstructors (:data:`mvpose.safe_load.NUMPY_GLOBALS`) unless ``trust``.

    Returns:
        The checkpoint as written.

    Raises:
        As :func:`load_checkpoint` (only 'model' and 'config' required); TypeError naming the entry that
        cannot be made plain (possible only for a trusted ``src``).
    """
    ckpt = load_checkpoint(src, trust=trust, required=("model", "config"))
    plain = to_plain(ckpt, str(src))
    atomic_save(plain, dst)
    return plain
