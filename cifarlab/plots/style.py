"""The one style of every figure: fonts, sizes and colours, so a change is one edit.

A model's colour lives in cifarlab.models.style; `model_colour` reads it.

Figure functions live next to what they show (evaluate, lr_finder, saliency, report) and
start from `figure()`; `save()` writes atomically so a failed plot never leaves a half file.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on clusters and CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402
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
    # Text is drawn as written: a class named `coin_$1_or_$2` is not mathtext (it crashed the
    # confusion plot). No figure of ours writes mathtext.
    "text.parse_math": False,
}

log = logging.getLogger(__name__)

# Fonts that only draw placeholder boxes for every character: never a fallback.
PLACEHOLDER_FONTS = ("Last Resort",)

SERIES_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

PANEL = (4.0, 3.0)  # inches, one panel


def figure(
    ncols: int = 1,
    nrows: int = 1,
    size: tuple[float, float] = PANEL,
    texts: Iterable[str] = (),
    **kwargs,
):
    """A new figure of ncols x nrows panels of `size` inches each, in the house style.

    texts: the names the figure shows (class names): the fonts get fallbacks that have their
    characters (fonts_for).
    """
    plt.rcParams.update(STYLE)
    # matplotlib falls back along this list glyph by glyph (set per figure: names differ)
    plt.rcParams["font.family"] = ["sans-serif", *fonts_for(texts)]
    return plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kwargs)


@functools.cache
def _characters(path: str) -> frozenset[int]:
    """The code points a font file has glyphs for."""
    return frozenset(FT2Font(path).get_charmap())


@functools.cache
def _installed_fonts() -> tuple[tuple[str, str], ...]:
    """(family, file) of every font matplotlib finds here, Noto first (it covers most scripts)."""
    fonts = {
        (font.name, font.fname)
        for font in font_manager.fontManager.ttflist
        if not font.name.startswith(PLACEHOLDER_FONTS)
    }
    return tuple(sorted(fonts, key=lambda f: (not f[0].startswith("Noto"), f)))


def fonts_for(texts: Iterable[str]) -> list[str]:
    """The font families, after the house font, that draw the characters of `texts` it lacks.

    Picked from the fonts matplotlib finds on this machine (e.g. Noto Sans CJK for `猫`, when
    installed: apt-get install fonts-noto-cjk). Characters no font has are logged once per
    figure, naming them: they draw as boxes.
    """
    house = _characters(font_manager.findfont(font_manager.FontProperties(family=["sans-serif"])))
    missing = {ord(c) for text in texts for c in text if not c.isspace()} - house
    families: list[str] = []
    for family, path in _installed_fonts():
        if not missing:
            break
        try:
            covered = missing & _characters(path)
        except (OSError, RuntimeError):  # a font file FreeType cannot read
            continue
        if covered and family not in families:
            families.append(family)
        missing -= covered
    if missing:
        shown = "".join(sorted(chr(c) for c in missing))[:40]
        log.warning(
            "no font found here has the characters %r of the figure's names: they draw as boxes "
            "(install a font with them, e.g. Noto Sans CJK: apt-get install fonts-noto-cjk)",
            shown,
        )
    return families


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
