"""Files shipped inside the mvpose package, found with :mod:`importlib.resources`.

They are package data, so a wheel install (``pip install .``) finds them without a source checkout:

* ``mvpose/pipelines/*.yaml``: the training recipes ``mvpose train --pipeline NAME`` takes by name;
* ``mvpose/calibration/h36m.json``: the Human3.6M rigs ``S1``..``S11`` (mvpose calibration format);
* ``mvpose/calibration/examples/``: one 4-camera rig in every supported calibration format.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["resource_path", "pipelines_dir", "h36m_calibration_path", "calibration_examples_dir", "resolve_calibration"]


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
