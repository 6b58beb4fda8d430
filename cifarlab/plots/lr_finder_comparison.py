"""Every LR-finder run's range test on one dataset, on one axis.

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cifarlab.plots import style as plotting
from cifarlab.plots.lr_curves import median_curve
from cifarlab.study.results import read_json


def plot_lr_finder_comparison(result_paths: Sequence[str | Path], out_png: str | Path) -> None:
    """Median smoothed loss against lr (log axis) of every LR-finder run, min-max band over repeats,
    the chosen suggestion marked with its spread across repeats as a shaded span."""
    if not result_paths:
        raise ValueError("this study runs no LR finder: list runs under `lr_finder.runs` or use `lr: auto`")
    fig, axes = plotting.figure(size=(6.5, 4.0))
    ax = axes[0, 0]
    starts, lowest = [], []
    for i, path in enumerate(result_paths):
        result = read_json(path)
        colour = plotting.series_colour(i)
        lrs, median, low, high = median_curve(result)  # the same curve as the per-run figure
        ax.plot(lrs, median, color=colour, label=result.get("run", Path(path).stem))
        ax.fill_between(lrs, low, high, color=colour, alpha=0.15, linewidth=0)
        spread = result["suggestions"][result["chosen"]].get("spread_decades") or 0.0
        ax.axvline(result["lr"], color=colour, linestyle=":", linewidth=1)
        ax.axvspan(
            result["lr"] / 10 ** (spread / 2), result["lr"] * 10 ** (spread / 2), color=colour, alpha=0.08
        )
        if len(median):
            starts.append(float(median[0]))
            lowest.append(float(min(low)))
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="smoothed training loss (nats)")
    if starts:  # the divergence at the right end would otherwise squash the useful part
        # Both limits: autoscaling pads the bottom by a share of the divergent range.
        top = 1.5 * max(starts)
        bottom = min(lowest)
        ax.set_ylim(bottom - 0.05 * (top - bottom), top)
    ax.legend(title="dotted: chosen lr; span: spread")
    plotting.save(fig, out_png)
