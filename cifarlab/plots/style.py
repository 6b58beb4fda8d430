"""The one style of every figure: fonts, sizes and colours, so a change is one edit.

A model's colour lives in cifarlab.models.style; `model_colour` reads it.

Figure functions live next to what they show (evaluate, lr_finder, saliency, report) and
start from `figure()`; `save()` writes atomically so a failed plot never leaves a half file.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on clusters and CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cifarlab.core.files import atomic_path  # noqa: E402
from cifarlab.models import style as model_style  # noqa: E402

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
}

SERIES_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

PANEL = (4.0, 3.0)  # inches, one panel


def figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = PANEL, **kwargs):
    """A new figure of ncols x nrows panels of `size` inches each, in the house style."""
    plt.rcParams.update(STYLE)
    return plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kwargs)


def model_colour(model: str) -> str:
    """A model's colour in every figure (cifarlab.models.style; colour-blind-safe Okabe-Ito)."""
    return model_style.model_colour(model)


def save(fig, path: str | Path) -> None:
    """Write `fig` to `path` (format from its suffix) via a temp file and a rename; close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."))
    finally:
        plt.close(fig)


def series_colour(index: int) -> str:
    """The colour of the index-th line of a figure whose lines are not models (optimizers, p)."""
    return SERIES_COLOURS[index % len(SERIES_COLOURS)]


def dedup_legend(ax, **kwargs) -> None:
    """A legend with one entry per label (scatter plots add one artist per point)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        ax.legend(unique.values(), unique.keys(), **kwargs)


def epoch_axis(ax) -> None:
    """Label the x axis 'epoch' with whole-number ticks. Call after plotting.

    A one-epoch run is a single point, which matplotlib pads by a hair and labels in fractions
    of an epoch: widen such a range to one epoch either side.
    """
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    lo, hi = ax.get_xlim()
    if hi - lo < 2:
        middle = round((lo + hi) / 2)
        ax.set_xlim(middle - 1, middle + 1)
