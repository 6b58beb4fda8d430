"""Reading the files the steps write (docs/architecture.md): metrics.json, history.csv and the JSON
results, and a run's status in words.

The one reader of each format: training, evaluation, the figures and the report all read through
here, so that a stale or foreign file fails with its path and what it lacks. No torch, numpy or
matplotlib here (the status command and the report's tables import it).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# The columns of history.csv, in order: what train writes and every reader expects.
# val_*: on the run's held-out validation images (NaN when it has none); test_*: on the test set,
# recorded for the curves only (nothing is chosen on them).
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "lr",
    "seconds",
)

# Keys of metrics.json that every run has; checked so that a stale or foreign file fails here
# with its path, not as a KeyError deep in a figure.
METRICS_KEYS = (
    "dataset",
    "run",
    "seed",
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
    "train_images",
    "validation_images",
    "train_seconds",
    "images_per_second",
    "device",
    "settings",
)


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def load_metrics(path: str | Path) -> dict:
    """One run's metrics.json, checked for METRICS_KEYS."""
    metrics = read_json(path)
    missing = [k for k in METRICS_KEYS if k not in metrics]
    if missing:
        raise ValueError(
            f"{path} lacks {missing} (see docs/architecture.md for metrics.json); "
            "it was written by an older evaluate step: delete it and rerun the workflow"
        )
    return {**metrics, **recorded_device(metrics)}


# A `device` as records written before the GPU's id had its own field (`gpu_id`) name a GPU:
# 'cuda:<id> (<name>)', the id being an index of the machine's GPUs or a UUID.
_DEVICE_WITH_GPU_ID = re.compile(r"cuda:(?P<gpu>\S+) (?P<name>.*)", re.DOTALL)


def recorded_device(record: Mapping[str, Any]) -> dict[str, Any]:
    """{"device", "gpu_id"} of a model.pt or metrics.json record: the kind of device ('cuda (NVIDIA
    H200)', 'cpu (4 threads)') and the id of the GPU it ran on (None: none recorded). A record
    written before `gpu_id` had its own field ('cuda:7 (NVIDIA H200)') is read as ('cuda (NVIDIA
    H200)', '7'), so that its seeds compare by the kind of device as today's do."""
    device, gpu = record.get("device"), record.get("gpu_id")
    old = _DEVICE_WITH_GPU_ID.fullmatch(device) if isinstance(device, str) else None
    if old:
        device, gpu = f"cuda {old['name']}", gpu if gpu is not None else old["gpu"]
    return {"device": device, "gpu_id": gpu}


def finite_number(text: Any) -> float | None:
    """A CSV cell (or any value) as a float; empty, 'nan', non-finite and non-numbers are None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def benchmark_seconds(path: str | Path) -> list[float]:
    """The wall seconds of each row of a Snakemake `benchmark:` file (a row per repeat; cells that
    are not finite numbers are left out). Raises OSError when the file cannot be read."""
    with open(path, newline="") as f:
        return [
            s for row in csv.DictReader(f, delimiter="\t") if (s := finite_number(row.get("s"))) is not None
        ]


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """history.csv as one dict per epoch: `epoch` an int, the others floats (accuracies in %,
    losses in nats, lr, seconds), NaN where the value is missing or not finite (a diverged epoch)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in HISTORY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing}; expected {list(HISTORY_COLUMNS)}")
        rows = []
        for row in reader:
            values = {c: finite_number(row[c]) for c in HISTORY_COLUMNS}
            rows.append(
                {c: int(v) if c == "epoch" else math.nan if v is None else v for c, v in values.items()}
            )
        return rows


def status_text(metrics: dict) -> str:
    """A run's status in words: 'ok', 'diverged at epoch 3 (lr 0.5)', or the status as written."""
    status = metrics["status"]
    info = metrics.get("diverged")
    if status == "diverged" and info:
        lr = info.get("lr")
        return f"diverged at epoch {info.get('epoch')}" + (f" (lr {lr:.3g})" if lr is not None else "")
    return str(status)


# --- Over seeds: shared by the tables and the comparison figures ----------------------------


def group_seeds(metrics: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    """The metrics of each (dataset, run), its seeds in ascending order; groups in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for m in metrics:
        missing = [k for k in ("dataset", "seed") if k not in m]
        if missing:
            raise ValueError(
                f"metrics of run {m.get('run')!r} lack {missing}: written by an older evaluate step; "
                "delete its metrics.json and rerun the workflow"
            )
        groups.setdefault((m["dataset"], m["run"]), []).append(m)
    for (dataset, run), seeds in groups.items():
        numbers = [m["seed"] for m in seeds]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"{dataset}/{run} has the seed(s) {numbers} more than once")
        seeds.sort(key=lambda m: m["seed"])
    return groups


def has_accuracy(metrics: dict) -> bool:
    """A run (one seed) that finished with a test accuracy."""
    return metrics["status"] == "ok" and metrics["test_accuracy"] is not None


def seeds_status(seeds: Sequence[dict]) -> tuple[str, str]:
    """(status, status in words) of a run over its seeds.

    'ok' while at least one seed has an accuracy (the others are counted in the words, not
    averaged in); otherwise the first seed's status ('diverged', 'failed').
    """
    bad = [m for m in seeds if not has_accuracy(m)]
    if not bad:
        return "ok", "ok"
    if len(seeds) == 1:
        return bad[0]["status"], status_text(bad[0])
    details = "; ".join(f"seed {m['seed']} {status_text(m)}" for m in bad)
    if len(bad) == len(seeds):
        return bad[0]["status"], f"all {len(seeds)} seeds without an accuracy: {details}"
    return "ok", f"{len(bad)} of {len(seeds)} seeds without an accuracy: {details}"


def train_test_gap(metrics: dict) -> float | None:
    """Final train accuracy minus test accuracy (points): how much the run overfits."""
    if metrics["status"] != "ok" or metrics.get("final_train_accuracy") is None:
        return None
    if metrics["test_accuracy"] is None:
        return None
    return metrics["final_train_accuracy"] - metrics["test_accuracy"]
