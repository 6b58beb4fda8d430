"""The figures of one run: learning curves, confusion matrix, LR range test and saliency maps.

Drawn by the plot rules (cifarlab.plots.figures.FIGURES names each function) from the files the steps
wrote, never by the steps themselves: a change here or to the house style (cifarlab.plots.style)
reruns plotting only, not the evaluation, the LR finder or saliency.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from cifarlab.analysis.lr_finder import median_curve
from cifarlab.analysis.saliency import METHODS
from cifarlab.core.files import load_torch
from cifarlab.plots import style as plotting
from cifarlab.study.results import read_history, read_json, status_text

# --- Evaluation: learning curves and the confusion matrix -----------------------------------


def plot_curves(history_csv: str | Path, metrics_json: str | Path, out_png: str | Path) -> None:
    """Loss and accuracy per epoch: train, validation (when the run holds images out) and test.

    A widening gap between the train and held-out curves reads as overfitting. The chosen epoch
    (the model evaluated: best validation accuracy, or the last epoch) is marked; the per-epoch
    test curve is labelled as such, since nothing is chosen on it. A diverged run says so in red
    where its curves stop.
    """
    history = read_history(history_csv)
    metrics = read_json(metrics_json)
    colour = plotting.model_colour(metrics["model"])
    epochs = [row["epoch"] for row in history]
    validated = bool(metrics.get("validation_images"))
    chosen = "chosen epoch (best validation)" if validated else "chosen epoch (the last)"
    fig, axes = plotting.figure(ncols=2)
    for ax, key, label in (
        (axes[0, 0], "loss", "cross-entropy (nats)"),
        (axes[0, 1], "accuracy", "accuracy (%)"),
    ):
        curve = {
            part: np.array([row[f"{part}_{key}"] for row in history], dtype=float)
            for part in ("train", "val", "test")
        }
        ax.plot(epochs, curve["train"], "--o", color=colour, markersize=3, label="train")
        if validated:
            ax.plot(epochs, curve["val"], "-s", color=colour, markersize=3, alpha=0.6, label="validation")
        ax.plot(epochs, curve["test"], "-o", color=colour, markersize=3, label="test (per epoch)")
        if metrics.get("best_epoch") is not None:
            ax.axvline(metrics["best_epoch"], color="#999999", linestyle=":", linewidth=1, label=chosen)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    note = None if metrics["status"] == "ok" else status_text(metrics)
    last = max(epochs, default=1)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, last + 0.5)
        if note and metrics.get("diverged"):
            ax.axvline(metrics["diverged"]["epoch"], color="#C00000", linestyle="--", linewidth=1)
    title = metrics["run"]
    if metrics.get("test_accuracy") is not None:
        title += f": test accuracy {metrics['test_accuracy']:.2f} %"
        title += (
            f" at epoch {metrics['best_epoch']} of {len(history)} (best validation)"
            if validated
            else f" after {len(history)} epochs"
        )
    if note:
        title += f": {note}"
    fig.suptitle(title, color="#C00000" if note else "black")
    plotting.save(fig, out_png)


def plot_confusion(metrics_json: str | Path, out_png: str | Path) -> None:
    """The confusion matrix as row percentages (each true class sums to 100 %)."""
    metrics = read_json(metrics_json)
    classes = metrics["classes"]
    side = (0.45 * len(classes) + 2.0, 0.45 * len(classes) + 1.2)
    fig, axes = plotting.figure(size=side, texts=classes)
    ax = axes[0, 0]
    note = None if metrics["status"] == "ok" else status_text(metrics)
    if note or metrics.get("confusion_matrix") is None:
        # No predictions to show: say why rather than draw an empty matrix that looks like a result.
        ax.text(0.5, 0.5, f"{metrics['run']}: no test predictions\n{note or ''}", ha="center", va="center",
                color="#C00000", transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        plotting.save(fig, out_png)
        return
    counts = np.array(metrics["confusion_matrix"], dtype=float)
    percent = 100 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    tested = counts.sum(axis=1) > 0  # a class without test images has no row to show, not 0 %
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{percent[i, j]:.0f}" if tested[i] else "-", ha="center", va="center", fontsize=6,
                    color="white" if percent[i, j] > 50 else "black")  # fmt: skip
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    rows = [c if tested[i] else f"{c} (no test images)" for i, c in enumerate(classes)]
    ax.set_yticks(range(len(classes)), rows)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.grid(False)
    ax.set_title(f"{metrics['run']}: test accuracy {metrics['test_accuracy']:.2f} %")
    fig.colorbar(image, ax=ax, label="% of the true class", shrink=0.8)
    plotting.save(fig, out_png)


# --- The LR range test ----------------------------------------------------------------------


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


# --- Saliency maps ----------------------------------------------------------------------------

METHOD_TITLES = {
    "vanilla": "vanilla gradient",
    "guided_backprop": "guided backprop",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "integrated gradients",
    "gradcam": "Grad-CAM",
}
MAP_CMAP = "inferno"


def _display(saliency: torch.Tensor) -> np.ndarray:
    """A map scaled to [0, 1] by its 99th percentile (a few extreme pixels would wash out the rest)."""
    m = saliency.float()
    top = torch.quantile(m.flatten(), 0.99)
    top = top if top > 0 else m.max()
    return (m / top).clamp(0, 1).numpy() if top > 0 else m.numpy()


def _image(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


def _blank(ax, text: str) -> None:
    """A panel that says why there is no map (never an empty map that could pass for a result)."""
    text = "\n".join(textwrap.fill(line, 22) for line in text.split("\n"))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=6, transform=ax.transAxes)
    ax.set_axis_off()


def _short_reason(reason: str) -> str:
    """'the model has no ReLU modules (a ViT ...); ...' -> 'the model has no ReLU modules'."""
    return reason.split(";")[0].split(" (")[0]


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _sanity_text(result: dict, method: str) -> str:
    s = result["sanity"]["methods"].get(method)
    if s is None:
        return ""
    rho = s["fully_randomised"]
    verdict = "passes" if s["passes"] else "FAILS"
    return f"\nrho(random) {'n/a' if rho is None else f'{rho:.2f}'}: {verdict}"


def _target_words(target: str) -> str:
    return "the true class" if target == "true_class" else "the predicted class"


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
        image = _image(data["images"][row].float() / 255)
        for col, what in enumerate(columns):
            ax = axes[row, col]
            _clean(ax)
            if what == "image":
                ax.imshow(image, interpolation="nearest")
                true, pred = classes[data["labels"][row]], classes[data["predicted"][row]]
                ax.set_ylabel(f"true: {true}\npred: {pred}", fontsize=7)
            elif what == "overlay":
                ax.imshow(image, interpolation="nearest")
                if "vanilla" in data["maps"]:
                    ax.imshow(_display(data["maps"]["vanilla"][row]), cmap=MAP_CMAP, alpha=0.55)
            elif what in result["unsupported"]:
                _blank(ax, "not supported:\n" + _short_reason(result["unsupported"][what]))
            elif f"{what}[{row}]" in result["zero_maps"]:
                _blank(ax, "all zero:\nno positive evidence\nfor the class")
            else:
                ax.imshow(_display(data["maps"][what][row]), cmap=MAP_CMAP, interpolation="nearest")
            if row == 0:
                title = "overlay (vanilla)" if what == "overlay" else METHOD_TITLES.get(what, what)
                ax.set_title(title + _sanity_text(result, what), fontsize=7)
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
        f"{result['run']} ({result['model']}): saliency of {_target_words(result['target'])}, "
        f"backend {result['backend']}",
        fontsize=10,
    )
    plotting.save(fig, out_png)


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
        _clean(ax)
        ax.imshow(_image(first["images"][row].float() / 255), interpolation="nearest")
        ax.set_ylabel(f"true: {first['classes'][first['labels'][row]]}", fontsize=7)
        if row == 0:
            ax.set_title("image", fontsize=7)
        for col, (data, result) in enumerate(zip(runs, results, strict=True), start=1):
            ax = axes[row, col]
            _clean(ax)
            if method in result["unsupported"]:
                _blank(ax, "not supported:\n" + _short_reason(result["unsupported"][method]))
            elif method not in data["maps"]:
                _blank(ax, f"{method}\nnot computed")
            elif f"{method}[{row}]" in result["zero_maps"]:
                _blank(ax, "all zero")
            else:
                ax.imshow(_display(data["maps"][method][row]), cmap=MAP_CMAP, interpolation="nearest")
            ax.set_xlabel(f"pred: {data['classes'][data['predicted'][row]]}", fontsize=6)
            if row == 0:
                ax.set_title(f"{result['run']}" + _sanity_text(result, method), fontsize=7)
    words = " / ".join(_target_words(t) for t in targets)
    fig.suptitle(f"{METHOD_TITLES.get(method, method)} of {words}, same images for every model", fontsize=10)
    plotting.save(fig, out_png)
