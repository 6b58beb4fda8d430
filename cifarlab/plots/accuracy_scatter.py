"""Test accuracy against a run's number (parameters, training time) for every run of a dataset.

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cifarlab.plots import style as plotting
from cifarlab.plots.seeds import has_accuracy, mark_failed, metrics_by_run, seeds_and_mean


def plot_accuracy_scatter(metrics_paths: Sequence[str | Path], x: str, out_png: str | Path) -> None:
    """Test accuracy (%) of every run against `params_total` or `train_seconds` (log axis): one
    point per seed, the mean ± sd over the seeds with an error bar.

    Seeds without an accuracy (diverged, failed) are drawn as red crosses on the bottom edge.
    """
    labels = {"params_total": "parameters (total)", "train_seconds": "training time (s)"}
    if x not in labels:
        raise ValueError(f"x must be one of {list(labels)}, got {x!r}")
    fig, axes = plotting.figure(size=(6.0, 4.0), layout="constrained")
    ax = axes[0, 0]
    labelled: list[float] = []  # the x of each failed run's label so far
    for run, seeds in metrics_by_run(metrics_paths).items():
        ok = [m for m in seeds if has_accuracy(m)]
        if ok:
            colour = plotting.model_colour(ok[0]["model"])
            xs, ys = [m[x] for m in ok], [m["test_accuracy"] for m in ok]
            at = seeds_and_mean(ax, xs, ys, colour, ok[0]["model"])
            ax.annotate(run, at, fontsize=6, xytext=(4, 3), textcoords="offset points")
        failed = [m for m in seeds if not has_accuracy(m)]
        for m in failed[1:]:
            mark_failed(ax, m[x])
        if failed:  # one label per run, stacked over the labels of other runs at the same x
            level = labelled.count(failed[0][x])
            labelled.append(failed[0][x])
            which = f" (seed {', '.join(str(m['seed']) for m in failed)})" if len(seeds) > 1 else ""
            mark_failed(ax, failed[0][x], f"{run}: {failed[0]['status']}{which}", level)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel(labels[x])
    ax.set_ylabel("test accuracy (%), mean ± sd over seeds")
    plotting.dedup_legend(ax)
    plotting.save(fig, out_png)
