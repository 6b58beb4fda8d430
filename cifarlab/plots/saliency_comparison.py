"""Saliency across the runs of one dataset: each run's maps of the same images side by side.

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

from pathlib import Path

from cifarlab.core.files import load_torch
from cifarlab.plots import style as plotting
from cifarlab.plots.saliency_panels import (
    MAP_CMAP,
    METHOD_TITLES,
    blank_panel,
    clean_axes,
    display_map,
    image_array,
    sanity_text,
    short_reason,
    target_words,
)
from cifarlab.study.results import read_json


def plot_saliency_comparison(
    maps_pts: list, result_jsons: list, out_png: str | Path, method: str = "vanilla"
) -> None:
    """The same images, one column per run: each model's `method` map (default the vanilla gradient)."""
    if len(maps_pts) != len(result_jsons) or not maps_pts:
        raise ValueError(f"need one result JSON per maps file, got {len(maps_pts)} and {len(result_jsons)}")
    runs = [load_torch(p) for p in maps_pts]
    results = [read_json(p) for p in result_jsons]
    first = runs[0]
    for path, data in zip(maps_pts, runs, strict=True):
        if data["indices"].tolist() != first["indices"].tolist():
            raise ValueError(
                f"{path} explains other images than {maps_pts[0]}: all runs must use the same "
                "results/saliency/sample.json; rerun their saliency step"
            )
    targets = sorted({r["target"] for r in results})
    n = len(first["labels"])
    fig, axes = plotting.figure(
        ncols=len(runs) + 1, nrows=n, size=(1.6, 1.6), layout="constrained", texts=first["classes"]
    )
    for row in range(n):
        ax = axes[row, 0]
        clean_axes(ax)
        ax.imshow(image_array(first["images"][row].float() / 255), interpolation="nearest")
        ax.set_ylabel(f"true: {first['classes'][first['labels'][row]]}", fontsize=7)
        if row == 0:
            ax.set_title("image", fontsize=7)
        for col, (data, result) in enumerate(zip(runs, results, strict=True), start=1):
            ax = axes[row, col]
            clean_axes(ax)
            if method in result["unsupported"]:
                blank_panel(ax, "not supported:\n" + short_reason(result["unsupported"][method]))
            elif method not in data["maps"]:
                blank_panel(ax, f"{method}\nnot computed")
            elif f"{method}[{row}]" in result["zero_maps"]:
                blank_panel(ax, "all zero")
            else:
                ax.imshow(display_map(data["maps"][method][row]), cmap=MAP_CMAP, interpolation="nearest")
            ax.set_xlabel(f"pred: {data['classes'][data['predicted'][row]]}", fontsize=6)
            if row == 0:
                ax.set_title(f"{result['run']}" + sanity_text(result, method), fontsize=7)
    words = " / ".join(target_words(t) for t in targets)
    fig.suptitle(f"{METHOD_TITLES.get(method, method)} of {words}, same images for every model", fontsize=10)
    plotting.save(fig, out_png)
