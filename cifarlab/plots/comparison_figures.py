"""The comparison figures of one dataset: every run of the study side by side (accuracy against
parameters and time, the sweeps, all learning curves, all LR range tests). Each is an entry of
`cifarlab.plots.figures.FIGURES`, drawn by its own plot rule from the results.

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

from cifarlab.analysis.lr_finder import median_curve
from cifarlab.analysis.stats import summarise
from cifarlab.plots import style as plotting
from cifarlab.study.results import (
    group_seeds,
    load_metrics,
    read_history,
    read_json,
    seeds_status,
    status_text,
    train_test_gap,
)

FAILED_COLOUR = "#C00000"
SEED_STYLE = {"s": 10, "alpha": 0.45, "linewidths": 0, "zorder": 2}
MEAN_STYLE = {"fmt": "o", "markersize": 5, "capsize": 3, "elinewidth": 1.2, "zorder": 3}


def _by_run(paths: Sequence[str | Path]) -> dict[str, list[dict]]:
    """run -> its seeds' metrics (ascending seed), in first-seen order."""
    return {run: seeds for (_, run), seeds in group_seeds([load_metrics(p) for p in paths]).items()}


def _ok(m: dict) -> bool:
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


def _seeds_and_mean(ax, xs: Sequence[float], ys: Sequence[float], colour: str, label: str) -> tuple:
    """One point per seed at (xs, ys) and the mean with ± sd error bars (none for one seed).

    Returns the mean (x, y)."""
    ax.scatter(xs, ys, color=colour, **SEED_STYLE)
    x, y = summarise(xs), summarise(ys)
    ax.errorbar(x.mean, y.mean, yerr=y.sd or 0.0, color=colour, label=label, **MEAN_STYLE)
    return x.mean, y.mean


def plot_accuracy_scatter(metrics_paths: Sequence[str | Path], x: str, out_png: str | Path) -> None:
    """Test accuracy (%) of every run against `params_total` or `train_seconds` (log axis): one
    point per seed, the mean ± sd over the seeds with an error bar.

    Seeds without an accuracy (diverged, failed) are drawn as red crosses on the bottom edge.
    """
    labels = {"params_total": "parameters (total)", "train_seconds": "training time (s)"}
    if x not in labels:
        raise ValueError(f"x must be one of {list(labels)}, got {x!r}")
    fig, axes = plotting.figure(size=(6.0, 4.0), layout="constrained")
    ax = axes[0, 0]
    labelled: list[float] = []  # the x of each failed run's label so far
    for run, seeds in _by_run(metrics_paths).items():
        ok = [m for m in seeds if _ok(m)]
        if ok:
            colour = plotting.model_colour(ok[0]["model"])
            xs, ys = [m[x] for m in ok], [m["test_accuracy"] for m in ok]
            at = _seeds_and_mean(ax, xs, ys, colour, ok[0]["model"])
            ax.annotate(run, at, fontsize=6, xytext=(4, 3), textcoords="offset points")
        failed = [m for m in seeds if not _ok(m)]
        for m in failed[1:]:
            mark_failed(ax, m[x])
        if failed:  # one label per run, stacked over the labels of other runs at the same x
            level = labelled.count(failed[0][x])
            labelled.append(failed[0][x])
            which = f" (seed {', '.join(str(m['seed']) for m in failed)})" if len(seeds) > 1 else ""
            mark_failed(ax, failed[0][x], f"{run}: {failed[0]['status']}{which}", level)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel(labels[x])
    ax.set_ylabel("test accuracy (%), mean ± sd over seeds")
    plotting.dedup_legend(ax)
    plotting.save(fig, out_png)


def plot_dropout_sweep(
    metrics_paths: Sequence[str | Path], groups: dict[str, list[str]], out_png: str | Path
) -> None:
    """Test accuracy and the train-test gap (points) against dropout p, one line (through the means
    over seeds, ± sd error bars, one point per seed) per group."""
    if not groups:
        raise ValueError(
            "this study has no dropout sweep: give a run `sweep: {dropout: [...]}` in the config"
        )
    by_run = _by_run(metrics_paths)
    fig, axes = plotting.figure(ncols=2, sharex=True, layout="constrained")
    acc_ax, gap_ax = axes[0]
    for i, (label, names) in enumerate(groups.items()):
        colour = plotting.series_colour(i)
        for ax, value in ((acc_ax, lambda m: m["test_accuracy"]), (gap_ax, train_test_gap)):
            means = []
            for name in names:
                ok = [m for m in by_run[name] if _ok(m) and value(m) is not None]
                if ok:
                    means.append(
                        _seeds_and_mean(ax, [m["dropout"] for m in ok], [value(m) for m in ok], colour, label)
                    )
                for m in (m for m in by_run[name] if not _ok(m)):
                    mark_failed(ax, m["dropout"], m["status"])
            if means:
                ax.plot(*zip(*means, strict=True), "-", color=colour, linewidth=1)
    acc_ax.set(xlabel="dropout p", ylabel="test accuracy (%)", title="accuracy (mean ± sd)")
    acc_ax.set_ylim(bottom=0)
    gap_ax.set(xlabel="dropout p", ylabel="train - test accuracy (points)", title="overfitting (gap)")
    gap_ax.axhline(0, color="#999999", linewidth=0.8)
    plotting.dedup_legend(acc_ax)
    plotting.save(fig, out_png)


def _mean_curve(histories: Sequence[list[dict]], key: str) -> tuple[list[int], list[float], list[float]]:
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


def _seed_histories(
    metrics_paths: Sequence[str | Path], history_paths: Sequence[str | Path]
) -> dict[str, list[tuple[dict, list[dict]]]]:
    """run -> (metrics, history) of each of its seeds, in ascending seed order (paths aligned)."""
    metrics = [load_metrics(p) for p in metrics_paths]
    history = {id(m): read_history(p) for m, p in zip(metrics, history_paths, strict=True)}
    return {run: [(m, history[id(m)]) for m in seeds] for (_, run), seeds in group_seeds(metrics).items()}


def _averaged(seeds: Sequence[tuple[dict, list[dict]]]) -> list[list[dict]]:
    """The histories a mean curve averages: the seeds with an accuracy (a diverged seed is drawn,
    not averaged in), or every seed when none has one."""
    return [h for m, h in seeds if _ok(m)] or [h for _, h in seeds]


def _band(ax, seeds: Sequence[tuple[dict, list[dict]]], key: str, colour: str, **style) -> None:
    """The mean of `key` per epoch over the seeds, a ± sd band, each seed a thin line."""
    for _, history in seeds if len(seeds) > 1 else ():
        ax.plot(
            [h["epoch"] for h in history], [h[key] for h in history], color=colour, linewidth=0.5, alpha=0.4
        )
    epochs, mean, sd = _mean_curve(_averaged(seeds), key)
    ax.plot(epochs, mean, color=colour, **style)
    low = [m - s for m, s in zip(mean, sd, strict=True)]
    high = [m + s for m, s in zip(mean, sd, strict=True)]
    ax.fill_between(epochs, low, high, color=colour, alpha=0.15, linewidth=0)


def plot_optimizers(
    metrics_paths: Sequence[str | Path],
    history_paths: Sequence[str | Path],
    groups: dict[str, list[str]],
    out_png: str | Path,
) -> None:
    """Test loss and test accuracy per epoch, one line per optimizer (the mean over its seeds, a ± sd
    band, each seed thin); one row of panels per group. history_paths: aligned with metrics_paths."""
    if not groups:
        raise ValueError("this study has no optimizer sweep: give a run `sweep: {optimizer: [...]}`")
    by_run = _seed_histories(metrics_paths, history_paths)
    fig, axes = plotting.figure(ncols=2, nrows=len(groups), layout="constrained")
    for row, (label, names) in zip(axes, groups.items(), strict=True):
        loss_ax, acc_ax = row
        for i, name in enumerate(names):
            seeds = by_run[name]
            status, _ = seeds_status([m for m, _ in seeds])
            tag = seeds[0][0]["optimizer"] + ("" if status == "ok" else f" ({status})")
            tag += f" (n {len(seeds)})" if len(seeds) > 1 else ""
            style = {"label": tag, "marker": "o", "markersize": 3}
            _band(loss_ax, seeds, "test_loss", plotting.series_colour(i), **style)
            _band(acc_ax, seeds, "test_accuracy", plotting.series_colour(i), **style)
        loss_ax.set(ylabel="test loss (nats)", title=f"{label}: test loss")
        acc_ax.set(ylabel="test accuracy (%)", title=f"{label}: test accuracy")
        plotting.epoch_axis(loss_ax)
        plotting.epoch_axis(acc_ax)
        loss_ax.legend()
    plotting.save(fig, out_png)


def plot_learning_curves(
    metrics_paths: Sequence[str | Path], history_paths: Sequence[str | Path], out_png: str | Path
) -> None:
    """Small multiples, one panel per run: train and test accuracy per epoch (the mean over its
    seeds; each seed a thin line), on one shared y axis. history_paths: aligned with metrics_paths.

    The shaded area between the mean curves is the train-test gap, so overfitting shows as a
    widening band. A panel of a run with a diverged seed says so in red.
    """
    runs = _seed_histories(metrics_paths, history_paths)
    ncols = min(4, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    fig, axes = plotting.figure(ncols=ncols, nrows=nrows, size=(2.6, 2.0), sharey=True, layout="constrained")
    for ax, (run, with_history) in zip(axes.flat, runs.items(), strict=False):
        seeds = [m for m, _ in with_history]
        colour = plotting.model_colour(seeds[0]["model"])
        for _, history in with_history if len(seeds) > 1 else ():
            for key, line in (("train_accuracy", "--"), ("test_accuracy", "-")):
                ax.plot([h["epoch"] for h in history], [h[key] for h in history], line, color=colour,
                        linewidth=0.5, alpha=0.4)  # fmt: skip
        epochs, train, _ = _mean_curve(_averaged(with_history), "train_accuracy")
        _, test, _ = _mean_curve(_averaged(with_history), "test_accuracy")
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
        bad = [m for m in seeds if m["status"] != "ok"]
        title = run + (f" (n {len(seeds)})" if len(seeds) > 1 else "")
        ax.set_title(title, fontsize=8, color=FAILED_COLOUR if bad else "black")
        if bad:
            statuses = ", ".join(dict.fromkeys(m["status"] for m in bad))
            words = status_text(bad[0]) if len(seeds) == 1 else f"{len(bad)} of {len(seeds)} seeds {statuses}"
            ax.text(0.5, 0.5, words, transform=ax.transAxes, ha="center", color=FAILED_COLOUR, fontsize=7)
    for ax in list(axes.flat)[len(runs) :]:
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
