"""Reading files made elsewhere without running their code.

A pickle (and so a ``torch.save`` file) can name any Python function, which the unpickler then calls:
opening a checkpoint or an annotation file from someone else could run anything. Every reader in
mvpose therefore goes through this module:

- :func:`read_torch_file` opens a ``torch.save`` file with ``torch.load(weights_only=True)``: tensors,
  plain containers, numbers and strings, plus the numpy array / dtype / scalar reconstructors that
  checkpoints written by older mvpose versions contain (see :data:`NUMPY_GLOBALS`). Anything else is
  refused with :class:`UntrustedFileError`, which names the file and the global it asked for.
  ``trust=True`` (CLI: ``--trust-checkpoint``), or a :func:`trusted_checkpoints` block, is the only
  way around it: then the file is unpickled in full, which runs whatever code it holds.
- :func:`state_dict_from_file` returns the weights of a checkpoint in any of the common layouts (a
  plain state dict; ``{"state_dict": ...}`` as the official PPT / mmpose checkpoints; ``{"model": ...}``
  as mvpose's own; keys prefixed ``module.`` by ``DataParallel``).
- :func:`load_pickle` opens a plain pickle (the Human3.6M annotation files of the H36M-Toolbox) with an
  unpickler that allows only builtin containers and the numpy array / dtype / scalar reconstructors,
  which is all the published files contain.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import logging
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

log = logging.getLogger(__name__)

__all__ = [
    "NUMPY_GLOBALS", "PICKLE_GLOBALS", "UntrustedFileError", "load_pickle", "read_torch_file",
    "state_dict_from_file", "trusted_checkpoints", "unwrap_state_dict",
]

#: numpy globals an array, a dtype or a numpy scalar pickles to, under numpy 1 (``numpy.core``) and
#: numpy 2 (``numpy._core``) names; ``_frombuffer`` is what pickle protocol 5 uses. Each only builds
#: an array / dtype / scalar from bytes; object arrays' elements go through the same restricted lookup.
NUMPY_GLOBALS: tuple[str, ...] = tuple(
    f"{pkg}.{name}"
    for pkg in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) + ("numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer", "numpy.ndarray", "numpy.dtype")

#: Everything :func:`load_pickle` resolves: builtin containers / numbers (Python 3 ``builtins`` and
#: Python 2 ``__builtin__`` names), ``_codecs.encode`` (protocol 2 stores bytes with it) and
#: :data:`NUMPY_GLOBALS`.
PICKLE_GLOBALS: frozenset[str] = frozenset(
    [f"{mod}.{name}" for mod in ("builtins", "__builtin__")
     for name in ("set", "frozenset", "list", "dict", "tuple", "bytearray", "bytes", "complex", "int", "float",
                  "str", "bool", "slice", "range")]
    + ["_codecs.encode", *NUMPY_GLOBALS]
)

_TRUST: contextvars.ContextVar[bool] = contextvars.ContextVar("mvpose_trust_checkpoints", default=False)


class UntrustedFileError(ValueError):
    """A file asks for more than the safe loaders allow; ``path`` and ``wanted`` (the global) name it."""

    def __init__(self, path: str | Path, wanted: str, hint: str) -> None:
        self.path, self.wanted = Path(path), wanted
        super().__init__(f"{path}: refused to load, it asks for {wanted}, which a plain checkpoint or annotation "
                         f"file does not need and could run code. {hint}")


@contextlib.contextmanager
def trusted_checkpoints(trust: bool = True) -> Iterator[None]:
    """Within the block, checkpoints are unpickled in full (``torch.load(weights_only=False)``) when the
    restricted load refuses them: the Python side of ``--trust-checkpoint``. Only for files whose
    source you trust: their pickle may run arbitrary code. ``trust=False`` makes it a no-op."""
    token = _TRUST.set(bool(trust) or _TRUST.get())
    try:
        yield
    finally:
        _TRUST.reset(token)


@functools.lru_cache(maxsize=1)
def _numpy_safe_globals() -> tuple:
    """:data:`NUMPY_GLOBALS` as ``(object, name)`` pairs for ``torch.serialization.safe_globals``."""
    out = []
    for full in NUMPY_GLOBALS:
        module, name = full.rsplit(".", 1)
        try:
            with warnings.catch_warnings():  # numpy 2 warns when numpy.core is imported
                warnings.simplefilter("ignore", DeprecationWarning)
                out.append((getattr(importlib.import_module(module), name), full))
        except (ImportError, AttributeError):
            continue
    # numpy 2 dtypes are instances of per-type classes (numpy.dtypes.Float64DType, ...), which torch's
    # weights-only unpickler checks as well: the numeric, bool and fixed-width string ones.
    import numpy as np

    out += sorted({type(np.dtype(c)) for c in "?bhilqBHILQefdgFDGUS"} - {np.dtype}, key=str)
    return tuple(out)


def _refused_global(err: Exception) -> str | None:
    """The global or class torch's weights-only load refused (``GLOBAL os.system``, ``but got <class
    'x.Y'>``), or None when the error names none (a corrupt file, not a refused one)."""
    text = str(err)
    for pattern in (r"GLOBAL ([\w.]+)", r"but got <class '([\w.]+)'>", r"Unsupported class ([\w.]+)"):
        m = re.search(pattern, text)
        if m:
            return f"the global {m.group(1)}"
    return None


def _reason(err: Exception) -> str:
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
    return m.group(1).strip() if m else f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"


def _damage(path: Path) -> str | None:
    """What is wrong with the container of a ``torch.save`` file, in plain words, or None.

    ``torch.save`` writes a zip archive whose table of contents (the central directory) is at the
    end, so a copy or download cut short loses it (torch then reports a miniz error or ``[Errno 22]``);
    and every member has a CRC-32, which ``torch.load`` does not check: a damaged byte in a tensor
    would load as a wrong weight. Checking the CRCs reads the file once (about 40 ms for 100 MB).
    """
    import zipfile

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
    if size == 0:
        return "the file is empty (0 bytes)"
    if head != b"PK\x03\x04":
        return None  # not a zip: a legacy torch.save file or something else; torch's reason stands
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return (f"the file is a truncated or damaged zip archive (the format of torch.save): its table of contents "
                f"is missing after {size} bytes; it was probably cut short while being written or copied: copy it again")
    if bad is not None:
        return f"the zip archive (the format of torch.save) is damaged: member {bad!r} fails its checksum; copy it again"
    return None


def read_torch_file(path: str | Path, map_location: str | torch.device | None = "cpu",
                    trust: bool | None = None) -> Any:
    """Load a ``torch.save`` file without running code from it.

    Args:
        path: the file.
        map_location: as for ``torch.load``.
        trust: ``True`` unpickles in full when the restricted load refuses the file (runs whatever code the
            file holds; only for files from a trusted source). ``None``: as the enclosing
            :func:`trusted_checkpoints` block says (default: not trusted).

    Returns:
        The loaded object (tensors, dicts, lists, tuples, numbers, strings; numpy arrays / scalars in
        files written by older mvpose versions).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UntrustedFileError: the file needs a global outside the allowlist; names the file and the global.
        ValueError: the file is not a readable ``torch.save`` file (names the file): empty, truncated, a
            zip member failing its CRC-32 (checked before loading: torch does not), or not torch's format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    trust = _TRUST.get() if trust is None else trust
    damage = _damage(path)
    if damage is not None:
        raise ValueError(f"{path}: not a readable checkpoint ({damage})")
    try:
        with torch.serialization.safe_globals(list(_numpy_safe_globals())):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        wanted = _refused_global(err)
        if wanted is None:
            raise ValueError(f"{path}: not a readable checkpoint ({_reason(err)})") from err
        if not trust:
            raise UntrustedFileError(path, wanted, "Load it only if you trust its source: pass --trust-checkpoint "
                                     "(Python: trust=True or `with mvpose.safe_load.trusted_checkpoints():`).") from None
        log.warning("%s: asks for %s; loading it in full because it is trusted (--trust-checkpoint)", path, wanted)
    except Exception as err:  # torch raises many types for corrupt files
        raise ValueError(f"{path}: not a readable checkpoint ({_reason(err)})") from err
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err


def unwrap_state_dict(obj: Any, path: str | Path = "<object>") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint.

    Accepts a plain ``{name: tensor}`` dict, ``{"state_dict": ...}`` (official PPT / mmpose / Lightning
    checkpoints), ``{"model": ...}`` (mvpose, DeiT), nested in any order, and removes a ``module.``
    prefix that every key carries (``DataParallel`` / ``DistributedDataParallel`` checkpoints).
    Non-tensor entries beside the weights of a wrapper (epoch, optimizer, config) are ignored.

    Raises:
        ValueError: naming ``path``, when no dict of tensors is found.
    """
    state = obj
    for _ in range(4):
        if isinstance(state, Mapping) and not _all_tensors(state):
            inner = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), Mapping)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, Mapping) or not state or not _all_tensors(state):
        found = type(state).__name__ if not isinstance(state, Mapping) else \
            f"a dict with keys {sorted(map(str, state))[:8]}"
        raise ValueError(f"{path}: expected a state dict (name -> tensor), or one under 'state_dict' or 'model'; "
                         f"found {found}")
    state = dict(state)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _all_tensors(d: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in d.values())


def state_dict_from_file(path: str | Path, map_location: str | torch.device | None = "cpu",
                         trust: bool | None = None) -> dict[str, torch.Tensor]:
    """:func:`read_torch_file` then :func:`unwrap_state_dict`: the weights of a checkpoint made anywhere.

    Raises:
        FileNotFoundError, UntrustedFileError, ValueError: as :func:`read_torch_file` and
        :func:`unwrap_state_dict`, each naming ``path``.
    """
    return unwrap_state_dict(read_torch_file(path, map_location=map_location, trust=trust), path)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if f"{module}.{name}" not in PICKLE_GLOBALS:
            raise UntrustedFileError(self._path, f"the global {module}.{name}",
                                     "Only builtin containers and numpy arrays / dtypes / scalars are allowed.")
        if module == "__builtin__":
            module = "builtins"
        with warnings.catch_warnings():  # numpy 2 warns about numpy.core names in numpy 1 pickles
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def load_pickle(path: str | Path, encoding: str = "ASCII") -> Any:
    """Unpickle ``path`` allowing only :data:`PICKLE_GLOBALS` (builtin containers, numpy arrays / dtypes /
    scalars): the Human3.6M annotation pickles of the H36M-Toolbox, any protocol.

    Args:
        path: the file.
        encoding: for Python 2 ``str`` objects (``"latin1"`` for Python 2 numpy pickles), as ``pickle.load``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UntrustedFileError: the pickle names another global; names the file and the global. Nothing the
            pickle asks for is called before this is raised.
        pickle.UnpicklingError, EOFError, ValueError, ...: not a readable pickle (as ``pickle.load``).
    """
    path = Path(path)
    with path.open("rb") as f:
        return _RestrictedUnpickler(f, path, encoding=encoding).load()
