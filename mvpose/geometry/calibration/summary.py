"""A calibration as a per-camera text table (``mvpose calibrate convert`` prints it)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from mvpose.geometry.calibration.common import plain_number

__all__ = ["calibration_summary"]


def calibration_summary(params: Sequence[Mapping[str, Any]]) -> str:
    """A per-camera table: name, size, fx, fy, cx, cy, centre (mm), distance from the first camera."""
    if not params:
        raise ValueError("calibration_summary: no cameras")
    centres = [-np.asarray(p["R"]).T @ np.asarray(p["t"]) for p in params]
    header = ["camera", "size", "fx", "fy", "cx", "cy", "centre X", "Y", "Z (mm)", f"from {params[0]['name']} (mm)"]
    rows = []
    for p, C in zip(params, centres):
        K = np.asarray(p["K"])
        w, h = (plain_number(v) for v in np.asarray(p["size"]).tolist())
        rows.append(
            [
                str(p["name"]),
                f"{w}x{h}",
                *(f"{v:.1f}" for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])),
                *(f"{v:.0f}" for v in C),
                f"{np.linalg.norm(C - centres[0]):.0f}",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt_row = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join(fmt_row(r).rstrip() for r in [header, *rows])
