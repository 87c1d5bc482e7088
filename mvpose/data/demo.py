"""The embedded default: where the synthetic demo sets live and how they are made on first use."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Demo settings: small enough to generate in seconds on 2 cores, large enough to learn from.
# "h36m_occl" is the occlusion validation split: the validation sequences of "h36m" (same seed, same
# poses and rooms) with objects hiding limbs in 1-2 of the 4 views (`mvpose synth --occlusion`).
DEMO_SETTINGS = {
    "h36m": {"fmt": "h36m", "frames": None, "image_size": 256, "seed": 0},
    "skipose": {"fmt": "skipose", "frames": None, "image_size": 256, "seed": 0},
    "h36m_occl": {"fmt": "h36m", "frames": None, "image_size": 256, "seed": 0, "subjects": (9, 11), "occlusion": True},
}


def demo_root(name: str) -> Path:
    """Folder of the demo set ``name``: ``$MVPOSE_DATA/synth_<name>`` or ``./data/synth_<name>``."""
    base = Path(os.environ.get("MVPOSE_DATA", "data"))
    return base / f"synth_{name}"


def ensure_demo_data(name: str) -> Path:
    """Return the demo set's root, generating it first if it is not there (complete) yet."""
    if name not in DEMO_SETTINGS:
        raise ValueError(f"no synthetic demo set for dataset {name!r}; known: {sorted(DEMO_SETTINGS)}; pass --data-root")
    root = demo_root(name)
    marker = root / ".complete"
    if marker.exists():
        return root
    from mvpose.data.synth import generate

    s = DEMO_SETTINGS[name]
    log.warning("generating the synthetic %s demo set in %s (first use)", name, root)
    generate(root, fmt=s["fmt"], frames=s["frames"], image_size=s["image_size"], seed=s["seed"],
             subjects=s.get("subjects"), occlusion=s.get("occlusion", False))
    marker.write_text("ok\n")
    return root
