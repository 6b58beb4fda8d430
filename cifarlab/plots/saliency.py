"""A run's saliency maps: each method's maps of the sample images, with the sanity check.

Drawn by its plot rule (cifarlab.plots.figures.FIGURES names the function) from the files the
steps wrote; a module of its own, so that editing it reruns this figure's jobs (and the report) only.
"""

from __future__ import annotations

from pathlib import Path

from cifarlab.analysis.saliency import METHODS
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


def plot_saliency(maps_pt: str | Path, result_json: str | Path, out_png: str | Path) -> None:
    """Per image: the image (true / predicted label), each method's map, and a vanilla overlay.

    Column titles carry the sanity check: the Spearman correlation of the map with that of the fully
    randomised model, and whether the method passes; the footer gives the whole cascade.
    """
    data = load_torch(maps_pt)
    result = read_json(result_json)
    classes = data["classes"]
    shown = [m for m in METHODS if m in data["maps"] or m in result["unsupported"]]
    columns = ["image"] + shown[:2] + ["overlay"] + shown[2:]
    n = len(data["labels"])
    fig, axes = plotting.figure(
        ncols=len(columns), nrows=n, size=(1.7, 1.7), layout="constrained", texts=classes
    )
    for row in range(n):
        image = image_array(data["images"][row].float() / 255)
        for col, what in enumerate(columns):
            ax = axes[row, col]
            clean_axes(ax)
            if what == "image":
                ax.imshow(image, interpolation="nearest")
                true, pred = classes[data["labels"][row]], classes[data["predicted"][row]]
                ax.set_ylabel(f"true: {true}\npred: {pred}", fontsize=7)
            elif what == "overlay":
                ax.imshow(image, interpolation="nearest")
                if "vanilla" in data["maps"]:
                    ax.imshow(display_map(data["maps"]["vanilla"][row]), cmap=MAP_CMAP, alpha=0.55)
            elif what in result["unsupported"]:
                blank_panel(ax, "not supported:\n" + short_reason(result["unsupported"][what]))
            elif f"{what}[{row}]" in result["zero_maps"]:
                blank_panel(ax, "all zero:\nno positive evidence\nfor the class")
            else:
                ax.imshow(display_map(data["maps"][what][row]), cmap=MAP_CMAP, interpolation="nearest")
            if row == 0:
                title = "overlay (vanilla)" if what == "overlay" else METHOD_TITLES.get(what, what)
                ax.set_title(title + sanity_text(result, what), fontsize=7)
    sanity = result["sanity"]
    lines = [
        "Sanity check (Adebayo et al. 2018): Spearman rho of trained vs randomised maps,\n"
        f"re-initialising from the top layer down; fails if rho >= {sanity['threshold']} "
        "with all layers random"
    ]
    stage_names = [s["name"] for s in sanity["stages"]]
    for method, s in sanity["methods"].items():
        values = ", ".join(
            f"{stage}: {'n/a' if v is None else f'{v:.2f}'}"
            for stage, v in zip(stage_names, s["mean"], strict=True)
        )
        lines.append(f"{METHOD_TITLES.get(method, method)}: {values}")
    fig.supxlabel("\n".join(lines), x=0.0, ha="left", fontsize=7)
    fig.suptitle(
        f"{result['run']} ({result['model']}): saliency of {target_words(result['target'])}, "
        f"backend {result['backend']}",
        fontsize=10,
    )
    plotting.save(fig, out_png)
