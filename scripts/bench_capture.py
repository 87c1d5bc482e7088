#!/usr/bin/env python
"""Speed and accuracy of `mvpose triangulate --keypoints` on a synthetic capture.

Speed: a 4-camera capture of ``--seconds`` at ``--fps`` (default 60 s at 60 fps = 3600 frames, 14 400
OpenPose JSON files, BODY_25) is generated in a temporary folder from the rig ``mvpose/calibration/examples/rig4.json``
(2 px noise, 5 % outliers), then processed the way the CLI does (robust triangulation, gap filling, 6 Hz
Butterworth, h5 + TRC + summary writing) on ``--cores`` CPU cores. Printed: frames per second and the time of
each stage (JSON reading, person selection, triangulation, temporal filtering, writing), best of
``--repeats`` runs.

Accuracy: MPJPE (mm) of plain DLT and the two robust modes (with and without refinement) against the
ground truth, for several 2D noise levels and outlier rates (``--accuracy-frames`` frames each).

Several people (``--people N``, N > 1): instead, a capture of N people walking across each other
(:func:`mvpose.capture.synthetic.make_multi_person_capture`: detections shuffled, 5 % missed, a bystander in
one view, 2 px noise, 5 % outliers) of ``--seconds`` at ``--fps`` is processed with ``--people auto`` as the CLI
does it; the reference measured in the same run is the single-person path on a one-person capture of the same
length. Printed: both speeds and their ratio, the time of each stage, identity switches, and each person's
MPJPE next to the single-person path's on that person's own detections.

    python scripts/bench_capture.py                      # both parts, 2 cores
    python scripts/bench_capture.py --skip-accuracy --repeats 1
    python scripts/bench_capture.py --people 3 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mvpose.capture.pipeline import CaptureOptions, run_capture  # noqa: E402
from mvpose.capture.synthetic import make_synthetic_capture  # noqa: E402
from mvpose.geometry.calibration import load_calibration  # noqa: E402
from mvpose.metrics import mpjpe  # noqa: E402

RIG = REPO / "mvpose" / "calibration" / "examples" / "rig4.json"
STAGES = ("read", "select", "triangulate", "check", "temporal", "write")
PEOPLE_STAGES = ("read", "associate", "triangulate", "track", "check", "temporal", "write")


def limit_cores(cores: int) -> str:
    """Pin the process (and its children) to ``cores`` CPUs and torch to as many threads."""
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, available[:cores])
    torch.set_num_threads(cores)
    return f"{min(cores, len(available))} of {len(available)} cores"


def speed(tmp: Path, seconds: float, fps: float, repeats: int, workers: int, mode: str) -> dict:
    rig = load_calibration(RIG)
    frames = int(round(seconds * fps))
    t0 = time.perf_counter()
    make_synthetic_capture(tmp / "kp", rig, frames=frames, fps=fps, joint_set="body25", noise_px=2.0,
                           outlier_rate=0.05, seed=0)
    generate_s = time.perf_counter() - t0
    opts = CaptureOptions(mode=mode, max_gap=10, cutoff_hz=6.0, fps=fps, workers=workers, progress=False)
    runs = [run_capture(RIG, tmp / "kp", tmp / f"out{r}", opts).timings for r in range(repeats)]
    best = min(runs, key=lambda t: t["total_s"])
    return {"frames": frames, "cameras": len(rig), "files": frames * len(rig), "generate_s": generate_s,
            "mode": mode, "workers": workers, "fps": frames / best["total_s"], **best,
            "all_totals_s": [t["total_s"] for t in runs]}


def accuracy(tmp: Path, frames: int) -> list[dict]:
    rig = load_calibration(RIG)
    rows = []
    for noise, outliers in ((1.0, 0.0), (2.0, 0.0), (2.0, 0.05), (2.0, 0.10), (4.0, 0.10)):
        folder = tmp / f"acc_{noise}_{outliers}"
        gt = make_synthetic_capture(folder / "kp", rig, frames=frames, fps=60.0, joint_set="body25",
                                    noise_px=noise, outlier_rate=outliers, seed=1)
        row = {"noise_px": noise, "outlier_rate": outliers}
        for name, opts in (
            ("dlt", CaptureOptions(mode="dlt")),
            ("drop_worst", CaptureOptions(mode="drop_worst")),
            ("ransac", CaptureOptions(mode="ransac")),
            ("drop_worst+refine", CaptureOptions(mode="drop_worst", refine=True)),
            ("drop_worst+filter", CaptureOptions(mode="drop_worst", cutoff_hz=6.0)),
        ):
            opts.progress, opts.fps = False, 60.0
            res = run_capture(RIG, folder / "kp", folder / name, opts)
            ok = np.isfinite(res.points3d).all(-1)
            row[name] = mpjpe(res.points3d[ok], gt.points3d[ok])
            row[f"{name}_excluded"] = res.summary["excluded_view_fraction"]
        rows.append(row)
    return rows


def people(tmp: Path, n: int, seconds: float, fps: float, repeats: int, workers: int) -> dict:
    from mvpose.capture.multi import PeopleOptions, run_people_capture
    from mvpose.capture.synthetic import make_multi_person_capture, write_openpose_frames
    from mvpose.capture.tracking import identity_switches

    rig = load_calibration(RIG)
    frames = int(round(seconds * fps))
    t0 = time.perf_counter()
    gt = make_multi_person_capture(tmp / "multi", rig, people=n, frames=frames, fps=fps, joint_set="body25",
                                   noise_px=2.0, outlier_rate=0.05, miss_rate=0.05, seed=0)
    make_synthetic_capture(tmp / "one", rig, frames=frames, fps=fps, joint_set="body25", noise_px=2.0,
                           outlier_rate=0.05, seed=0)
    generate_s = time.perf_counter() - t0
    opts = CaptureOptions(max_gap=10, cutoff_hz=6.0, fps=fps, workers=workers, progress=False)
    runs, refs = [], []
    for r in range(repeats):  # interleaved, so that both see the same machine load
        refs.append(run_capture(RIG, tmp / "one", tmp / f"one_out{r}", opts).timings)
        res = run_people_capture(RIG, tmp / "multi", tmp / f"multi_out{r}", opts, PeopleOptions())
        runs.append(res.timings)
    best, ref = min(runs, key=lambda t: t["total_s"]), min(refs, key=lambda t: t["total_s"])
    # Identities against the truth: the true person of each identity's detections, per frame.
    T, M, V = res.person.shape
    t_idx, v_idx = np.arange(T)[:, None, None], np.arange(V)[None, None, :]
    truth = np.where(res.person >= 0, gt.truth[t_idx, v_idx, res.person.clip(0)], -1)  # (T, M, V)
    labels = np.where((truth >= 0).any(-1), np.max(np.where(truth >= 0, truth, -1), axis=-1), -1)
    mixed = int(((truth >= 0) & (truth != labels[..., None])).any(-1).sum())
    persons = []
    for m in range(M):
        g = int(np.bincount(labels[:, m][labels[:, m] >= 0]).argmax())
        X = res.points3d[:, m]
        ok = np.isfinite(X).all(-1)
        single_dir = tmp / f"single{g}"
        for v, name in enumerate(rig.names):
            write_openpose_frames(single_dir / name, gt.keypoints[:, v, g][:, None], prefix=name)
        s = run_capture(RIG, single_dir, tmp / f"single_out{g}", opts).points3d
        ok_s = np.isfinite(s).all(-1)
        persons.append({"id": res.ids[m], "truth": g, "frames_seen": int((res.person[:, m] >= 0).any(-1).sum()),
                        "mpjpe": mpjpe(X[ok], gt.points3d[:, g][ok]), "single_mpjpe": mpjpe(s[ok_s], gt.points3d[:, g][ok_s])})
    return {"people": n, "frames": frames, "cameras": len(rig), "files": frames * len(rig), "generate_s": generate_s,
            "fps": frames / best["total_s"], "reference_fps": frames / ref["total_s"],
            "ratio": best["total_s"] / ref["total_s"], **best, "reference_total_s": ref["total_s"],
            "reference": ref,
            "all_totals_s": [t["total_s"] for t in runs], "identities": M, "identity_switches": identity_switches(labels),
            "mixed_person_frames": mixed, "association": res.association, "persons": persons}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=60.0)
    ap.add_argument("--cores", type=int, default=2, help="CPU cores to run on (process affinity + torch threads)")
    ap.add_argument("--workers", type=int, default=2, help="processes reading JSON (as `--workers`)")
    ap.add_argument("--mode", default="drop_worst", choices=("dlt", "drop_worst", "ransac"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--accuracy-frames", type=int, default=600)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--people", default="1",
                    help="N > 1 (or a list N,M,...): benchmark the several-people path on N people instead (see above)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    cores = limit_cores(args.cores)
    out: dict = {"cores": cores, "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        counts = [int(n) for n in str(args.people).split(",")]
        for n in counts if max(counts) > 1 else []:
            p = people(tmp / f"p{n}", n, args.seconds, args.fps, args.repeats, args.workers)
            out[f"people{n}"] = p
            print(f"{p['people']} people ({cores}, {args.workers} reading workers, --people auto, gap filling + 6 Hz "
                  f"filter): {p['frames']} frames x {p['cameras']} cameras ({p['files']} JSON files)")
            print(f"  {p['fps']:.0f} frames/s; total {p['total_s']:.2f} s wall, {p['total_cpu_s']:.2f} s CPU "
                  f"(all runs: {', '.join(f'{t:.2f}' for t in p['all_totals_s'])} s wall)")
            print(f"  reference, single-person path on one person, same length: {p['reference_fps']:.0f} frames/s, "
                  f"{p['reference_total_s']:.2f} s wall, {p['reference']['total_cpu_s']:.2f} s CPU; ratio "
                  f"{p['ratio']:.2f}x the reference wall time, {p['total_cpu_s'] / p['reference']['total_cpu_s']:.2f}x "
                  "its CPU time")
            print(f"  {'stage':<12}{'wall s':>8}{'share':>8}{'CPU s':>8}   reference: {'wall s':>8}{'CPU s':>8}")
            ref = p["reference"]
            for k in PEOPLE_STAGES:
                r = "select" if k == "associate" else k
                rw, rc = (f"{ref[r + '_s']:8.3f}", f"{ref[r + '_cpu_s']:8.3f}") if r + "_s" in ref else ("-".rjust(8),) * 2
                print(f"  {k:<12}{p[k + '_s']:8.3f}{100 * p[k + '_s'] / p['total_s']:7.1f}%{p[k + '_cpu_s']:8.3f}"
                      f"   {'(select)' if r == 'select' else '':>10} {rw}{rc}")
            a = p["association"]
            print(f"  identities {p['identities']}, identity switches {p['identity_switches']}, frames where an "
                  f"identity mixes two true people {p['mixed_person_frames']}; detections {a['detections']}, "
                  f"fitting no one {a['unassigned_detections']}; tracks started {a['tracks_started']}, "
                  f"dropped {a['tracks_dropped']}")
            for q in p["persons"]:
                print(f"  {q['id']} (true person {q['truth']}): seen {q['frames_seen']} frames, MPJPE {q['mpjpe']:.2f} mm"
                      f" (single-person path on its own detections: {q['single_mpjpe']:.2f} mm)")
            args.skip_speed = args.skip_accuracy = True
        if not args.skip_speed:
            s = speed(tmp, args.seconds, args.fps, args.repeats, args.workers, args.mode)
            out["speed"] = s
            print(f"speed ({cores}, {args.workers} reading workers, mode {s['mode']}, gap filling + 6 Hz filter): "
                  f"{s['frames']} frames x {s['cameras']} cameras ({s['files']} JSON files)")
            print(f"  {s['fps']:.0f} frames/s; total {s['total_s']:.2f} s wall, {s['total_cpu_s']:.2f} s CPU "
                  f"(all runs: {', '.join(f'{t:.2f}' for t in s['all_totals_s'])} s wall)")
            print(f"  {'stage':<12}{'wall s':>8}{'share':>8}{'CPU s':>8}")
            for k in STAGES:
                print(f"  {k:<12}{s[k + '_s']:8.3f}{100 * s[k + '_s'] / s['total_s']:7.1f}%{s[k + '_cpu_s']:8.3f}")
        if not args.skip_accuracy:
            rows = accuracy(tmp, args.accuracy_frames)
            out["accuracy"] = rows
            names = ("dlt", "drop_worst", "ransac", "drop_worst+refine", "drop_worst+filter")
            print(f"MPJPE (mm), {args.accuracy_frames} frames, 4 cameras, BODY_25:")
            print(f"  {'noise px':>8} {'outliers':>8} " + " ".join(f"{n:>18}" for n in names) + "  excluded (drop_worst)")
            for r in rows:
                print(f"  {r['noise_px']:8.1f} {100 * r['outlier_rate']:7.0f}% " + " ".join(f"{r[n]:18.1f}" for n in names)
                      + f"  {100 * r['drop_worst_excluded']:6.1f} %")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
