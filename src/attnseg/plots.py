"""matplotlib, optional (`pip install 'attnseg[plot]'`): one import point with a one-line error when missing;
the plots attnseg writes (confusion matrix, per-class IoU bars, training curves)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


class PlotUnavailable(ImportError):
    pass


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("plots need matplotlib: pip install 'attnseg[plot]'") from None
    return plt


def _save(fig, path) -> Path:
    from .io import atomic_write

    plt = pyplot()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def confusion_plot(confusion: np.ndarray, class_names: list[str], path) -> Path:
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction) as a heatmap."""
    plt = pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("prediction"), ax.set_ylabel("ground truth")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.01:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title("confusion matrix (% of each ground-truth class)")
    fig.tight_layout()
    return _save(fig, path)


def iou_bars(iou: list[float], class_names: list[str], path, title: str = "per-class IoU") -> Path:
    plt = pyplot()
    v = [100 * (x if x == x else 0.0) for x in iou]  # nan (absent class) drawn as 0
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * len(v), 3.6))
    ax.bar(range(len(v)), v, color="#3b6fb6")
    for i, x in enumerate(iou):
        if x != x:  # nan: the class is in neither the ground truth nor the prediction
            ax.text(i, 2, "absent", rotation=90, ha="center", va="bottom", fontsize=7, color="#777")
    ax.set_xticks(range(len(v)), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100), ax.set_ylabel("IoU (%)")
    ax.set_title(f"{title} (mean {np.nanmean([x for x in iou]) * 100:.2f}%)")
    fig.tight_layout()
    return _save(fig, path)


def training_curves(metrics_csv, path) -> Path:
    """loss, learning rate and validation mIoU over iterations, from the run's metrics.csv."""
    plt = pyplot()
    series: dict[str, list[tuple[int, float]]] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            try:
                series.setdefault(row["key"], []).append((int(row["iter"]), float(row["value"])))
            except (KeyError, ValueError):
                continue
    panels = [k for k in ("loss", "lr", "val_mIoU") if k in series]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.2))
    for ax, key in zip(np.atleast_1d(axes), panels):
        it, val = zip(*series[key])
        val = [100 * v for v in val] if key == "val_mIoU" else val
        ax.plot(it, val, marker="o" if key == "val_mIoU" else None, lw=1.2)
        ax.set_title({"loss": "training loss", "lr": "learning rate", "val_mIoU": "validation mIoU (%)"}[key])
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
