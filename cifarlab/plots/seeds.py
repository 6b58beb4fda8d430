"""The parts the comparison figures share: a run's seeds as points and their mean, a failed
seed's red cross, and the mean learning curve over seeds with its band.

A run has one or more seeds: the figures draw one small point per seed and the mean over the
seeds with an error bar of ± one sample standard deviation (curves: the mean per epoch with a
± sd band, each seed a thin line). A seed without an accuracy (diverged, failed) is drawn as a red
cross on the bottom edge, never as a value of 0, and is not averaged in; a diverged run's panel
says so in red.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from cifarlab.analysis.stats import summarise
from cifarlab.study.results import group_seeds, load_metrics, read_history

FAILED_COLOUR = "#C00000"
SEED_STYLE = {"s": 10, "alpha": 0.45, "linewidths": 0, "zorder": 2}
MEAN_STYLE = {"fmt": "o", "markersize": 5, "capsize": 3, "elinewidth": 1.2, "zorder": 3}


def metrics_by_run(paths: Sequence[str | Path]) -> dict[str, list[dict]]:
    """run -> its seeds' metrics (ascending seed), in first-seen order."""
    return {run: seeds for (_, run), seeds in group_seeds([load_metrics(p) for p in paths]).items()}


def has_accuracy(m: dict) -> bool:
    return m["status"] == "ok" and m["test_accuracy"] is not None


def mark_failed(ax, x: float, text: str = "", level: int = 0) -> None:
    """A red cross on the bottom edge of `ax` at data position x: a seed that has no value here.

    Drawn in axes coordinates so that it never reads as a value of 0. `level`: the label's line
    above the edge (labels of crosses at the same x stack instead of overlapping).
    """
    style = {"marker": "x", "color": FAILED_COLOUR, "s": 40, "zorder": 3, "clip_on": False}
    ax.scatter(x, 0, transform=ax.get_xaxis_transform(), label="no value (diverged/failed)", **style)
    ax.update_datalim([(x, 0)], updatey=False)  # a blended artist does not widen the x range itself
    ax.autoscale_view()
    if text:  # beside the cross, towards the middle; kept out of the layout, which cannot size it
        right_half = ax.transLimits.transform((x, ax.get_ylim()[0]))[0] > 0.5
        label = ax.text(
            x,
            0.03 + 0.05 * level,
            f" {text} ",
            transform=ax.get_xaxis_transform(),
            fontsize=6,
            color=FAILED_COLOUR,
            ha="right" if right_half else "left",
        )
        label.set_in_layout(False)


def seeds_and_mean(ax, xs: Sequence[float], ys: Sequence[float], colour: str, label: str) -> tuple:
    """One point per seed at (xs, ys) and the mean with ± sd error bars (none for one seed).

    Returns the mean (x, y)."""
    ax.scatter(xs, ys, color=colour, **SEED_STYLE)
    x, y = summarise(xs), summarise(ys)
    ax.errorbar(x.mean, y.mean, yerr=y.sd or 0.0, color=colour, label=label, **MEAN_STYLE)
    return x.mean, y.mean


def mean_curve(histories: Sequence[list[dict]], key: str) -> tuple[list[int], list[float], list[float]]:
    """(epochs, mean, sd) of `key` per epoch over seeds' histories (finite values only; sd 0 for one)."""
    epochs = sorted({h["epoch"] for history in histories for h in history})
    means, sds = [], []
    for epoch in epochs:
        values = [
            h[key] for history in histories for h in history if h["epoch"] == epoch and math.isfinite(h[key])
        ]
        summary = summarise(values)
        means.append(math.nan if summary.mean is None else summary.mean)
        sds.append(summary.sd or 0.0)
    return epochs, means, sds


def seed_histories(
    metrics_paths: Sequence[str | Path], history_paths: Sequence[str | Path]
) -> dict[str, list[tuple[dict, list[dict]]]]:
    """run -> (metrics, history) of each of its seeds, in ascending seed order (paths aligned)."""
    metrics = [load_metrics(p) for p in metrics_paths]
    history = {id(m): read_history(p) for m, p in zip(metrics, history_paths, strict=True)}
    return {run: [(m, history[id(m)]) for m in seeds] for (_, run), seeds in group_seeds(metrics).items()}


def averaged_seeds(seeds: Sequence[tuple[dict, list[dict]]]) -> list[list[dict]]:
    """The histories a mean curve averages: the seeds with an accuracy (a diverged seed is drawn,
    not averaged in), or every seed when none has one."""
    return [h for m, h in seeds if has_accuracy(m)] or [h for _, h in seeds]


def seed_band(ax, seeds: Sequence[tuple[dict, list[dict]]], key: str, colour: str, **style) -> None:
    """The mean of `key` per epoch over the seeds, a ± sd band, each seed a thin line."""
    for _, history in seeds if len(seeds) > 1 else ():
        ax.plot(
            [h["epoch"] for h in history], [h[key] for h in history], color=colour, linewidth=0.5, alpha=0.4
        )
    epochs, mean, sd = mean_curve(averaged_seeds(seeds), key)
    ax.plot(epochs, mean, color=colour, **style)
    low = [m - s for m, s in zip(mean, sd, strict=True)]
    high = [m + s for m, s in zip(mean, sd, strict=True)]
    ax.fill_between(epochs, low, high, color=colour, alpha=0.15, linewidth=0)
