"""Every run's learning curves on one dataset, side by side.

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from cifarlab.plots import style as plotting
from cifarlab.plots.seeds import FAILED_COLOUR, averaged_seeds, mean_curve, seed_histories
from cifarlab.study.results import status_text


def plot_learning_curves(
    metrics_paths: Sequence[str | Path], history_paths: Sequence[str | Path], out_png: str | Path
) -> None:
    """Small multiples, one panel per run: train and test accuracy per epoch (the mean over its
    seeds; each seed a thin line), on one shared y axis. history_paths: aligned with metrics_paths.

    The shaded area between the mean curves is the train-test gap, so overfitting shows as a
    widening band. A panel of a run with a diverged seed says so in red.
    """
    runs = seed_histories(metrics_paths, history_paths)
    ncols = min(4, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    fig, axes = plotting.figure(ncols=ncols, nrows=nrows, size=(2.6, 2.0), sharey=True, layout="constrained")
    for ax, (run, with_history) in zip(axes.flat, runs.items(), strict=False):
        seeds = [m for m, _ in with_history]
        colour = plotting.model_colour(seeds[0]["model"])
        for _, history in with_history if len(seeds) > 1 else ():
            for key, line in (("train_accuracy", "--"), ("test_accuracy", "-")):
                ax.plot([h["epoch"] for h in history], [h[key] for h in history], line, color=colour,
                        linewidth=0.5, alpha=0.4)  # fmt: skip
        epochs, train, _ = mean_curve(averaged_seeds(with_history), "train_accuracy")
        _, test, _ = mean_curve(averaged_seeds(with_history), "test_accuracy")
        ax.plot(epochs, train, "--", color=colour, label="train")
        ax.plot(epochs, test, "-", color=colour, label="test")
        pairs = [
            (e, a, b)
            for e, a, b in zip(epochs, train, test, strict=True)
            if math.isfinite(a) and math.isfinite(b)
        ]
        if pairs:
            e, a, b = zip(*pairs, strict=True)
            ax.fill_between(e, a, b, color=colour, alpha=0.15, linewidth=0)
        bad = [m for m in seeds if m["status"] != "ok"]
        title = run + (f" (n {len(seeds)})" if len(seeds) > 1 else "")
        ax.set_title(title, fontsize=8, color=FAILED_COLOUR if bad else "black")
        if bad:
            statuses = ", ".join(dict.fromkeys(m["status"] for m in bad))
            words = status_text(bad[0]) if len(seeds) == 1 else f"{len(bad)} of {len(seeds)} seeds {statuses}"
            ax.text(0.5, 0.5, words, transform=ax.transAxes, ha="center", color=FAILED_COLOUR, fontsize=7)
    for ax in list(axes.flat)[len(runs) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    for ax in axes.flat:
        plotting.epoch_axis(ax)
    axes[0, 0].legend(loc="lower right")
    plotting.save(fig, out_png)
