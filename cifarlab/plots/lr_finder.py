"""A run's LR range test: the smoothed loss against lr over the repeats, and the suggestions.

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cifarlab.plots import style as plotting
from cifarlab.plots.lr_curves import median_curve
from cifarlab.study.results import read_json


def plot_lr_finder(result_json: str | Path, out_png: str | Path) -> None:
    """Loss against lr (log axis) of one run's repeated range test: the median smoothed curve,
    its min-max band over repeats, the points left out of the suggestions shaded, and each
    suggestion's median marked with its range across repeats and its spread in decades."""
    result = read_json(result_json)
    lrs, median, low, high = median_curve(result)
    repeats = len(result["repeats"])
    fig, axes = plotting.figure(size=(6.0, 3.8))
    ax = axes[0, 0]
    colour = plotting.model_colour(result.get("model", ""))
    ax.fill_between(lrs, low, high, color=colour, alpha=0.2, linewidth=0, label=f"min-max, {repeats} repeats")
    ax.plot(lrs, median, color=colour, linewidth=1.5, label="median (smoothed)")
    skip = result.get("skip_start", 0)
    if skip:
        ax.axvspan(lrs[0], lrs[min(skip, len(lrs) - 1)], color="#999999", alpha=0.12, linewidth=0)
    for i, (method, s) in enumerate(result["suggestions"].items()):
        chosen = method == result["chosen"]
        c = plotting.SERIES_COLOURS[(i + 1) % len(plotting.SERIES_COLOURS)]
        ax.axvspan(min(s["lrs"]), max(s["lrs"]), color=c, alpha=0.12, linewidth=0)
        ax.axvline(
            s["median"], color=c, linestyle="-" if chosen else "--", linewidth=1.8 if chosen else 1.0,
            label=f"{method}{' (chosen)' if chosen else ''}: {s['median']:.2g}, "
            f"spread {s['spread_decades']:.2f} dec",
        )  # fmt: skip
    # The blow-up at the right end would squash the useful part: show the fall and a margin above.
    bottom = float(np.nanmin(low))
    lowest = int(np.nanargmin(median))
    top = float(np.nanmax(median[skip : lowest + 1] if lowest >= skip else median))
    margin = max(0.3 * (top - bottom), 0.02 * abs(top))
    ax.set_ylim(bottom - 0.2 * margin, min(top + margin, float(np.nanmax(high))) + 0.2 * margin)
    ax.set_xscale("log")
    ax.set(
        xlabel="learning rate",
        ylabel="training loss (nats, smoothed)",
        title=f"{result.get('run', Path(result_json).stem)}: {result.get('optimizer', '')}, "
        f"batch {result.get('batch_size', '?')}; grey: left out",
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    plotting.save(fig, out_png)
