"""Matplotlib figures: BoxAcc-vs-threshold curves, map overlays, and the method comparison grid."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

PRED_COLOR = "#00e5ff"
GT_COLOR = "#ffea00"


def plot_curves(curves: dict[str, pd.DataFrame], path: Path, title: str = "BoxAcc vs threshold") -> Path:
    """Plot BoxAcc (V2, IoU 30/50/70 and V1 IoU 50) against the threshold for one or more runs.

    Labels "method (kind)" share a colour per method and a line style per kind. Up to five curves get a legend
    in each panel with each curve's maximum; more get one legend below the panels (the maxima are the dots).
    """
    styles = curve_styles(list(curves))
    shared_legend = len(curves) > 5
    fig, axes = plt.subplots(1, 4, figsize=(16, 4 + (0.25 * ((len(curves) + 3) // 4) if shared_legend else 0)),
                             sharey=True)
    columns = [("v1_iou50", "MaxBoxAcc (V1), IoU 50"), ("v2_iou30", "V2, IoU 30"),
               ("v2_iou50", "V2, IoU 50"), ("v2_iou70", "V2, IoU 70")]
    for ax, (col, name) in zip(axes, columns):
        for label, df in curves.items():
            if col in df:
                k = int(df[col].to_numpy().argmax())
                shown = label if shared_legend else f"{label} (max {df[col].iloc[k]:.1f})"
                color, dashes = styles[label]
                ax.plot(df["threshold"], df[col], label=shown, color=color, linestyle=dashes, lw=1.3)
                ax.plot(df["threshold"].iloc[k], df[col].iloc[k], "o", color=color, ms=4)
        ax.set_title(name)
        ax.set_xlabel("threshold τ")
        ax.grid(alpha=0.3)
        if not shared_legend:
            ax.legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel("BoxAcc (%)")
    axes[0].set_ylim(0, 100)
    fig.suptitle(title)
    if shared_legend:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
        rows = (len(labels) + 5) // 6
        fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))
    else:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_styles(labels: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Return (colour, line style) per label: one colour per group (text before " ("), one style per member."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label.split(" (")[0], []).append(label)
    palette = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
    dashes = ("-", "--", ":", "-.")
    return {label: (palette[g % len(palette)], dashes[i % len(dashes)])
            for g, members in enumerate(groups.values()) for i, label in enumerate(members)}


def _boxes(ax: Axes, boxes: np.ndarray, color: str, lw: float = 1.8, scale: tuple[float, float] = (1.0, 1.0)) -> None:
    sx, sy = scale
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        ax.add_patch(Rectangle((x0 * sx - 0.5, y0 * sy - 0.5), (x1 - x0 + 1) * sx, (y1 - y0 + 1) * sy,
                               fill=False, edgecolor=color, linewidth=lw))


def draw_overlay(
    ax: Axes,
    image: np.ndarray,
    score_map: np.ndarray | None,
    pred_boxes: np.ndarray | None = None,
    gt_boxes: np.ndarray | None = None,
    title: str | None = None,
    alpha: float = 0.5,
) -> None:
    """Draw an image (H, W, 3 in [0, 1]) with its score map (h, w) as a heatmap and boxes on one axis."""
    ax.imshow(image, interpolation="bilinear")
    h, w = image.shape[:2]
    if score_map is not None:
        ax.imshow(score_map, cmap="jet", alpha=alpha, vmin=0, vmax=1, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                  interpolation="bilinear")
        mh, mw = score_map.shape
        scale = (w / mw, h / mh)
    else:
        scale = (1.0, 1.0)
    if gt_boxes is not None and len(gt_boxes):
        _boxes(ax, gt_boxes, GT_COLOR, scale=scale)
    if pred_boxes is not None and len(pred_boxes):
        _boxes(ax, pred_boxes, PRED_COLOR, scale=scale)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def save_overlay(path: Path, image: np.ndarray, score_map: np.ndarray, pred_boxes: np.ndarray | None,
                 gt_boxes: np.ndarray | None, title: str) -> Path:
    """Save one image's overlay (heatmap, predicted box in cyan, GT boxes in yellow) as a PNG."""
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(4.0, 4.0 * h / w + 0.4))
    draw_overlay(ax, image, score_map, pred_boxes, gt_boxes, title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_grid(
    path: Path,
    images: Sequence[np.ndarray],
    columns: dict[str, Sequence[np.ndarray]],
    pred_boxes: dict[str, Sequence[np.ndarray]],
    gt_boxes: Sequence[np.ndarray],
    row_titles: Sequence[str],
) -> Path:
    """Save a grid: rows are images; columns are the input, then each method's map with its boxes."""
    n_rows, n_cols = len(images), 1 + len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.1 * n_cols, 2.1 * n_rows), squeeze=False)
    for r in range(n_rows):
        draw_overlay(axes[r, 0], images[r], None, None, gt_boxes[r], row_titles[r] if r < len(row_titles) else None)
        for c, (name, maps) in enumerate(columns.items(), start=1):
            draw_overlay(axes[r, c], images[r], maps[r], pred_boxes[name][r], gt_boxes[r], name if r == 0 else None)
    fig.text(0.01, 0.002, "yellow: ground truth   cyan: predicted box at the best validation threshold", fontsize=8)
    fig.tight_layout(rect=(0, 0.015, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
