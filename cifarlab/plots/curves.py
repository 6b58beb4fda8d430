"""A run's learning curves: loss and accuracy per epoch (one figure per trained model).

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from cifarlab.plots import style as plotting
from cifarlab.study.results import read_history, read_json, status_text


def plot_curves(history_csv: str | Path, metrics_json: str | Path, out_png: str | Path) -> None:
    """Loss and accuracy per epoch: train, validation (when the run holds images out) and test.

    A widening gap between the train and held-out curves reads as overfitting. The chosen epoch
    (the model evaluated: best validation accuracy, or the last epoch) is marked; the per-epoch
    test curve is labelled as such, since nothing is chosen on it. A diverged run says so in red
    where its curves stop.
    """
    history = read_history(history_csv)
    metrics = read_json(metrics_json)
    colour = plotting.model_colour(metrics["model"])
    epochs = [row["epoch"] for row in history]
    validated = bool(metrics.get("validation_images"))
    chosen = "chosen epoch (best validation)" if validated else "chosen epoch (the last)"
    fig, axes = plotting.figure(ncols=2)
    for ax, key, label in (
        (axes[0, 0], "loss", "cross-entropy (nats)"),
        (axes[0, 1], "accuracy", "accuracy (%)"),
    ):
        curve = {
            part: np.array([row[f"{part}_{key}"] for row in history], dtype=float)
            for part in ("train", "val", "test")
        }
        ax.plot(epochs, curve["train"], "--o", color=colour, markersize=3, label="train")
        if validated:
            ax.plot(epochs, curve["val"], "-s", color=colour, markersize=3, alpha=0.6, label="validation")
        ax.plot(epochs, curve["test"], "-o", color=colour, markersize=3, label="test (per epoch)")
        if metrics.get("best_epoch") is not None:
            ax.axvline(metrics["best_epoch"], color="#999999", linestyle=":", linewidth=1, label=chosen)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    note = None if metrics["status"] == "ok" else status_text(metrics)
    last = max(epochs, default=1)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, last + 0.5)
        if note and metrics.get("diverged"):
            ax.axvline(metrics["diverged"]["epoch"], color="#C00000", linestyle="--", linewidth=1)
    title = metrics["run"]
    if metrics.get("test_accuracy") is not None:
        title += f": test accuracy {metrics['test_accuracy']:.2f} %"
        title += (
            f" at epoch {metrics['best_epoch']} of {len(history)} (best validation)"
            if validated
            else f" after {len(history)} epochs"
        )
    if note:
        title += f": {note}"
    fig.suptitle(title, color="#C00000" if note else "black")
    plotting.save(fig, out_png)
