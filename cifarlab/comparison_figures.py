"""The comparison figures: every run of the study side by side (accuracy against parameters and
time, the sweeps, all learning curves, all LR range tests). Each is an entry of
`cifarlab.figures.FIGURES`, drawn by its own plot rule from the results.

A run without an accuracy (diverged, failed) is drawn as a red cross on the bottom edge, never as
a value of 0, and a diverged run's panel says so in red.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from cifarlab import plotting
from cifarlab.lr_finder import median_curve
from cifarlab.results import load_metrics, read_history, read_json, status_text
from cifarlab.tables import train_test_gap


def _by_run(paths: Iterable[str | Path]) -> dict[str, dict]:
    metrics = [load_metrics(p) for p in paths]
    return {m["run"]: m for m in metrics}


FAILED_COLOUR = "#C00000"


def mark_failed(ax, x: float, text: str = "") -> None:
    """A red cross on the bottom edge of `ax` at data position x: a run that has no value here.

    Drawn in axes coordinates so that it never reads as a value of 0.
    """
    style = {"marker": "x", "color": FAILED_COLOUR, "s": 40, "zorder": 3, "clip_on": False}
    ax.scatter(x, 0, transform=ax.get_xaxis_transform(), label="no value (diverged/failed)", **style)
    ax.update_datalim([(x, 0)], updatey=False)  # a blended artist does not widen the x range itself
    ax.autoscale_view()
    if text:  # beside the cross, towards the middle; kept out of the layout, which cannot size it
        right_half = ax.transLimits.transform((x, ax.get_ylim()[0]))[0] > 0.5
        label = ax.text(
            x,
            0.03,
            f" {text} ",
            transform=ax.get_xaxis_transform(),
            fontsize=6,
            color=FAILED_COLOUR,
            ha="right" if right_half else "left",
        )
        label.set_in_layout(False)


def plot_accuracy_scatter(metrics_paths: Sequence[str | Path], x: str, out_png: str | Path) -> None:
    """Test accuracy (%) of every run against `params_total` or `train_seconds` (log axis).

    Runs without an accuracy (diverged, failed) are drawn as red crosses on the bottom edge.
    """
    labels = {"params_total": "parameters (total)", "train_seconds": "training time (s)"}
    if x not in labels:
        raise ValueError(f"x must be one of {list(labels)}, got {x!r}")
    fig, axes = plotting.figure(size=(6.0, 4.0), layout="constrained")
    ax = axes[0, 0]
    for m in (load_metrics(p) for p in metrics_paths):
        value = m[x]
        if m["status"] == "ok" and m["test_accuracy"] is not None:
            ax.scatter(value, m["test_accuracy"], color=plotting.model_colour(m["model"]), label=m["model"])
            ax.annotate(
                m["run"], (value, m["test_accuracy"]), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
        else:
            mark_failed(ax, value, f"{m['run']}: {m['status']}")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel(labels[x])
    ax.set_ylabel("test accuracy (%)")
    plotting.dedup_legend(ax)
    plotting.save(fig, out_png)


def plot_dropout_sweep(
    metrics_paths: Sequence[str | Path], groups: dict[str, list[str]], out_png: str | Path
) -> None:
    """Test accuracy and the train-test gap (points) against dropout p, one line per group."""
    if not groups:
        raise ValueError(
            "this study has no dropout sweep: give a run `sweep: {dropout: [...]}` in the config"
        )
    by_run = _by_run(metrics_paths)
    fig, axes = plotting.figure(ncols=2, sharex=True, layout="constrained")
    acc_ax, gap_ax = axes[0]
    for i, (label, names) in enumerate(groups.items()):
        colour = plotting.series_colour(i)
        ok = [by_run[n] for n in names if by_run[n]["status"] == "ok"]
        p = [m["dropout"] for m in ok]
        acc_ax.plot(p, [m["test_accuracy"] for m in ok], "o-", color=colour, label=label)
        gap_ax.plot(p, [train_test_gap(m) for m in ok], "o-", color=colour, label=label)
        for m in (by_run[n] for n in names if by_run[n]["status"] != "ok"):
            for ax in (acc_ax, gap_ax):
                mark_failed(ax, m["dropout"], m["status"])
    acc_ax.set(xlabel="dropout p", ylabel="test accuracy (%)", title="accuracy")
    acc_ax.set_ylim(bottom=0)
    gap_ax.set(xlabel="dropout p", ylabel="train - test accuracy (points)", title="overfitting (gap)")
    gap_ax.axhline(0, color="#999999", linewidth=0.8)
    plotting.dedup_legend(acc_ax)
    plotting.save(fig, out_png)


def plot_optimizers(
    metrics_paths: Sequence[str | Path],
    history_paths: Sequence[str | Path],
    groups: dict[str, list[str]],
    out_png: str | Path,
) -> None:
    """Test loss and test accuracy per epoch, one line per optimizer; one row of panels per group."""
    if not groups:
        raise ValueError("this study has no optimizer sweep: give a run `sweep: {optimizer: [...]}`")
    by_run = _by_run(metrics_paths)
    histories = {m["run"]: read_history(h) for m, h in zip(by_run.values(), history_paths, strict=True)}
    fig, axes = plotting.figure(ncols=2, nrows=len(groups), layout="constrained")
    for row, (label, names) in zip(axes, groups.items(), strict=True):
        loss_ax, acc_ax = row
        for i, name in enumerate(names):
            m, history = by_run[name], histories[name]
            epochs = [h["epoch"] for h in history]
            tag = m["optimizer"] + ("" if m["status"] == "ok" else f" ({m['status']})")
            style = {"color": plotting.series_colour(i), "label": tag, "marker": "o", "markersize": 3}
            loss_ax.plot(epochs, [h["test_loss"] for h in history], **style)
            acc_ax.plot(epochs, [h["test_accuracy"] for h in history], **style)
        loss_ax.set(ylabel="test loss (nats)", title=f"{label}: test loss")
        acc_ax.set(ylabel="test accuracy (%)", title=f"{label}: test accuracy")
        plotting.epoch_axis(loss_ax)
        plotting.epoch_axis(acc_ax)
        loss_ax.legend()
    plotting.save(fig, out_png)


def plot_learning_curves(
    metrics_paths: Sequence[str | Path], history_paths: Sequence[str | Path], out_png: str | Path
) -> None:
    """Small multiples: train and test accuracy per epoch of every run, on one shared y axis.

    The shaded area between the curves is the train-test gap, so overfitting shows as a
    widening band. A diverged run's panel says so in red.
    """
    metrics = [load_metrics(p) for p in metrics_paths]
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plotting.figure(ncols=ncols, nrows=nrows, size=(2.6, 2.0), sharey=True, layout="constrained")
    for ax, m, path in zip(axes.flat, metrics, history_paths, strict=False):
        history = read_history(path)
        epochs = [h["epoch"] for h in history]
        train = [h["train_accuracy"] for h in history]
        test = [h["test_accuracy"] for h in history]
        colour = plotting.model_colour(m["model"])
        ax.plot(epochs, train, "--", color=colour, label="train")
        ax.plot(epochs, test, "-", color=colour, label="test")
        pairs = [
            (e, a, b)
            for e, a, b in zip(epochs, train, test, strict=True)
            if math.isfinite(a) and math.isfinite(b)
        ]
        if pairs:
            e, a, b = zip(*pairs, strict=True)
            ax.fill_between(e, a, b, color=colour, alpha=0.15, linewidth=0)
        ax.set_title(m["run"], fontsize=8, color=FAILED_COLOUR if m["status"] != "ok" else "black")
        if m["status"] != "ok":
            ax.text(
                0.5, 0.5, status_text(m), transform=ax.transAxes, ha="center", color=FAILED_COLOUR, fontsize=7
            )
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    for ax in axes.flat:
        plotting.epoch_axis(ax)
    axes[0, 0].legend(loc="lower right")
    plotting.save(fig, out_png)


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
