"""The comparison report: one row per run, the lab's numbers beside ours, diffs between studies.

Reads only the files of docs/architecture.md (`metrics.json`, `history.csv`, the LR-finder and
saliency JSON, `source.json`, the prepared tensors, Snakemake's benchmark TSVs) and writes
`results/report/{index.html,summary.md,metrics.csv}`. The comparison figures of the page are
drawn here too, each by its own plot rule (`workflow/rules/plots.smk`).

A run that diverged or failed stays a row with its status: it is never dropped from a table,
never drawn as if it had an accuracy, and never part of a best-of.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import math
import os
import platform
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from cifarlab import plotting
from cifarlab.files import write_text
from cifarlab.lr_finder import median_curve
from cifarlab.models.specs import UnknownModel, model_spec
from cifarlab.train import HISTORY_COLUMNS  # the columns train writes

# --- reading the step outputs ------------------------------------------------------------

# Keys of metrics.json that every run has (docs/architecture.md); checked so that a stale or
# foreign file fails here with its path, not as a KeyError deep in a figure.
METRICS_KEYS = (
    "run",
    "model",
    "status",
    "test_accuracy",
    "best_epoch",
    "params_total",
    "params_trainable",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "lr_source",
    "dropout",
    "pretrained",
    "train_seconds",
    "images_per_second",
    "device",
    "settings",
)

# Columns of a reference file such as config/lab-reference.csv; `pretrained` marks numbers that came
# from ImageNet weights (transfer learning).
REFERENCE_COLUMNS = ("run", "model", "pretrained", "test_accuracy", "note")
# The lab's numbers are CIFAR-10 test accuracies: runs on other data are not set against them.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def load_metrics(path: str | Path) -> dict:
    """One run's metrics.json, checked for the keys the report uses."""
    metrics = read_json(path)
    missing = [k for k in METRICS_KEYS if k not in metrics]
    if missing:
        raise ValueError(
            f"{path} lacks {missing} (see docs/architecture.md for metrics.json); "
            "it was written by an older evaluate step: delete it and rerun the workflow"
        )
    return metrics


def _number(text: str) -> float | None:
    """A CSV cell as a float; empty, 'nan' and non-finite cells are None (a diverged epoch)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def load_history(path: str | Path) -> list[dict[str, float | None]]:
    """history.csv as one dict per epoch (accuracies in %, losses in nats, seconds)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in HISTORY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing}; expected {list(HISTORY_COLUMNS)}")
        return [{c: _number(row[c]) for c in HISTORY_COLUMNS} for row in reader]


def _truthy(text: str) -> bool:
    return str(text).strip().lower() in ("true", "1", "yes")


def load_reference(path: str | Path | None) -> dict[str, dict]:
    """The lab's reported numbers (config/lab-reference.csv): run name -> row.

    `pretrained` says whether the lab's number came from ImageNet weights, so that our runs
    without them are not set against it.
    """
    if not path:
        return {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REFERENCE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing}; expected {list(REFERENCE_COLUMNS)}")
        rows = {}
        for row in reader:
            accuracy = _number(row["test_accuracy"])
            if accuracy is None:
                raise ValueError(f"{path}: run {row['run']!r} has test_accuracy {row['test_accuracy']!r}")
            rows[row["run"]] = {**row, "test_accuracy": accuracy, "pretrained": _truthy(row["pretrained"])}
        return rows


# --- the comparison table ----------------------------------------------------------------


def variant(metrics: dict) -> str:
    """What distinguishes this run within its config entry: its sweep values, or '-'."""
    sweep = metrics["settings"].get("sweep") or {}
    return ", ".join(f"{k} {v}" for k, v in sweep.items()) or "-"


def status_text(metrics: dict) -> str:
    """'ok', or 'diverged at epoch 3 (lr 0.5)', or the status as written."""
    status = metrics["status"]
    info = metrics.get("diverged")
    if status == "diverged" and info:
        lr = info.get("lr")
        return f"diverged at epoch {info.get('epoch')}" + (f" (lr {lr:.3g})" if lr is not None else "")
    return str(status)


def lab_comparison(metrics: dict, reference: dict[str, dict]) -> tuple[float | None, float | None, str]:
    """(lab accuracy, ours - lab in points, note) for one run; None where they do not compare."""
    lab = reference.get(metrics["run"])
    if lab is None:
        return None, None, ""
    if lab["model"] != metrics["model"]:
        return None, None, f"lab row is {lab['model']}, this run is {metrics['model']}"
    if tuple(metrics.get("classes") or ()) != CIFAR10_CLASSES:
        return None, None, f"not CIFAR-10 data: the lab's {lab['test_accuracy']:.2f} is a CIFAR-10 accuracy"
    if lab["pretrained"] and not metrics["pretrained"]:
        return None, None, f"not pretrained: the lab's {lab['test_accuracy']:.2f} used ImageNet weights"
    if metrics["status"] != "ok" or metrics["test_accuracy"] is None:
        return lab["test_accuracy"], None, f"{metrics['status']}: no accuracy to compare"
    return lab["test_accuracy"], metrics["test_accuracy"] - lab["test_accuracy"], lab.get("note", "")


def _pretrainable(model: str | None) -> bool:
    """Whether a model could have started from ImageNet weights (its spec, cifarlab.models.specs)."""
    try:
        return model is not None and model_spec(model).pretrainable
    except UnknownModel:
        return False


def comparison_row(metrics: dict, reference: dict[str, dict]) -> dict:
    """One row of the comparison table (values, not formatted text)."""
    ok = metrics["status"] == "ok"
    lab_accuracy, lab_difference, lab_note = lab_comparison(metrics, reference)
    model = metrics["model"]
    if _pretrainable(metrics["settings"].get("model")) and not metrics["pretrained"]:
        model = f"{model} (not pretrained)"
    return {
        "run": metrics["run"],
        "model": model,
        "variant": variant(metrics),
        "dropout": metrics["dropout"],
        "optimizer": metrics["optimizer"],
        "params_total": metrics["params_total"],
        "params_trainable": metrics["params_trainable"],
        "epochs": metrics["epochs"],
        "batch_size": metrics["batch_size"],
        "lr": metrics["lr"],
        "lr_source": metrics["lr_source"],
        "test_accuracy": metrics["test_accuracy"] if ok else None,
        # test-time augmentation: its own column, never in place of the plain accuracy
        "tta_test_accuracy": metrics.get("tta_test_accuracy") if ok else None,
        "tta": metrics.get("tta", "none"),
        "best_epoch": metrics["best_epoch"],
        "train_seconds": metrics["train_seconds"],
        "images_per_second": metrics["images_per_second"],
        "device": metrics["device"],
        "status": metrics["status"],
        "status_text": status_text(metrics),
        "lab_accuracy": lab_accuracy,
        "lab_difference": lab_difference,
        "lab_note": lab_note,
    }


def comparison_rows(metrics: Sequence[dict], reference: dict[str, dict]) -> list[dict]:
    """One row per run, in the given (config) order, whatever its status."""
    return [comparison_row(m, reference) for m in metrics]


def fmt(value: Any, kind: str = "") -> str:
    """A table cell: '-' for missing; thousands separators; accuracies to 2 decimals."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if kind == "pct":
        return f"{value:.2f}"
    if kind == "diff":
        return f"{value:+.2f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "lr":
        return f"{value:.3g}"
    if kind == "seconds":
        return duration(value)
    if kind == "rate":
        return f"{value:,.0f}"
    return str(value)


def duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 2 h 03 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# (header, row key, format kind) of the comparison table, shared by the page and summary.md.
# The result columns come first, so that a phone shows them without scrolling.
TABLE = (
    ("run", "run", ""),
    ("model", "model", ""),
    ("variant", "variant", ""),
    ("test acc. %", "test_accuracy", "pct"),
    ("with TTA %", "tta_test_accuracy", "pct"),
    ("lab %", "lab_accuracy", "pct"),
    ("ours - lab", "lab_difference", "diff"),
    ("status", "status_text", ""),
    ("dropout p", "dropout", ""),
    ("optimizer", "optimizer", ""),
    ("params", "params_total", "int"),
    ("trainable", "params_trainable", "int"),
    ("epochs", "epochs", ""),
    ("batch", "batch_size", ""),
    ("lr", "lr", "lr"),
    ("lr from", "lr_source", ""),
    ("best epoch", "best_epoch", ""),
    ("train time", "train_seconds", "seconds"),
    ("images/s", "images_per_second", "rate"),
    ("device", "device", ""),
)


def table_cells(row: dict) -> list[str]:
    return [fmt(row[key], kind) for _, key, kind in TABLE]


def summary_markdown(rows: Sequence[dict], notes: Iterable[str] = ()) -> str:
    """The comparison table as a GitHub-flavoured Markdown table, with the lab notes below it."""
    lines = ["| " + " | ".join(h for h, _, _ in TABLE) + " |", "|" + "---|" * len(TABLE)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_cells(row)) + " |")
    footnotes = [f"- {row['run']}: {row['lab_note']}" for row in rows if row["lab_note"]]
    footnotes += [f"- {note}" for note in notes]
    return "\n".join(lines) + ("\n\n" + "\n".join(footnotes) if footnotes else "") + "\n"


# --- metrics.csv: every metric of every run, flat --------------------------------------------

METRIC_COLUMNS = (
    "run",
    "model",
    "status",
    "test_accuracy",
    "test_loss",
    "tta",
    "tta_test_accuracy",
    "tta_test_loss",
    "best_epoch",
    "best_test_accuracy",
    "final_train_accuracy",
    "train_test_gap",
    "params_total",
    "params_trainable",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "lr_source",
    "dropout",
    "pretrained",
    "freeze",
    "image_size",
    "train_seconds",
    "images_per_second",
    "device",
    "precision",
    "diverged_epoch",
    "diverged_lr",
    "diverged_loss",
    "lab_accuracy",
    "lab_difference",
)


def train_test_gap(metrics: dict) -> float | None:
    """Final train accuracy minus test accuracy (points): how much the run overfits."""
    if metrics["status"] != "ok" or metrics.get("final_train_accuracy") is None:
        return None
    if metrics["test_accuracy"] is None:
        return None
    return metrics["final_train_accuracy"] - metrics["test_accuracy"]


def flat_metrics(metrics: dict, reference: dict[str, dict]) -> dict[str, Any]:
    """One metrics.csv row: the scalar metrics, per-class accuracy and every run setting.

    Settings become `param.<name>` columns (nested ones as JSON) so that a diff of two studies
    can show which settings changed, as `dvc params diff` does.
    """
    diverged = metrics.get("diverged") or {}
    lab_accuracy, lab_difference, _ = lab_comparison(metrics, reference)
    row = {k: metrics.get(k) for k in METRIC_COLUMNS}
    row.update(
        train_test_gap=train_test_gap(metrics),
        diverged_epoch=diverged.get("epoch"),
        diverged_lr=diverged.get("lr"),
        diverged_loss=diverged.get("loss"),
        lab_accuracy=lab_accuracy,
        lab_difference=lab_difference,
    )
    for name, accuracy in (metrics.get("per_class_accuracy") or {}).items():
        row[f"per_class_accuracy.{name}"] = accuracy
    for name, value in sorted(metrics["settings"].items()):
        row[f"param.{name}"] = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
    return row


def csv_text(rows: Sequence[dict]) -> str:
    """Rows (dicts, possibly with different keys) as CSV; columns in first-seen order, None empty."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


# --- comparing two studies -------------------------------------------------------------------

# Metrics shown for every run in a diff (others are in metrics.csv); numeric ones get a change.
DIFF_METRICS = (
    "status",
    "test_accuracy",
    "test_loss",
    "best_test_accuracy",
    "train_test_gap",
    "params_total",
    "train_seconds",
    "images_per_second",
)


def load_study(path: str | Path) -> dict[str, dict[str, str]]:
    """Another study's metrics as run -> {column: text}, from a metrics.csv or a results folder.

    A folder may be a project root (`results/report/metrics.csv`), a `results/` folder, or one
    whose `runs/<run>/metrics.json` exist (a study whose report was never built).
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "report" / "metrics.csv", path / "results" / "report" / "metrics.csv"):
            if candidate.is_file():
                return load_study(candidate)
        jsons = sorted(path.glob("runs/*/metrics.json")) or sorted(path.glob("results/runs/*/metrics.json"))
        if not jsons:
            raise FileNotFoundError(
                f"report.compare_to: {path} holds no report/metrics.csv and no runs/*/metrics.json; "
                "give a metrics.csv or the results folder of another study"
            )
        rows = [flat_metrics(load_metrics(p), {}) for p in jsons]
        return {r["run"]: {k: "" if v is None else str(v) for k, v in r.items()} for r in rows}
    if not path.is_file():
        raise FileNotFoundError(
            f"report.compare_to: {path} does not exist; give a metrics.csv or a results folder"
        )
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "run" not in (reader.fieldnames or []):
            raise ValueError(f"report.compare_to: {path} has no 'run' column; is it a metrics.csv?")
        return {row["run"]: row for row in reader}


def diff_studies(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of (run, kind, name, theirs, ours, change), like `dvc metrics diff` + `params diff`.

    Every run of either study appears: runs only on one side get a 'run' row saying so. For runs
    in both, each of DIFF_METRICS that either side has is listed (change = ours - theirs when both
    are numbers), and only the params (`param.*` columns) that differ.
    """
    rows = []
    for run in list(ours) + [r for r in theirs if r not in ours]:
        if run not in theirs or run not in ours:
            change = "added" if run not in theirs else "removed"
            present = {"theirs": "yes" if run in theirs else "no", "ours": "yes" if run in ours else "no"}
            rows.append({"run": run, "kind": "run", "name": "present", **present, "change": change})
            continue
        a, b = theirs[run], ours[run]
        for name in DIFF_METRICS:
            old, new = _cell(a.get(name)), _cell(b.get(name))
            if old is None and new is None:
                continue
            change = new - old if isinstance(old, float) and isinstance(new, float) else None
            rows.append(
                {"run": run, "kind": "metric", "name": name, "theirs": old, "ours": new, "change": change}
            )
        for name in sorted({k for k in [*a, *b] if k.startswith("param.")}):
            old, new = _cell(a.get(name)), _cell(b.get(name))
            if old != new:
                rows.append(
                    {
                        "run": run,
                        "kind": "param",
                        "name": name[6:],
                        "theirs": old,
                        "ours": new,
                        "change": None,
                    }
                )
    return rows


def _cell(value: Any) -> Any:
    """A value from a CSV or a fresh row, normalised so that '0.01' and 0.01 compare equal."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return str(value)  # as the CSV holds it: 'True'
    number = _number(value)
    return number if number is not None else str(value)


# --- the LR finder and saliency results --------------------------------------------------------


def lr_finder_summary(result: dict) -> list[dict]:
    """Per suggestion method: median lr, spread (decades) across repeats, and whether it is chosen."""
    chosen = result.get("chosen")
    return [
        {
            "method": method,
            "median": s.get("median"),
            "spread": s.get("spread_decades"),
            "chosen": method == chosen,
        }
        for method, s in result["suggestions"].items()
    ]


def sanity_verdicts(result: dict) -> list[dict]:
    """Per saliency method of one run: the Spearman correlation of the trained model's maps with
    the fully randomised model's (None: the random map was constant), the verdict, and the
    methods that do not apply to the model (verdict None, with the reason)."""
    rows = [
        {"method": method, "spearman": check["fully_randomised"], "passes": check["passes"], "note": ""}
        for method, check in result["sanity"]["methods"].items()
    ]
    rows += [
        {"method": method, "spearman": None, "passes": None, "note": str(reason)}
        for method, reason in (result.get("unsupported") or {}).items()
    ]
    return rows


# --- provenance ------------------------------------------------------------------------------

PACKAGES = (
    "torch",
    "torchvision",
    "snakemake",
    "matplotlib",
    "captum",
    "vit-pytorch",
    "torch-optimizer",
    "numpy",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def benchmark_seconds(paths: Iterable[str | Path]) -> dict[str, float]:
    """Wall seconds per rule from Snakemake benchmark TSVs (`results/benchmarks/<rule>/...`)."""
    totals: dict[str, float] = {}
    for path in paths:
        path = Path(path)
        parts = path.parts
        rule = parts[parts.index("benchmarks") + 1] if "benchmarks" in parts else path.parent.name
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                totals[rule] = totals.get(rule, 0.0) + (_number(row.get("s")) or 0.0)
    return totals


def class_counts(prepared: str | Path) -> dict[str, int]:
    """Images per class of a prepared split (only its labels are read from disk)."""
    import torch

    data = torch.load(prepared, map_location="cpu", weights_only=True, mmap=True)
    counts = torch.bincount(data["labels"], minlength=len(data["classes"])).tolist()
    return dict(zip(data["classes"], counts, strict=True))


# --- comparison figures ------------------------------------------------------------------------


def sweep_groups(runs: dict[str, dict], setting: str) -> dict[str, list[str]]:
    """Runs whose config `sweep` varies `setting`, grouped: label -> run names in config order.

    Runs of one entry that differ in another swept setting (an optimizer x lr grid) form
    separate groups, labelled `entry (lr 0.01)`, so that each line varies `setting` only.
    """
    groups: dict[str, list[str]] = {}
    for name, run in runs.items():
        sweep = run.get("sweep") or {}
        if setting not in sweep:
            continue
        others = ", ".join(f"{k} {v}" for k, v in sweep.items() if k != setting)
        groups.setdefault(run["entry"] + (f" ({others})" if others else ""), []).append(name)
    return groups


def run_labels(run: dict, figure: str) -> dict[str, str]:
    """Labels (table columns) of a per-run figure in Snakemake's report: run, model, dropout, optimizer."""
    return {
        "run": run["name"],
        "model": run["model"],
        "dropout": f"{run['dropout']:g}",
        "optimizer": run["optimizer"],
        "figure": figure,
    }


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


def plot_accuracy_scatter(metrics_paths: Sequence[str | Path], x: str, output: str | Path) -> None:
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
    plotting.save(fig, output)


def plot_dropout_sweep(metrics_paths: Sequence[str | Path], groups: dict[str, list[str]], output) -> None:
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
    plotting.save(fig, output)


def plot_optimizers(
    metrics_paths: Sequence[str | Path],
    history_paths: Sequence[str | Path],
    groups: dict[str, list[str]],
    output: str | Path,
) -> None:
    """Test loss and test accuracy per epoch, one line per optimizer; one row of panels per group."""
    if not groups:
        raise ValueError("this study has no optimizer sweep: give a run `sweep: {optimizer: [...]}`")
    by_run = _by_run(metrics_paths)
    histories = {m["run"]: load_history(h) for m, h in zip(by_run.values(), history_paths, strict=True)}
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
    plotting.save(fig, output)


def plot_learning_curves(
    metrics_paths: Sequence[str | Path], history_paths: Sequence[str | Path], output: str | Path
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
        history = load_history(path)
        epochs = [h["epoch"] for h in history]
        train = [h["train_accuracy"] for h in history]
        test = [h["test_accuracy"] for h in history]
        colour = plotting.model_colour(m["model"])
        ax.plot(epochs, train, "--", color=colour, label="train")
        ax.plot(epochs, test, "-", color=colour, label="test")
        pairs = [
            (e, a, b) for e, a, b in zip(epochs, train, test, strict=True) if a is not None and b is not None
        ]
        if pairs:
            e, a, b = zip(*pairs, strict=True)
            ax.fill_between(e, a, b, color=colour, alpha=0.15, linewidth=0)
        ax.set_title(m["run"], fontsize=8, color=FAILED_COLOUR if m["status"] != "ok" else "black")
        if m["status"] != "ok":
            ax.text(
                0.5, 0.5, status_text(m), transform=ax.transAxes, ha="center", color="#C00000", fontsize=7
            )
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    for ax in axes.flat:
        plotting.epoch_axis(ax)
    axes[0, 0].legend(loc="lower right")
    plotting.save(fig, output)


def plot_lr_finder_comparison(result_paths: Sequence[str | Path], output: str | Path) -> None:
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
    plotting.save(fig, output)


# --- the page -------------------------------------------------------------------------------

CSS = """
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; }
body { margin: 0 auto; max-width: 1100px; padding: 0 12px 40px; line-height: 1.45; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85rem; white-space: nowrap; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr.bad td { background: #fde8e8; color: #8a0000; }
.pos { color: #006400; } .neg { color: #a00000; }
figure { margin: 1rem 0; } figcaption { font-size: 0.85rem; color: #555; }
img { max-width: 100%; height: auto; display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px; }
details { margin: 0.5rem 0; } summary { cursor: pointer; font-weight: 600; }
code { font-size: 0.85em; word-break: break-all; }
"""

# Captions of the page's figures (the Snakemake report's captions are in workflow/report/).
FIGURE_CAPTIONS = {
    "accuracy_vs_params": "Test accuracy against the number of parameters (log axis), one point per run. "
    "Red crosses on the bottom edge: runs with no accuracy (diverged or failed).",
    "accuracy_vs_time": "Test accuracy against training time (log axis), one point per run.",
    "dropout_sweep": "The dropout sweep: test accuracy (left) and the train-test accuracy gap (right) "
    "against the dropout probability p.",
    "optimizers": "The optimizer comparison: test loss and test accuracy per epoch.",
    "learning_curves": "Train (dashed) and test (solid) accuracy per epoch of every run; the shaded band "
    "is the train-test gap, so overfitting shows as a widening band.",
    "lr_finder": "LR range tests: median smoothed loss over repeats (band: min-max), the chosen "
    "suggestion (dotted) and its spread across repeats (shaded span).",
    "saliency_comparison": "Saliency maps of the same test images, one column per model.",
}


def data_uri(path: str | Path) -> str:
    """A PNG (or any image) as a data: URI, so that the page needs no other file."""
    path = Path(path)
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{mime.get(path.suffix.lower(), 'application/octet-stream')};base64,{data}"


def _figure_html(path: str | Path, caption: str) -> str:
    alt = html.escape(caption.split(":")[0] if caption else Path(path).stem)
    return (
        f'<figure><img src="{data_uri(path)}" alt="{alt}">'
        f"<figcaption>{html.escape(caption)} <code>{html.escape(str(path))}</code></figcaption></figure>"
    )


def _cell_html(tag: str, text: str, is_text: bool) -> str:
    cls = ' class="text"' if is_text else ""
    return f"<{tag}{cls}>{html.escape(text)}</{tag}>"


def _table_html(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    classes: Sequence[str] = (),
    text_columns: int = 1,
    table_id: str = "",
) -> str:
    """A table in a horizontally scrolling box (phones); the first `text_columns` align left."""
    head = "".join(_cell_html("th", h, i < text_columns) for i, h in enumerate(headers))
    body = []
    for r, cells in enumerate(rows):
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        body.append(
            f"<tr{cls}>"
            + "".join(_cell_html("td", c, i < text_columns) for i, c in enumerate(cells))
            + "</tr>"
        )
    ident = f' id="{table_id}"' if table_id else ""
    return (
        f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def comparison_table_html(rows: Sequence[dict]) -> str:
    headers = [h for h, _, _ in TABLE]
    classes = ["" if row["status"] == "ok" else "bad" for row in rows]
    table = _table_html(headers, [table_cells(r) for r in rows], classes, text_columns=3, table_id="runs")
    notes = [
        f"<li><b>{html.escape(r['run'])}</b>: {html.escape(r['lab_note'])}</li>"
        for r in rows
        if r["lab_note"]
    ]
    return table + (f"<ul>{''.join(notes)}</ul>" if notes else "")


def diff_table_html(diff: Sequence[dict], label: str) -> str:
    headers = ["run", "kind", "name", f"theirs ({label})", "ours", "change"]
    cells = []
    for d in diff:
        change = d["change"]
        change_text = change if isinstance(change, str) else fmt(change, "diff") if change is not None else ""
        cells.append([d["run"], d["kind"], d["name"], fmt(d["theirs"]), fmt(d["ours"]), change_text])
    return _table_html(headers, cells, text_columns=3, table_id="diff")


def _definition_table(pairs: Iterable[tuple[str, Any]]) -> str:
    return _table_html(["", ""], [[k, fmt(v)] for k, v in pairs], text_columns=2)


def build_page(
    rows: Sequence[dict],
    figures: dict[str, str | Path],
    run_figures: dict[str, dict[str, str | Path]],
    lr_finder: dict[str, dict],
    saliency: dict[str, dict],
    data: dict[str, Any],
    provenance: dict[str, Any],
    diff: Sequence[dict] | None = None,
    diff_label: str = "",
) -> str:
    """The whole report page as one HTML string with every image inlined."""
    ok = [r for r in rows if r["status"] == "ok" and r["test_accuracy"] is not None]
    bad = [r for r in rows if r not in ok]
    best = max(ok, key=lambda r: r["test_accuracy"]) if ok else None
    lead = f"{len(rows)} runs: {len(ok)} finished, {len(bad)} without an accuracy"
    lead += f" ({', '.join(r['run'] + ' ' + r['status'] for r in bad)})" if bad else ""
    lead += f". Best test accuracy: {best['run']}, {best['test_accuracy']:.2f} %." if best else "."
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>cifarlab: comparison report</title>",
        # No network at all: images are data URIs, so nothing else may be fetched.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">",
        f"<style>{CSS}</style></head><body>",
        "<h1>cifarlab: comparison report</h1>",
        f"<p>{html.escape(lead)}</p>",
        "<h2 id='table'>Runs</h2>",
        "<p>Accuracies in %, on the test set after the last epoch. Red rows have no accuracy (diverged or "
        "failed). 'lab %' is the course lab's reported accuracy for the same setting; 'not pretrained' "
        "runs are not set against the lab's ImageNet-pretrained numbers.</p>",
        comparison_table_html(rows),
    ]
    if diff is not None:
        parts += [
            f"<h2 id='diff'>Compared with {html.escape(diff_label)}</h2>",
            diff_table_html(diff, "theirs"),
        ]
    parts.append("<h2 id='figures'>Comparison figures</h2>")
    for name in ("accuracy_vs_params", "accuracy_vs_time", "dropout_sweep", "optimizers", "learning_curves"):
        if name in figures:
            parts.append(_figure_html(figures[name], FIGURE_CAPTIONS[name]))
    if lr_finder:
        parts.append("<h2 id='lr-finder'>Learning-rate finder</h2>")
        if "lr_finder" in figures:
            parts.append(_figure_html(figures["lr_finder"], FIGURE_CAPTIONS["lr_finder"]))
        cells = [
            [
                run,
                s["method"] + (" (chosen)" if s["chosen"] else ""),
                fmt(s["median"], "lr"),
                fmt(s["spread"], "pct"),
            ]
            for run, result in lr_finder.items()
            for s in lr_finder_summary(result)
        ]
        parts.append(
            _table_html(["run", "suggestion", "median lr", "spread (decades)"], cells, text_columns=2)
        )
    if saliency:
        parts.append("<h2 id='saliency'>Saliency</h2>")
        if "saliency_comparison" in figures:
            parts.append(_figure_html(figures["saliency_comparison"], FIGURE_CAPTIONS["saliency_comparison"]))
        cells, classes = [], []
        for run, result in saliency.items():
            for v in sanity_verdicts(result):
                verdict = {True: "passes", False: "FAILS: the maps barely change with random weights"}
                cells.append(
                    [run, v["method"], fmt(v["spearman"], "lr"), verdict.get(v["passes"], v["note"])]
                )
                classes.append("bad" if v["passes"] is False else "")
        parts.append(
            "<p>Sanity check (Adebayo et al. 2018): Spearman rank correlation between the maps of the "
            "trained model and of the same model with randomised weights. A method that explains the "
            "model should change: high correlation fails the check. '-': the randomised model's map was "
            "constant (no rank order), which counts as changed.</p>"
        )
        parts.append(
            _table_html(
                ["run", "method", "Spearman (trained vs random)", "verdict"], cells, classes, text_columns=2
            )
        )
    parts.append("<h2 id='runs'>Per-run figures</h2>")
    for run, kinds in run_figures.items():
        images = "".join(
            _figure_html(path, f"{run}: {kind.replace('_', ' ')}") for kind, path in kinds.items()
        )
        parts.append(
            f"<details><summary>{html.escape(run)}</summary><div class='grid'>{images}</div></details>"
        )
    parts += ["<h2 id='data'>Data</h2>", _data_html(data)]
    parts += ["<h2 id='provenance'>How it was made</h2>", _provenance_html(provenance)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _data_html(data: dict[str, Any]) -> str:
    record = data["record"]
    pairs = [(k, record.get(k)) for k in ("source", "archive", "bytes", "md5", "sha256", "md5_expected")]
    counts = data["counts"]
    classes = list(next(iter(counts.values())))
    table = _table_html(
        ["class", *counts],
        [[c, *(fmt(counts[s].get(c), "int") for s in counts)] for c in classes]
        + [["total", *(fmt(sum(counts[s].values()), "int") for s in counts)]],
    )
    sample = _figure_html(data["samples"], "Sample images per class") if data.get("samples") else ""
    return _definition_table(pairs) + "<h3>Images per class</h3>" + table + sample


def _provenance_html(provenance: dict[str, Any]) -> str:
    compute = provenance["compute_seconds"]
    pairs = [
        ("date (UTC)", provenance["date"]),
        ("config hash", provenance["config_hash"]),
        ("devices", ", ".join(provenance["devices"])),
        ("total compute (benchmarked jobs)", duration(sum(compute.values())) if compute else "-"),
        *((f"  {rule}", duration(seconds)) for rule, seconds in sorted(compute.items())),
        *provenance["versions"].items(),
        ("host", provenance["host"]),
    ]
    return _definition_table(pairs)


def provenance(metrics: Sequence[dict], config_hash: str, benchmarks: Iterable[str | Path]) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "config_hash": config_hash,
        "devices": sorted({str(m["device"]) for m in metrics}),
        "compute_seconds": benchmark_seconds(benchmarks),
        "versions": package_versions(),
        "host": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
    }


def write_report(
    metrics_paths: Sequence[str | Path],
    outputs: dict[str, str | Path],
    *,
    figures: dict[str, str | Path],
    run_figures: dict[str, dict[str, str | Path]],
    lr_finder_paths: Sequence[str | Path] = (),
    saliency_paths: Sequence[str | Path] = (),
    data_record: str | Path,
    data_splits: dict[str, str | Path],
    samples: str | Path | None,
    benchmarks: Sequence[str | Path] = (),
    reference: str | Path | None = None,
    compare_to: str | Path | None = None,
    config_hash: str = "",
) -> list[dict]:
    """Build index.html, summary.md and metrics.csv (`outputs` keys: html, summary, metrics).

    Returns the table rows. Everything is read and checked before anything is written.
    """
    metrics = [load_metrics(p) for p in metrics_paths]
    lab = load_reference(reference)
    rows = comparison_rows(metrics, lab)
    flat = [flat_metrics(m, lab) for m in metrics]
    diff = None
    if compare_to:
        diff = diff_studies({r["run"]: r for r in flat}, load_study(compare_to))
    page = build_page(
        rows,
        figures,
        run_figures,
        lr_finder={Path(p).stem: read_json(p) for p in lr_finder_paths},
        saliency={Path(p).stem: read_json(p) for p in saliency_paths},
        data={
            "record": read_json(data_record),
            "counts": {split: class_counts(path) for split, path in data_splits.items()},
            "samples": samples,
        },
        provenance=provenance(metrics, config_hash, benchmarks),
        diff=diff,
        diff_label=str(compare_to or ""),
    )
    notes = [f"compared with {compare_to}: see index.html"] if compare_to else []
    write_text(csv_text(flat), outputs["metrics"])
    write_text(summary_markdown(rows, notes), outputs["summary"])
    write_text(page, outputs["html"])
    return rows
