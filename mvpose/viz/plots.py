"""Plots people would rather look at than read: per-action MPJPE bars, kept human tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: plots go to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mvpose.skeletons import H36M_ACTIONS  # noqa: E402

# Short labels as in the PPT paper's Table 5.
ACTION_SHORT = {
    "Directions": "Dir", "Discussion": "Disc", "Eating": "Eat", "Greeting": "Greet", "Phoning": "Phone",
    "Photo": "Photo", "Posing": "Pose", "Purchases": "Purch", "Sitting": "Sit", "SittingDown": "SitD",
    "Smoking": "Smoke", "Waiting": "Wait", "WalkDog": "WalkD", "Walking": "Walk", "WalkTogether": "WalkT",
}


GROUP_KEYS = ("per_action", "per_sequence")


def report_groups(rep: dict) -> tuple[str, dict]:
    """``("per_action", {...})`` (Human3.6M), ``("per_sequence", {...})`` (Ski-Pose) or ``("overall", {})``."""
    mp = rep.get("mpjpe_mm") or {}
    for key in GROUP_KEYS:
        if isinstance(mp.get(key), dict):
            return key, mp[key]
    return "overall", {}


def load_report(path: str | Path) -> dict:
    """Read an evaluation report JSON and check it has an MPJPE (broken down per action / sequence or not).

    Raises ValueError naming the file when it is unreadable or has no ``mpjpe_mm.overall`` (e.g. COCO).
    """
    path = Path(path)
    try:
        rep = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read evaluation report ({err})") from err
    mp = rep.get("mpjpe_mm") if isinstance(rep, dict) else None
    if not isinstance(mp, dict) or not isinstance(mp.get("overall"), (int, float)):
        note = rep.get("note") if isinstance(rep, dict) else None
        raise ValueError(f"{path}: field 'mpjpe_mm.overall' missing" + (f" ({note})" if note else "; is this an `mvpose evaluate` report?"))
    return rep


def plot_mpjpe_per_action(reports: Sequence[dict], labels: Sequence[str], out: str | Path, title: str | None = None) -> Path:
    """Grouped bars of MPJPE per action (Human3.6M) or per sequence (Ski-Pose), plus the average.

    Args:
        reports: evaluation reports (``mpjpe_mm.overall`` and ``mpjpe_mm.per_action`` or ``per_sequence``;
            with neither only the average is drawn).
        labels: one legend label per report.
        out: PNG path.

    Raises ValueError when the reports mix breakdowns (actions and sequences).
    """
    kinds = {report_groups(r)[0] for r in reports}
    if len(kinds) > 1:
        raise ValueError(f"reports mix MPJPE breakdowns {sorted(kinds)}: plot Human3.6M and Ski-Pose reports separately")
    kind = kinds.pop() if kinds else "overall"
    groups = [report_groups(r)[1] for r in reports]
    order = [a for a in H36M_ACTIONS.values() if any(a in g for g in groups)] if kind == "per_action" else []
    extra = sorted({a for g in groups for a in g} - set(order))
    actions = order + extra
    cols = [ACTION_SHORT.get(a, a) for a in actions] + ["Avg"]
    n = len(reports)
    width = 0.8 / max(n, 1)
    x = np.arange(len(cols))
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(cols) * max(1, n / 2)), 4.2))
    for i, (rep, group, label) in enumerate(zip(reports, groups, labels)):
        vals = [group.get(a, np.nan) for a in actions] + [rep["mpjpe_mm"]["overall"]]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=label)
        ax.bar_label(bars, labels=[f"{v:.0f}" if np.isfinite(v) else "" for v in vals], fontsize=6, padding=1)
    ax.set_xticks(x, cols, rotation=45, ha="right")
    ax.set_ylabel("MPJPE (mm)")
    ax.set_title(title or {"per_action": "MPJPE per action", "per_sequence": "MPJPE per sequence"}.get(kind, "MPJPE"))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def draw_tokens(
    image: np.ndarray, kept: np.ndarray, grid_hw: tuple[int, int], joints: np.ndarray | None = None, alpha: float = 0.55
) -> np.ndarray:
    """Darken the pruned tokens of an image so the kept human area stands out.

    Args:
        image: (H, W, 3) uint8 RGB crop (the network input).
        kept: (K,) indices of kept tokens in the row-major token grid.
        grid_hw: token grid (h, w).
        joints: optional (J, 2) crop pixels drawn as dots.

    Returns:
        (H, W, 3) uint8 image.
    """
    H, W = image.shape[:2]
    h, w = grid_hw
    mask = np.zeros(h * w, dtype=bool)
    mask[np.asarray(kept, dtype=np.int64)] = True
    mask = mask.reshape(h, w)
    full = np.kron(mask, np.ones((int(np.ceil(H / h)), int(np.ceil(W / w))), dtype=bool))[:H, :W]
    out = image.astype(np.float32)
    out[~full] = out[~full] * (1 - alpha) + np.array([20, 20, 60], np.float32) * alpha
    # Token grid lines make the patch structure readable.
    out[:: max(H // h, 1), :] *= 0.85
    out[:, :: max(W // w, 1)] *= 0.85
    img = np.ascontiguousarray(out.clip(0, 255).astype(np.uint8))
    if joints is not None:
        import cv2

        for x, y in np.asarray(joints):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(img, (int(round(x)), int(round(y))), 2, (255, 230, 0), -1, cv2.LINE_AA)
    return img


def plot_token_grid(images: Sequence[np.ndarray], titles: Sequence[str], out: str | Path, cols: int = 4) -> Path:
    """Save images (already drawn with :func:`draw_tokens`) as one figure."""
    n = len(images)
    cols = min(cols, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, title in zip(axes.ravel(), images, titles):
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
