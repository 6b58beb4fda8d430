"""The optimizer sweep: every optimizer's learning curves, one row of panels per group.

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cifarlab.plots import style as plotting
from cifarlab.plots.seeds import seed_band, seed_histories
from cifarlab.study.results import seeds_status


def plot_optimizers(
    metrics_paths: Sequence[str | Path],
    history_paths: Sequence[str | Path],
    groups: dict[str, list[str]],
    out_png: str | Path,
) -> None:
    """Test loss and test accuracy per epoch, one line per optimizer (the mean over its seeds, a ± sd
    band, each seed thin); one row of panels per group. history_paths: aligned with metrics_paths."""
    if not groups:
        raise ValueError("this study has no optimizer sweep: give a run `sweep: {optimizer: [...]}`")
    by_run = seed_histories(metrics_paths, history_paths)
    fig, axes = plotting.figure(ncols=2, nrows=len(groups), layout="constrained")
    for row, (label, names) in zip(axes, groups.items(), strict=True):
        loss_ax, acc_ax = row
        for i, name in enumerate(names):
            seeds = by_run[name]
            status, _ = seeds_status([m for m, _ in seeds])
            tag = seeds[0][0]["optimizer"] + ("" if status == "ok" else f" ({status})")
            tag += f" (n {len(seeds)})" if len(seeds) > 1 else ""
            style = {"label": tag, "marker": "o", "markersize": 3}
            seed_band(loss_ax, seeds, "test_loss", plotting.series_colour(i), **style)
            seed_band(acc_ax, seeds, "test_accuracy", plotting.series_colour(i), **style)
        loss_ax.set(ylabel="test loss (nats)", title=f"{label}: test loss")
        acc_ax.set(ylabel="test accuracy (%)", title=f"{label}: test accuracy")
        plotting.epoch_axis(loss_ax)
        plotting.epoch_axis(acc_ax)
        loss_ax.legend()
    plotting.save(fig, out_png)
