#!/usr/bin/env python
"""Prepare Human3.6M from its raw download: ROOT/annot/h36m_{train,validation}.pkl and ROOT/images/.

RAW holds the extracted official archives, one folder per subject:
  RAW/S1/MyPoseFeatures/{D3_Positions,D3_Positions_mono,D3_Positions_mono_universal,D2_Positions}/*.cdf
(joints_3d comes from D3_Positions_mono_universal as in the H36M-Toolbox; without it, from D3_Positions_mono)
  RAW/S1/Videos/*.mp4
The output is the H36M-Toolbox layout read by `mvpose train --dataset h36m --data-root ROOT`.
Frames already written are skipped, so an interrupted run can simply be started again.

Example:
  python scripts/prepare_h36m.py --raw /data/h36m_raw --out data/h36m --workers 8
  python scripts/prepare_h36m.py --raw /data/h36m_raw --out data/h36m_small --subjects S9 S11 --every 5
"""

import argparse
import logging
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True, help="folder with the extracted raw download (S1, S5, ... inside)")
    ap.add_argument("--out", required=True, help="dataset root to write (annot/ and images/)")
    ap.add_argument("--subjects", nargs="+", default=None, help="subjects, e.g. S1 S5 or 1,5 (default: all seven)")
    ap.add_argument("--actions", nargs="+", type=int, default=None, help="action ids 2..16 (default: all)")
    ap.add_argument("--every", type=int, default=1, help="keep every N-th frame (default 1: all, as published)")
    ap.add_argument("--workers", type=int, default=None, help="video decoding processes (default min(4, cores))")
    ap.add_argument("--calibration", default=None, help="camera file with rigs S1..S11 (default mvpose/calibration/h36m.json)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each step")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from mvpose.data.prepare_h36m import PrepareError, format_report, parse_subjects, prepare_h36m  # after --help

    try:
        subjects = parse_subjects(args.subjects) if args.subjects else None
        report = prepare_h36m(args.raw, args.out, subjects=subjects, actions=args.actions, every=args.every,
                              workers=args.workers, calibration=args.calibration, progress=not args.no_progress)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
