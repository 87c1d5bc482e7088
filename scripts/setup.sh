#!/usr/bin/env bash
# Install mvpose and its dependencies into the active Python, idempotently.
#
# torch is pinned here (not in pyproject.toml) to the CPU build 2.13.0 that this workplace ships as a
# local wheel; an unpinned torch would pull several GB of CUDA packages. GPU users: install your own
# torch build first (>= 2.1) and run with MVPOSE_KEEP_TORCH=1 to leave it alone.
# Second runs take about a second: nothing is installed when everything already imports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

have_torch() { "$PY" -c "import importlib.util as u; assert u.find_spec('torch')" >/dev/null 2>&1; }
if [[ "${MVPOSE_KEEP_TORCH:-0}" != "1" ]] && ! have_torch; then
    echo "[setup] installing torch==2.13.0 (CPU build)"
    "$PY" -m pip install --quiet "torch==2.13.0"
fi

# Is this checkout installed (editable) with its test extras and every dependency importable?
# (-I: do not let the current folder on sys.path pass for an installed package; the `mvpose`
# console script must exist too.)
if command -v mvpose >/dev/null 2>&1 && MVPOSE_ROOT="$PWD" "$PY" -I - <<'PYCHECK' >/dev/null 2>&1
import importlib.util, os, pathlib
spec = importlib.util.find_spec("mvpose")
assert pathlib.Path(spec.origin).resolve().parents[1] == pathlib.Path(os.environ["MVPOSE_ROOT"]).resolve()
for mod in ("numpy", "scipy", "h5py", "cv2", "kornia", "pycocotools", "click", "matplotlib", "yaml",
            "tqdm", "tomli_w", "cdflib", "pytest", "hypothesis"):
    assert importlib.util.find_spec(mod) is not None, mod
PYCHECK
then
    exit 0
fi
echo "[setup] installing mvpose (editable) with test extras"
"$PY" -m pip install --quiet -e ".[test]"
