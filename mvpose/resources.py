"""Files shipped inside the mvpose package, found with :mod:`importlib.resources`.

They are package data, so a wheel install (``pip install .``) finds them without a source checkout:

* ``mvpose/pipelines/*.yaml``: the training recipes ``mvpose train --pipeline NAME`` takes by name;
* ``mvpose/calibration/h36m.json``: the Human3.6M rigs ``S1``..``S11`` (mvpose calibration format);
* ``mvpose/calibration/examples/``: one 4-camera rig in every supported calibration format;
* ``mvpose/weights/*.pt``: pretrained weights (:data:`SHIPPED_WEIGHTS`), each beside its model card
  (``NAME.md``) and training log (``NAME_log.csv``); their sha256 is checked on every load.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path

__all__ = ["resource_path", "pipelines_dir", "h36m_calibration_path", "calibration_examples_dir", "resolve_calibration",
           "SHIPPED_WEIGHTS", "WeightsChecksumError", "sha256_of", "verify_sha256", "shipped_weights_path"]

#: Pretrained weights shipped in ``mvpose/weights/``: name -> (file, sha256 of the file). The model
#: card ``mvpose/weights/NAME.md`` says how each was made.
SHIPPED_WEIGHTS: dict[str, tuple[str, str]] = {
    "ppt_tiny_synth": ("ppt_tiny_synth.pt", "fc4735b51338a22e9289131e9c2bc827b38b2ed6eac79cd10ee9ef46fcc75d90"),
}


def resource_path(*parts: str) -> Path:
    """File-system path of a file or folder shipped in the mvpose package.

    Args:
        parts: path components below the package folder, e.g. ``("calibration", "h36m.json")``.

    Returns:
        The path inside the installed package (the checkout's ``mvpose/`` when run from source).

    Raises:
        FileNotFoundError: the resource is missing, e.g. a wheel built without its package data or an
            install that is not on a file system (a zip archive).
    """
    node = files("mvpose")
    for part in parts:
        node = node.joinpath(part)
    path = Path(str(node))
    if not path.exists():
        raise FileNotFoundError(f"{path}: package data {'/'.join(parts)!r} is missing from the installed mvpose "
                                f"package (expected a wheel built with its package data, installed as files)")
    return path


def pipelines_dir() -> Path:
    """Folder of the shipped pipeline YAMLs (``mvpose/pipelines``)."""
    return resource_path("pipelines")


def h36m_calibration_path() -> Path:
    """The shipped Human3.6M camera file, rigs ``S1``..``S11`` (``mvpose/calibration/h36m.json``)."""
    return resource_path("calibration", "h36m.json")


def calibration_examples_dir() -> Path:
    """Folder of the example 4-camera rig in every supported format (``mvpose/calibration/examples``)."""
    return resource_path("calibration", "examples")


def resolve_calibration(path: str | Path) -> Path:
    """A calibration file as given, or, when no such file exists, a shipped one by name: ``h36m`` /
    ``h36m.json`` (:func:`h36m_calibration_path`) or the name of a file in :func:`calibration_examples_dir`
    (e.g. ``rig4.toml``). A file of that name in the current folder comes first.

    Raises:
        FileNotFoundError: neither a file nor a shipped name; the message lists the shipped names.
    """
    p = Path(path)
    if p.exists():
        return p
    name = str(path)
    if name in ("h36m", "h36m.json"):
        return h36m_calibration_path()
    examples = calibration_examples_dir()
    if p.name == name and (examples / name).is_file():
        return examples / name
    shipped = ["h36m"] + sorted(q.name for q in examples.iterdir() if q.is_file())
    raise FileNotFoundError(f"calibration file {name!r} does not exist (nor is it a shipped one: {', '.join(shipped)})")


class WeightsChecksumError(ValueError):
    """A weights file whose sha256 is not the expected one (damaged, truncated or replaced)."""


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> Path:
    """Check that ``path`` has sha256 ``expected``; returns the path.

    Raises:
        FileNotFoundError: no such file.
        WeightsChecksumError: naming the file, the expected and the found digest.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file does not exist")
    found = sha256_of(path)
    if found != expected.lower():
        raise WeightsChecksumError(
            f"{path}: sha256 {found} does not match the expected {expected.lower()} ({path.stat().st_size} bytes): "
            f"the file is damaged or was replaced (e.g. a Git LFS pointer or a partial download); reinstall mvpose "
            f"or restore the file from the repository")
    return path


def shipped_weights_path(name: str) -> Path:
    """Path of the shipped weights ``name`` (:data:`SHIPPED_WEIGHTS`), after checking their sha256.

    The file is an mvpose checkpoint (``model`` state dict and the ``config`` that trained it, no
    optimizer state): ``mvpose.load_model`` reads it, ``--set model.pretrained=PATH`` starts from it.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        FileNotFoundError: the file is missing from the installed package.
        WeightsChecksumError: the file's sha256 is not the recorded one.
    """
    if name not in SHIPPED_WEIGHTS:
        raise KeyError(f"no shipped weights named {name!r}; known: {sorted(SHIPPED_WEIGHTS)}")
    file, digest = SHIPPED_WEIGHTS[name]
    return verify_sha256(resource_path("weights", file), digest)
