"""Plots people would rather look at than read: per-action MPJPE bars, kept human tokens with the
predicted and true 2D poses, and triangulated 3D skeletons beside the truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: plots go to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mvpose.capture.io import atomic_path  # noqa: E402
from mvpose.skeletons import H36M_ACTIONS  # noqa: E402

# Short labels as in the PPT paper's Table 5.
ACTION_SHORT = {
    "Directions": "Dir", "Discussion": "Disc", "Eating": "Eat", "Greeting": "Greet", "Phoning": "Phone",
    "Photo": "Photo", "Posing": "Pose", "Purchases": "Purch", "Sitting": "Sit", "SittingDown": "SitD",
    "Smoking": "Smoke", "Waiting": "Wait", "WalkDog": "WalkD", "Walking": "Walk", "WalkTogether": "WalkT",
}


GROUP_KEYS = ("per_action", "per_sequence")


def save_figure(fig: Any, out: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``out`` atomically and close it; returns the path written.

    A name without an extension gets ``.png`` (matplotlib would add it silently, and the caller would report a
    file that does not exist).

    Raises:
        ValueError: an extension matplotlib cannot write (names the supported ones).
    """
    out = Path(out)
    if not out.suffix:
        out = out.with_name(out.name + ".png")
    fmt = out.suffix[1:].lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        plt.close(fig)
        raise ValueError(f"{out}: cannot write a .{fmt} picture; use one of "
                         f"{', '.join('.' + k for k in sorted(supported))}")
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt)
    finally:
        plt.close(fig)
    return out


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
    return save_figure(fig, out, dpi=130)


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


def plot_token_grid(images: Sequence[np.ndarray], titles: Sequence[str], out: str | Path, cols: int = 4,
                    suptitle: str | None = None) -> Path:
    """Save images (already drawn with :func:`draw_tokens`) as one figure; ``titles`` are wrapped to the panel width."""
    import textwrap

    n = len(images)
    cols = min(cols, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, title in zip(axes.ravel(), images, titles):
        ax.imshow(img)
        ax.set_title(textwrap.fill(title, 30), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out, dpi=120)


# Matplotlib colours of the two sides (the synthetic preview's convention: right orange, left blue).
SIDE_COLOURS = {"r": "tab:orange", "l": "tab:blue", "m": "tab:green"}


def _limb_side(names: Sequence[str], a: int, b: int) -> str:
    sides = {n[0] for n in (names[a], names[b]) if n[0] in "rl" and n != "root"}
    return "r" if "r" in sides else "l" if "l" in sides else "m"


def draw_pose_2d(ax: Any, joints: np.ndarray, limbs: Sequence[tuple[int, int]], names: Sequence[str], truth: bool = False,
                 hidden: np.ndarray | None = None) -> None:
    """Draw one 2D skeleton on a matplotlib image axis.

    Args:
        joints: (J, 2) pixels of the image shown on ``ax``.
        limbs, names: the skeleton's bones (joint index pairs) and joint names (sides from ``l`` / ``r``).
        truth: the ground truth, drawn as thin white dashed lines; otherwise the prediction, solid
            lines coloured by side (right orange, left blue).
        hidden: (J,) bool, joints hidden in this view: a red ``x`` (drawn with the truth).
    """
    P = np.asarray(joints, dtype=np.float64)
    for a, b in limbs:
        if truth:
            ax.plot(P[[a, b], 0], P[[a, b], 1], color="white", lw=1.0, ls="--", alpha=0.9)
        else:
            ax.plot(P[[a, b], 0], P[[a, b], 1], color=SIDE_COLOURS[_limb_side(names, a, b)], lw=1.6)
    if not truth:
        ax.scatter(P[:, 0], P[:, 1], s=6, color="yellow", zorder=3)
    elif hidden is not None and np.any(hidden):
        ax.scatter(P[hidden, 0], P[hidden, 1], s=30, marker="x", color="red", lw=1.5, zorder=4)


def plot_pose_panels(panels: Sequence[dict], out: str | Path, cols: int, limbs: Sequence[tuple[int, int]],
                     names: Sequence[str], row_labels: Sequence[str] | None = None, suptitle: str | None = None) -> Path:
    """A grid of crops with the kept tokens, the predicted pose and the true pose.

    Args:
        panels: one dict per panel, row by row: ``image`` (H, W, 3) uint8 RGB crop, ``title``,
            optional ``kept`` (K,) kept token indices and ``grid`` (h, w) (pruned tokens darkened,
            see :func:`draw_tokens`), ``truth`` (J, 2) and ``pred`` (J, 2) crop pixels, ``hidden`` (J,) bool.
        out: PNG path.
        cols: panels per row (the views).
        limbs, names: the skeleton (see :func:`draw_pose_2d`).
        row_labels: a label left of each row (e.g. the method).
        suptitle: figure title; a legend of the marks is added below it.

    Returns:
        ``out``.
    """
    import textwrap

    n = len(panels)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + (0.5 if row_labels else 0), 3.5 * rows + 0.7), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, pnl in zip(axes.ravel(), panels):
        img = pnl["image"]
        if pnl.get("kept") is not None:
            img = draw_tokens(img, pnl["kept"], tuple(pnl["grid"]))
        ax.imshow(img)
        if pnl.get("truth") is not None:
            draw_pose_2d(ax, pnl["truth"], limbs, names, truth=True, hidden=pnl.get("hidden"))
        if pnl.get("pred") is not None:
            draw_pose_2d(ax, pnl["pred"], limbs, names)
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        ax.set_title(textwrap.fill(pnl.get("title", ""), 38), fontsize=8.5)
    left = 0.0
    if row_labels:
        left = 0.5 / (2.9 * cols + 0.5)
        for r, label in enumerate(row_labels[:rows]):
            y = 1 - (r + 0.5) / rows
            fig.text(0.005, 0.06 + 0.86 * y, textwrap.fill(label, 14), rotation=90, va="center", ha="left", fontsize=9)
    legend = ("dashed white: truth; coloured: prediction (right orange, left blue); red x: joint hidden in this view; "
              "dark: pruned tokens")
    fig.suptitle((suptitle + "\n" if suptitle else "") + legend, fontsize=9)
    fig.tight_layout(rect=(left, 0, 1, 0.97))
    return save_figure(fig, out, dpi=110)


def plot_skeletons_3d(truth: np.ndarray, preds: dict[str, np.ndarray], limbs: Sequence[tuple[int, int]], names: Sequence[str],
                      out: str | Path, title: str | None = None) -> Path:
    """One sample in 3D: the true skeleton, then each method's triangulated skeleton over the truth (grey).

    Args:
        truth: (J, 3) world mm (z up).
        preds: label -> (J, 3) world mm; the panel title gives its MPJPE against ``truth``.
        limbs, names: the skeleton (sides coloured as in :func:`draw_pose_2d`).
        out: PNG path.

    Returns:
        ``out``.
    """
    truth = np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(truth).all(-1)
    mid = (truth[ok].max(0) + truth[ok].min(0)) / 2
    half = max((truth[ok].max(0) - truth[ok].min(0)).max() / 2, 300.0) * 1.15
    n = 1 + len(preds)
    fig = plt.figure(figsize=(3.9 * n, 4.4))

    def draw(ax, P, grey: bool) -> None:
        for a, b in limbs:
            if np.isfinite(P[[a, b]]).all():
                colour = "0.65" if grey else SIDE_COLOURS[_limb_side(names, a, b)]
                ax.plot(*P[[a, b]].T, color=colour, lw=1.2 if grey else 2.2, ls="--" if grey else "-")

    panels = [("ground truth", truth)] + list(preds.items())
    for i, (label, P) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        P = np.asarray(P, dtype=np.float64)
        if i:
            draw(ax, truth, grey=True)
            err = np.linalg.norm(P - truth, axis=-1)
            label = f"{label}\nMPJPE {np.nanmean(err):.0f} mm"
        draw(ax, P, grey=False)
        ax.set(xlim=(mid[0] - half, mid[0] + half), ylim=(mid[1] - half, mid[1] + half), zlim=(mid[2] - half, mid[2] + half))
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=12, azim=-60)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=6)
    fig.suptitle((title + "\n" if title else "") + "grey dashed: truth; right orange, left blue", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    return save_figure(fig, out, dpi=110)
