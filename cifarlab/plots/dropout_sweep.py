"""A dropout sweep: test accuracy (and the train-test gap) against the dropout rate.

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cifarlab.plots import style as plotting
from cifarlab.plots.seeds import has_accuracy, mark_failed, metrics_by_run, seeds_and_mean
from cifarlab.study.results import train_test_gap


def plot_dropout_sweep(
    metrics_paths: Sequence[str | Path], groups: dict[str, list[str]], out_png: str | Path
) -> None:
    """Test accuracy and the train-test gap (points) against dropout p, one line (through the means
    over seeds, ± sd error bars, one point per seed) per group."""
    if not groups:
        raise ValueError(
            "this study has no dropout sweep: give a run `sweep: {dropout: [...]}` in the config"
        )
    by_run = metrics_by_run(metrics_paths)
    fig, axes = plotting.figure(ncols=2, sharex=True, layout="constrained")
    acc_ax, gap_ax = axes[0]
    for i, (label, names) in enumerate(groups.items()):
        colour = plotting.series_colour(i)
        for ax, value in ((acc_ax, lambda m: m["test_accuracy"]), (gap_ax, train_test_gap)):
            means = []
            for name in names:
                ok = [m for m in by_run[name] if has_accuracy(m) and value(m) is not None]
                if ok:
                    means.append(
                        seeds_and_mean(ax, [m["dropout"] for m in ok], [value(m) for m in ok], colour, label)
                    )
                for m in (m for m in by_run[name] if not has_accuracy(m)):
                    mark_failed(ax, m["dropout"], m["status"])
            if means:
                ax.plot(*zip(*means, strict=True), "-", color=colour, linewidth=1)
    acc_ax.set(xlabel="dropout p", ylabel="test accuracy (%)", title="accuracy (mean ± sd)")
    acc_ax.set_ylim(bottom=0)
    gap_ax.set(xlabel="dropout p", ylabel="train - test accuracy (points)", title="overfitting (gap)")
    gap_ax.axhline(0, color="#999999", linewidth=0.8)
    plotting.dedup_legend(acc_ax)
    plotting.save(fig, out_png)
