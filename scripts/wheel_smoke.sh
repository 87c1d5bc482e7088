#!/usr/bin/env bash
# Wheel smoke test: build the mvpose wheel from this checkout, install it into a fresh virtual
# environment and run the command line from a folder outside the checkout, checking output values.
# Any failure stops the script with a non-zero exit status and a "[wheel-smoke] FAILED" line.
#
#   bash scripts/wheel_smoke.sh            # called by .ci/run after the tests
#   KEEP=1 bash scripts/wheel_smoke.sh     # keep the work folder (printed) for inspection
#
# The environment is made with --system-site-packages so that torch and the other large dependencies
# already installed (scripts/setup.sh) are reused: pip still resolves the wheel's own requirements
# against them (an unmet or conflicting one is installed or fails), and scripts/wheel_check.py fails
# when mvpose imports a distribution its pyproject does not declare or any mvpose module or package
# file is found outside the environment (e.g. through the checkout's editable install).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OMP_WAIT_POLICY=PASSIVE
unset PYTHONPATH
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mvpose-wheel-smoke.XXXXXX")"
FLOPS_PID=""
cleanup() {
    if [[ -n "$FLOPS_PID" ]]; then kill "$FLOPS_PID" 2>/dev/null || true; fi  # the background step, if still running
    if [[ "${KEEP:-0}" == "1" ]]; then echo "[wheel-smoke] work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'echo "[wheel-smoke] FAILED (line $LINENO): $BASH_COMMAND" >&2' ERR
START=$SECONDS
step() { echo "[wheel-smoke] $(( SECONDS - START )) s: $*"; }

step "copying the checkout's files (git: tracked and untracked, not ignored) to $WORK/src"
mkdir -p "$WORK/src" "$WORK/dist" "$WORK/run"
if git -C "$REPO" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z -co --exclude-standard \
        | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
else  # not a git checkout (e.g. an unpacked archive): everything but build outputs and local data
    tar -C "$REPO" --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.venv \
        --exclude=./runs --exclude=./data -cf - . | tar -xf - -C "$WORK/src"
fi

step "building the wheel"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
WHEEL=("$WORK"/dist/mvpose-*.whl)

step "checking that the wheel holds every file of mvpose/"
"$PY" - "$WHEEL" "$WORK/src" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, src = sys.argv[1], Path(sys.argv[2])
inside = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("mvpose/")}
source = {p.relative_to(src).as_posix() for p in (src / "mvpose").rglob("*")
          if p.is_file() and "__pycache__" not in p.parts}
if inside != source:
    sys.exit(f"[wheel-smoke] FAILED: wheel and mvpose/ differ; missing from the wheel: {sorted(source - inside)}; "
             f"extra in the wheel: {sorted(inside - source)}")
print(f"[wheel-smoke] {len(inside)} files, as in mvpose/")
PY

step "installing it into a fresh virtual environment"
"$PY" -m venv --system-site-packages --without-pip "$WORK/venv"  # no pip copy: 15 s less
VPY="$WORK/venv/bin/python"
"$PY" -m pip --python "$VPY" install --quiet "$WHEEL"  # pip >= 22.3; resolves the wheel's requirements
# When the base interpreter already holds mvpose of this version (a `pip install .` there), pip
# skips the wheel above ("already installed"); this puts it into the new environment regardless.
"$PY" -m pip --python "$VPY" install --quiet --no-deps --force-reinstall "$WHEEL"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export PATH="$WORK/venv/bin:$PATH"
cd "$WORK/run"  # outside the checkout from here on
[[ "$(command -v mvpose)" == "$WORK/venv/bin/mvpose" ]] || { echo "[wheel-smoke] FAILED: mvpose is $(command -v mvpose)" >&2; exit 1; }

step "modules, package data and declared dependencies"
"$VPY" "$REPO/scripts/wheel_check.py" --site "$SITE"

step "mvpose flops, in the background (the slowest step, one thread; CI has two cores)"
mvpose flops --json > flops.json 2> flops.err &
FLOPS_PID=$!

step "mvpose calibrate convert: shipped Human3.6M rig S9 to Pose2Sim TOML and back"
CAL="$("$VPY" -c 'from mvpose.resources import resource_path as r; print(r("calibration"))')"
mvpose calibrate convert "$CAL/h36m.json" s9.toml --to pose2sim --rig S9 > /dev/null
"$VPY" - "$CAL/h36m.json" <<'PY'
import sys
import numpy as np
from mvpose.geometry.calibration import read_calibration
a = read_calibration(sys.argv[1])["S9"]
b = next(iter(read_calibration("s9.toml").values()))
err = max(float(np.abs(np.asarray(x[k], float) - np.asarray(y[k], float)).max()) for x, y in zip(a, b)
          for k in ("K", "R", "t"))
if len(a) != 4 or len(b) != 4 or err > 1e-3:
    sys.exit(f"[wheel-smoke] FAILED: S9 round trip: {len(a)} / {len(b)} cameras, max difference {err}")
print(f"[wheel-smoke] S9: 4 cameras, K/R/t round trip within {err:.1e}")
PY

step "mvpose synth (tiny) and mvpose train --pipeline demo_mv_ppt, one epoch"
mvpose synth --out data/tiny --subjects 1,9 --actions 2 --frames 8 --image-size 128 --workers 1
mvpose train --pipeline demo_mv_ppt --data-root data/tiny --set train.epochs=1 --set train.workers=0 \
    --set train.max_steps_per_epoch=2 --out runs/tiny --device cpu 2> train.err || { cat train.err >&2; false; }
"$VPY" - <<'PY'
import csv, math, sys
import torch
rows = list(csv.DictReader(open("runs/tiny/log.csv")))
ckpt = torch.load("runs/tiny/last.pt", map_location="cpu", weights_only=False)
cfg = ckpt["config"]
loss, jdr, mpjpe = (float(rows[-1][k]) for k in ("train_loss", "val_jdr", "val_mpjpe_mm"))
if (len(rows) != 1 or not 0 < loss < 1 or not 0 <= jdr <= 1 or not math.isfinite(mpjpe)
        or cfg.get("name") != "demo_mv_ppt" or cfg["model"]["name"] != "mv_ppt_tiny"):
    sys.exit(f"[wheel-smoke] FAILED: training log {rows}, checkpoint config name {cfg.get('name')!r}")
print(f"[wheel-smoke] 1 epoch: train loss {loss:.4f}, val JDR {jdr:.3f}, val MPJPE {mpjpe:.0f} mm")
PY

step "mvpose triangulate: noise-free synthetic capture seen by the shipped example rig"
"$VPY" - "$CAL/examples/rig4.json" <<'PY'
import sys
import numpy as np
from mvpose.capture.synthetic import make_synthetic_capture
from mvpose.geometry.calibration import load_calibration
gt = make_synthetic_capture("cap/kp", load_calibration(sys.argv[1]), frames=30, fps=30.0, joint_set="body25",
                            noise_px=0.0, seed=0)
np.save("cap/gt.npy", gt.points3d)
PY
mvpose triangulate --calibration "$CAL/examples/rig4.json" --keypoints cap/kp --out cap/out --fps 30 > cap.log
"$VPY" - <<'PY'
import sys
import h5py
import numpy as np
gt = np.load("cap/gt.npy")
with h5py.File("cap/out/poses3d.h5") as f:
    est = f["poses3d"][:]
err = np.linalg.norm(est - gt, axis=-1)
if est.shape != gt.shape or np.isnan(err).any() or err.max() > 0.1:
    sys.exit(f"[wheel-smoke] FAILED: triangulation {est.shape} vs {gt.shape}, max error {np.nanmax(err)} mm")
print(f"[wheel-smoke] {gt.shape[0]} frames x {gt.shape[1]} joints, max error {err.max():.4f} mm")
PY

step "mvpose flops: parameter counts against the papers' figures"
wait "$FLOPS_PID" || { cat flops.err >&2; false; }
FLOPS_PID=""
"$VPY" - <<'PY'
import json, sys
rows = json.load(open("flops.json"))
checked = [r for r in rows if r.get("paper_params_m")]
bad = [(r["model"], r["params_m"], r["paper_params_m"]) for r in checked
       if abs(r["params_m"] - r["paper_params_m"]) > 0.06 * r["paper_params_m"]]
if len(checked) < 3 or bad:
    sys.exit(f"[wheel-smoke] FAILED: flops table: {len(checked)} rows with a paper figure; off by > 6 %: {bad}")
print(f"[wheel-smoke] {len(checked)} parameter counts within 6 % of the papers'")
PY

step "passed"
