"""The LR finder's curve as its figures draw it (the per-run range test and the comparison).

Here, not in cifarlab.analysis.lr_finder, so that the figures' code is this reading of the
results JSON alone: the finder's module imports training's (optimizers, augmentation) where it
runs, and an edit there must not redraw the LR figures.
"""

from __future__ import annotations

import numpy as np


def median_curve(result: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lrs, median, min, max) of the smoothed loss over repeats, step by step.

    Repeats that stopped early (divergence) are shorter; the curve goes on as long as at least
    half of the repeats are still running, so that its median is one of the many, not the last.
    """
    curves = [r["smoothed"] for r in result["repeats"]]
    length = sorted((len(c) for c in curves), reverse=True)[(len(curves) - 1) // 2]
    table = np.full((len(curves), length), np.nan)
    for i, curve in enumerate(curves):
        table[i, : min(len(curve), length)] = curve[:length]
    lrs = np.asarray(result["lrs"][:length])
    return lrs, np.nanmedian(table, axis=0), np.nanmin(table, axis=0), np.nanmax(table, axis=0)
