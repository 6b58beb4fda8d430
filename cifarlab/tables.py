"""The report's tables as values: the runs table beside the lab's numbers (the page and
summary.md), metrics.csv rows, the diff between two studies, and the LR finder's and saliency's
summary tables. Formatting to HTML is cifarlab.page's.

A run that diverged or failed stays a row with its status: it is never dropped from a table and
never part of a best-of. No torch or matplotlib here.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cifarlab.models.specs import UnknownModel, model_spec
from cifarlab.progress import duration
from cifarlab.results import finite_number, load_metrics, status_text

# Columns of a reference file such as config/lab-reference.csv; `pretrained` marks numbers that came
# from ImageNet weights (transfer learning).
REFERENCE_COLUMNS = ("run", "model", "pretrained", "test_accuracy", "note")
# The lab's numbers are CIFAR-10 test accuracies: runs on other data are not set against them.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# --- the lab's numbers ---------------------------------------------------------------------


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
            accuracy = finite_number(row["test_accuracy"])
            if accuracy is None:
                raise ValueError(f"{path}: run {row['run']!r} has test_accuracy {row['test_accuracy']!r}")
            rows[row["run"]] = {**row, "test_accuracy": accuracy, "pretrained": _truthy(row["pretrained"])}
        return rows


# --- the comparison table ----------------------------------------------------------------


def variant(metrics: dict) -> str:
    """What distinguishes this run within its config entry: its sweep values, or '-'."""
    sweep = metrics["settings"].get("sweep") or {}
    return ", ".join(f"{k} {v}" for k, v in sweep.items()) or "-"


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
        return duration(value, exact=True)
    if kind == "rate":
        return f"{value:,.0f}"
    return str(value)


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
    number = finite_number(value)
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
