"""The embedded default: where the synthetic demo sets live and how they are made on first use."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Demo settings: small enough to generate in seconds on 2 cores, large enough to learn from.
# "h36m_occl" is "h36m" (same seed, same sequences, poses and rooms) with, in every frame, objects
# hiding limbs in 1-2 of the 4 views (`mvpose synth --occlusion`): its validation subjects are the
# occlusion split, its training subjects the occlusion training set.
DEMO_SETTINGS = {
    "h36m": {"fmt": "h36m", "frames": None, "image_size": 256, "seed": 0},
    "skipose": {"fmt": "skipose", "frames": None, "image_size": 256, "seed": 0},
    "h36m_occl": {"fmt": "h36m", "frames": None, "image_size": 256, "seed": 0, "occlusion": True},
}


def demo_root(name: str) -> Path:
    """Folder of the demo set ``name``: ``$MVPOSE_DATA/synth_<name>`` or ``./data/synth_<name>``."""
    base = Path(os.environ.get("MVPOSE_DATA", "data"))
    return base / f"synth_{name}"


def completion_stamp(name: str) -> str:
    """What ``ROOT/.complete`` of the demo set ``name`` holds once generated: its settings."""
    return json.dumps(DEMO_SETTINGS[name], sort_keys=True) + "\n"


def ensure_demo_data(name: str) -> Path:
    """Return the demo set's dataset root (what its reader takes: the folder itself for Human3.6M,
    ``synth_skipose/Ski-PosePTZ-CameraDataset-png`` for Ski-Pose), generating the set first if it is
    not there (complete, with today's settings) yet. The settings are recorded in ``.complete``; a
    set made with other settings (an older release's) is generated again."""
    if name not in DEMO_SETTINGS:
        raise ValueError(f"no synthetic demo set for dataset {name!r}; known: {sorted(DEMO_SETTINGS)}; pass --data-root")
    from mvpose.data.synth.writers import SKIPOSE_ROOT_NAME  # the published zip's folder, the reader's root

    root = demo_root(name)
    s = DEMO_SETTINGS[name]
    data_root = root / SKIPOSE_ROOT_NAME if s["fmt"] == "skipose" else root
    marker = root / ".complete"
    stamp = completion_stamp(name)
    found = marker.read_text() if marker.exists() else None
    if found is not None:
        if found == stamp or (found == "ok\n" and name != "h36m_occl"):
            return data_root  # ("ok": sets of earlier releases whose settings have not changed since)
        log.warning("%s: made with other settings than today's %s; generating it again", root, stamp.strip())
        marker.unlink()
    from mvpose.data.synth import generate

    log.warning("generating the synthetic %s demo set in %s (first use)", name, root)
    generate(root, fmt=s["fmt"], frames=s["frames"], image_size=s["image_size"], seed=s["seed"],
             subjects=s.get("subjects"), occlusion=s.get("occlusion", False))
    marker.write_text(stamp)
    return data_root
