#!/usr/bin/env python
"""Check an installed mvpose (run with the Python of the environment that holds the wheel install).

Used by ``scripts/wheel_smoke.sh``; exits non-zero with a message naming what is wrong when:

* ``mvpose`` or any of its modules is imported from outside ``--site`` (e.g. a source checkout);
* a shipped resource (pipelines, calibration files) is missing or lies outside ``--site``;
* a shipped pipeline does not load by name;
* mvpose's code imports a module of an installed distribution that its pyproject does not declare
  (a dependency that works only because something else installed it).

    python scripts/wheel_check.py --site VENV/lib/python3.X/site-packages
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata as md
import pkgutil
import re
import sys
from pathlib import Path


def fail(message: str) -> None:
    sys.exit(f"[wheel-check] FAILED: {message}")


def normalise(name: str) -> str:
    """Distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_requirements(dist: str) -> set[str]:
    """Normalised names of the distributions ``dist`` requires (not extras; markers evaluated here)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement

    out = set()
    for text in md.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.add(normalise(req.name))
    return out


def imported_top_names(file: Path) -> set[str]:
    """Top-level names of the absolute imports in a Python source file."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", required=True, type=Path, help="site-packages folder the wheel was installed into")
    site = ap.parse_args().site.resolve()

    def inside(path: str | Path | None) -> bool:
        return path is not None and Path(path).resolve().is_relative_to(site)

    before = set(sys.modules)
    import mvpose
    from mvpose import resources
    from mvpose.engine.config import load_pipeline

    if not inside(mvpose.__file__):
        fail(f"mvpose imported from {mvpose.__file__}, not from the wheel install in {site}")

    names = [m.name for m in pkgutil.walk_packages(mvpose.__path__, "mvpose.") if m.name != "mvpose.__main__"]
    for name in names:
        importlib.import_module(name)
    outside = sorted(n for n, m in sys.modules.items()
                     if n.startswith("mvpose") and not inside(getattr(m, "__file__", None)))
    if outside:
        fail(f"mvpose modules imported from outside {site}: {outside}")
    if len(names) < 40:
        fail(f"only {len(names)} mvpose modules in the wheel install: {names}")

    for path in (resources.pipelines_dir(), resources.h36m_calibration_path(), resources.calibration_examples_dir()):
        if not inside(path):
            fail(f"package data {path} lies outside {site}")
    pipelines = sorted(p.stem for p in resources.pipelines_dir().glob("*.yaml"))
    for name in pipelines:  # by name, as `mvpose train --pipeline NAME` and `--dataset D` resolve them
        if not load_pipeline(name)["model"]["name"]:
            fail(f"pipeline {name}: no model name")
    if not {"demo_mv_ppt", "h36m_mv_ppt_s", "coco_ppt_s", "skipose_mv_ppt_s"} <= set(pipelines):
        fail(f"shipped pipelines incomplete: {pipelines}")

    # Every third-party module mvpose's own code imports (read from the installed sources) must come from a
    # declared dependency: with --system-site-packages an undeclared one would be satisfied by chance.
    # Modules that are not installed at all are optional imports guarded at run time (e.g. tensorboard).
    declared = direct_requirements("mvpose")
    top_dists = md.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    undeclared: dict[str, list[str]] = {}
    for file in Path(mvpose.__file__).parent.rglob("*.py"):
        for top in imported_top_names(file):
            if top in stdlib or top == "mvpose":
                continue
            dists = sorted({normalise(d) for d in top_dists.get(top, [])})
            if dists and not set(dists) & declared:
                undeclared.setdefault(f"{top} ({', '.join(dists)})", []).append(file.name)
    if undeclared:
        fail(f"mvpose imports modules of distributions it does not declare in pyproject.toml: {undeclared}")
    print(f"[wheel-check] ok: {len(names)} modules and {len(pipelines)} pipelines from {site}; "
          f"third-party imports all declared ({len(declared)} dependencies)")


if __name__ == "__main__":
    main()
