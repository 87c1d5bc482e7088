#!/usr/bin/env python
"""Write mvpose/calibration/h36m.json (mvpose format, one rig per subject) from the Human3.6M camera file.

Usage: python scripts/make_h36m_calibration.py [--src ../shared/data/h36m_cameras.json] [--out mvpose/calibration/h36m.json]
"""

import argparse
import json
from pathlib import Path

from mvpose.data.h36m import h36m_camera_params
from mvpose.geometry.calibration import write_mvpose_calibration


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=root.parent / "shared" / "data" / "h36m_cameras.json")
    ap.add_argument("--out", type=Path, default=root / "mvpose" / "calibration" / "h36m.json")
    args = ap.parse_args()
    cams = json.loads(args.src.read_text())["cameras"]
    rigs: dict[str, list] = {}
    for cam in sorted(cams, key=lambda c: (c["subject"], c["camera_index"])):
        where = f"{args.src} subject {cam['subject']} camera {cam['camera_id']}"
        rigs.setdefault(f"S{cam['subject']}", []).append(h36m_camera_params(cam, where))
    write_mvpose_calibration(args.out, rigs)
    print(f"wrote {args.out}: {len(rigs)} rigs, {sum(map(len, rigs.values()))} cameras")


if __name__ == "__main__":
    main()
