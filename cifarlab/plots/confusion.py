"""A trained model's confusion matrix on the test set (one figure per trained model).

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cifarlab.plots import style as plotting
from cifarlab.study.results import read_json, status_text


def plot_confusion(metrics_json: str | Path, out_png: str | Path) -> None:
    """The confusion matrix as row percentages (each true class sums to 100 %)."""
    metrics = read_json(metrics_json)
    classes = metrics["classes"]
    side = (0.45 * len(classes) + 2.0, 0.45 * len(classes) + 1.2)
    fig, axes = plotting.figure(size=side, texts=classes)
    ax = axes[0, 0]
    note = None if metrics["status"] == "ok" else status_text(metrics)
    if note or metrics.get("confusion_matrix") is None:
        # No predictions to show: say why rather than draw an empty matrix that looks like a result.
        ax.text(0.5, 0.5, f"{metrics['run']}: no test predictions\n{note or ''}", ha="center", va="center",
                color="#C00000", transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        plotting.save(fig, out_png)
        return
    counts = np.array(metrics["confusion_matrix"], dtype=float)
    percent = 100 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    tested = counts.sum(axis=1) > 0  # a class without test images has no row to show, not 0 %
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{percent[i, j]:.0f}" if tested[i] else "-", ha="center", va="center", fontsize=6,
                    color="white" if percent[i, j] > 50 else "black")  # fmt: skip
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    rows = [c if tested[i] else f"{c} (no test images)" for i, c in enumerate(classes)]
    ax.set_yticks(range(len(classes)), rows)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.grid(False)
    ax.set_title(f"{metrics['run']}: test accuracy {metrics['test_accuracy']:.2f} %")
    fig.colorbar(image, ax=ax, label="% of the true class", shrink=0.8)
    plotting.save(fig, out_png)
