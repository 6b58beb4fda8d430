"""The report's tables as values: per dataset, one row per run over its seeds (mean, sd, 95 %
interval, n) beside the lab's numbers, the tests between the variants of each sweep, the runs
across datasets, summary.md, metrics.csv rows, the diff between two studies, and the LR finder's
and saliency's summary tables. Formatting to HTML is cifarlab.report.page's.

A seed that diverged or failed is counted in its row's status, never averaged in; a run whose
seeds all diverged stays a row with that status: it is never dropped from a table and never part
of a best-of. No torch, numpy or matplotlib here (cifarlab.analysis.stats imports scipy when it tests).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cifarlab.analysis.stats import (
    ADJUSTMENT,
    ALPHA,
    MAX_SEEDS,
    Summary,
    adjust_p,
    detectable_difference,
    seeds_needed,
    summarise,
    welch_p,
)
from cifarlab.core.progress import duration
from cifarlab.models.specs import UnknownModel, model_spec
from cifarlab.plots.figures import sweep_groups
from cifarlab.study.estimate import seed_seconds
from cifarlab.study.results import (
    finite_number,
    group_seeds,
    has_accuracy,
    load_metrics,
    seeds_status,
    train_test_gap,
)

# Columns of a reference file such as config/lab-reference.csv. `pretrained` marks numbers that came
# from ImageNet weights (transfer learning); epochs, train_images and image_size are the lab's
# budget, which a run must match for its accuracy to be set against the lab's.
REFERENCE_COLUMNS = (
    "run",
    "model",
    "pretrained",
    "test_accuracy",
    "note",
    "epochs",
    "train_images",
    "image_size",
)
# The lab's numbers are CIFAR-10 test accuracies: runs on other data are not set against them.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# --- the lab's numbers ---------------------------------------------------------------------


def _truthy(text: str) -> bool:
    return str(text).strip().lower() in ("true", "1", "yes")


def load_reference(path: str | Path | None) -> dict[str, dict]:
    """The lab's reported numbers and budget (config/lab-reference.csv): run name -> row.

    `pretrained` says whether the lab's number came from ImageNet weights; `epochs`,
    `train_images` and `image_size` (px) are the budget it was trained with.
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
            budget = {}
            for column in ("epochs", "train_images", "image_size"):
                value = finite_number(row[column])
                if value is None or value != int(value) or value <= 0:
                    raise ValueError(
                        f"{path}: run {row['run']!r} has {column} {row[column]!r}; give a positive integer"
                    )
                budget[column] = int(value)
            rows[row["run"]] = {
                **row,
                **budget,
                "test_accuracy": accuracy,
                "pretrained": _truthy(row["pretrained"]),
            }
        return rows


def budget_differences(metrics: dict, lab: dict) -> list[str]:
    """How one run's actual budget differs from the lab's: e.g. ['4 of 20 epochs', '10,000 of 50,000
    images']; empty when it matches (epochs, training images, image size, ImageNet weights)."""
    reasons = []
    image_size = metrics.get("image_size", metrics["settings"].get("image_size"))
    train_images = metrics.get("train_images")
    if metrics["epochs"] != lab["epochs"]:
        reasons.append(f"{metrics['epochs']} of {lab['epochs']} epochs")
    if train_images is None:
        reasons.append("training images not recorded")
    elif train_images != lab["train_images"]:
        reasons.append(f"{train_images:,} of {lab['train_images']:,} images")
    if image_size != lab["image_size"]:
        reasons.append(f"{image_size} px images, the lab's {lab['image_size']} px")
    if lab["pretrained"] and not metrics["pretrained"]:
        reasons.append("not pretrained (the lab used ImageNet weights)")
    elif metrics["pretrained"] and not lab["pretrained"]:
        reasons.append("pretrained (the lab's was not)")
    # what else the study's budget shrank (cifarlab.config.validate.apply_budget records the values before)
    time_cut = (metrics.get("time_budget") or {}).get("cut") or {}
    for key, before in (metrics["settings"].get("budget") or {}).items():
        if key in ("epochs", "train_subset", "image_size", "warmup_epochs") or key in time_cut:
            continue  # said above, from what the run did (warmup follows the epochs), or below
        reasons.append(f"{key} {_budgeted(metrics['settings'].get(key), before)} (the study's budget)")
    reasons.extend(time_budget_cuts(metrics["settings"], metrics.get("time_budget")))
    return reasons


def time_budget_cuts(settings: dict, record: dict | None) -> list[str]:
    """What a `time_budget`'s plan cut in a run of `settings` (`record`: metrics.json's
    `time_budget`, the run's record of cifarlab.config.budgets.apply_time_caps): ['cut by
    time_budget 20m: epochs 20 -> 3, seeds 3 -> 1'], [] when it cut nothing."""
    record = record or {}
    if not record.get("cut"):
        return []
    changes = []
    for key, before in record["cut"].items():
        now = record.get("seeds") if key == "seeds" else settings.get(key)
        if isinstance(now, dict) and isinstance(before, dict):
            changes.extend(
                f"{key}.{k} {_value(before.get(k))} -> {_value(v)}"
                for k, v in now.items()
                if v != before.get(k)
            )
        else:
            changes.append(f"{key} {_value(before)} -> {_value(now)}")
    return [f"cut by time_budget {record['limit']}: " + ", ".join(changes)]


def _budgeted(now: Any, before: Any) -> str:
    """A setting the budget changed, as 'now of before' (a ViT's sizes: only those changed; a
    subset of null: of all)."""
    if isinstance(now, dict) and isinstance(before, dict):
        return ", ".join(
            f"{k} {_value(now[k])} of {_value(before.get(k))}" for k in now if now[k] != before.get(k)
        )
    return f"{_value(now)} of {_value(before)}"


def _value(value: Any) -> str:
    """A setting's value in a sentence: null (a subset: all images) as 'all', numbers with commas."""
    if value is None:
        return "all"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def lab_match(metrics: dict, reference: dict[str, dict]) -> tuple[dict | None, str]:
    """(the lab's row, '') when a run may be set against the lab's number, else (None, why not).

    The reason is '' when the lab has no such run. A run on other data or with another budget is
    'not comparable', never a difference.
    """
    lab = reference.get(metrics["run"])
    if lab is None:
        return None, ""
    if lab["model"] != metrics["model"]:
        return None, f"lab row is {lab['model']}, this run is {metrics['model']}"
    if tuple(metrics.get("classes") or ()) != CIFAR10_CLASSES:
        return None, f"not CIFAR-10 data: the lab's {lab['test_accuracy']:.2f} is a CIFAR-10 accuracy"
    reasons = budget_differences(metrics, lab)
    if reasons:
        return None, f"not comparable with the lab's {lab['test_accuracy']:.2f}: " + ", ".join(reasons)
    return lab, ""


def lab_comparison(metrics: dict, reference: dict[str, dict]) -> tuple[float | None, float | None, str]:
    """(lab accuracy, ours - lab in points, note) for one seed; None where they do not compare."""
    lab, why_not = lab_match(metrics, reference)
    if lab is None:
        return None, None, why_not
    if metrics["status"] != "ok" or metrics["test_accuracy"] is None:
        return lab["test_accuracy"], None, f"{metrics['status']}: no accuracy to compare"
    return lab["test_accuracy"], metrics["test_accuracy"] - lab["test_accuracy"], lab.get("note", "")


# --- one row per (dataset, run), over its seeds ------------------------------------------------


def variant(metrics: dict) -> str:
    """What distinguishes this run within its config entry: its sweep values, or '-'."""
    sweep = metrics["settings"].get("sweep") or {}
    return ", ".join(f"{k} {v}" for k, v in sweep.items()) or "-"


def _pretrainable(model: str | None) -> bool:
    """Whether a model could have started from ImageNet weights (its spec, cifarlab.models.specs)."""
    try:
        return model is not None and model_spec(model).pretrainable
    except UnknownModel:
        return False


def _one_value(values: Iterable[Any]) -> Any:
    """The one value all seeds share, or the distinct ones joined with '/' (e.g. best epochs 4/3)."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else "/".join(str(v) for v in distinct)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


# A run whose accuracy (its 95 % interval, or its one value) comes within this many points of
# 100 / classes % is at chance level: labelled so in every table and never ranked.
CHANCE_MARGIN = 1.0
AT_CHANCE = "at chance level"


def chance_accuracy(classes: Sequence[str]) -> float:
    """The accuracy (%) of guessing among `classes` uniformly: 100 / their number."""
    return 100.0 / len(classes)


def at_chance(accuracy: Summary, classes: Sequence[str]) -> bool:
    """Whether an accuracy (% over seeds) cannot be told from chance: its 95 % interval, or its one
    value, comes within CHANCE_MARGIN points of 100 / classes. False without an accuracy."""
    if accuracy.mean is None or not classes:
        return False
    chance = chance_accuracy(classes)
    low, high = (accuracy.low, accuracy.high) if accuracy.low is not None else (accuracy.mean, accuracy.mean)
    return low - CHANCE_MARGIN <= chance <= high + CHANCE_MARGIN


def comparison_row(seeds: Sequence[dict], reference: dict[str, dict], lab: bool = True) -> dict:
    """One row of a dataset's table: one run over its seeds (values, not formatted text).

    The accuracy (%) is the mean, sd and 95 % interval of the seeds that have one (`n` of them);
    `lab` says whether the lab's numbers apply to the dataset (its `reference`). With a lab
    figure: `lab_position` is where it lies against our interval ('inside', 'above', 'below';
    'n = 1' for one seed) and `lab_difference` our mean minus it; a run whose data or budget
    differs from the lab's has `lab_note` saying so, and neither.
    """
    first = seeds[0]
    ok = [m for m in seeds if has_accuracy(m)]
    accuracy = summarise([m["test_accuracy"] for m in ok])
    tta = summarise([m["tta_test_accuracy"] for m in ok if m.get("tta_test_accuracy") is not None])
    status, words = seeds_status(seeds)
    chance = at_chance(accuracy, first.get("classes") or [])
    if chance:  # said in the status of every table (page, summary.md, README block, metrics.csv)
        level = f"{AT_CHANCE} ({chance_accuracy(first['classes']):.2f} % for {len(first['classes'])} classes)"
        words = level if words == "ok" else f"{level}; {words}"
    model = first["model"]
    if _pretrainable(first["settings"].get("model")) and not first["pretrained"]:
        model = f"{model} (not pretrained)"
    lab_accuracy = lab_difference = None
    lab_position, lab_note = "", ""
    if lab:
        lab_row, lab_note = lab_match(first, reference)
        if lab_row is not None:
            lab_accuracy, lab_note = lab_row["test_accuracy"], lab_row.get("note", "")
            if accuracy.mean is None:
                lab_note = f"{status}: no accuracy to compare"
            else:
                lab_difference = accuracy.mean - lab_accuracy
                lab_position = accuracy.position(lab_accuracy) or "n = 1"
        elif lab_note.startswith("not comparable"):
            lab_position = "not comparable"
    return {
        "dataset": first["dataset"],
        "run": first["run"],
        "model": model,
        "variant": variant(first),
        "seeds": [m["seed"] for m in seeds],
        "n": accuracy.n,
        "dropout": first["dropout"],
        "optimizer": first["optimizer"],
        "params_total": first["params_total"],
        "params_trainable": first["params_trainable"],
        "epochs": first["epochs"],
        "train_images": first.get("train_images"),
        "batch_size": first["batch_size"],
        "lr": _one_value(m["lr"] for m in seeds),
        "lr_source": first["lr_source"],
        "accuracy": accuracy,
        "test_accuracy": accuracy.mean,
        "test_accuracy_sd": accuracy.sd,
        "ci_low": accuracy.low,
        "ci_high": accuracy.high,
        # test-time augmentation: its own column, never in place of the plain accuracy
        "tta_accuracy": tta,
        "tta_test_accuracy": tta.mean,
        "tta": first.get("tta", "none"),
        "best_epoch": _one_value(m["best_epoch"] for m in ok) if ok else None,
        # the chosen epoch's validation accuracy (%), mean over the seeds; None without a split
        "best_validation_accuracy": _mean([m.get("best_validation_accuracy") for m in ok]),
        "train_seconds": _mean([m["train_seconds"] for m in seeds]),
        "images_per_second": _mean([m["images_per_second"] for m in seeds]),
        "device": _one_value(m["device"] for m in seeds),
        "status": status,
        "status_text": words,
        # at chance level: labelled, never ranked (the page's best run, any ranking order)
        "at_chance": chance,
        "lab_accuracy": lab_accuracy,
        "lab_difference": lab_difference,
        "lab_position": lab_position,
        "lab_note": lab_note,
    }


def comparison_rows(
    metrics: Sequence[dict], reference: dict[str, dict], lab_datasets: Iterable[str] = ()
) -> list[dict]:
    """One row per (dataset, run) in the given (study) order, whatever its status; the lab's
    numbers only on `lab_datasets` (those with `reference: true`)."""
    lab = set(lab_datasets)
    return [comparison_row(seeds, reference, d in lab) for (d, _), seeds in group_seeds(metrics).items()]


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
        return f"{value:.3g}" if isinstance(value, float | int) else str(value)
    if kind == "seconds":
        return duration(value, exact=True)
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "p":
        return "< 0.001" if value < 0.001 else f"{value:.3f}"
    if kind == "mean_sd":  # a Summary: 64.48 ± 0.50, or the one seed's value
        if value.mean is None:
            return "-"
        return f"{value.mean:.2f}" + (f" ± {value.sd:.2f}" if value.sd is not None else "")
    if kind == "interval":
        return "-" if value.low is None else f"{value.low:.2f} – {value.high:.2f}"
    return str(value)


# (header, row key, format kind) of a dataset's table, shared by the page and summary.md. The
# results follow the run's name, so that a phone shows them without scrolling (the page keeps the
# name column in view when the table scrolls).
TABLE = (
    ("run", "run", ""),
    ("test acc. %", "accuracy", "accuracy"),
    ("95 % interval", "accuracy", "interval"),
    ("n", "n", ""),
    ("with TTA %", "tta_accuracy", "mean_sd"),
    ("lab %", "lab_accuracy", "pct"),
    ("lab vs interval", "lab_position", ""),
    ("ours - lab", "lab_difference", "diff"),
    ("model", "model", ""),
    ("variant", "variant", ""),
    ("status", "status_text", ""),
    ("dropout p", "dropout", ""),
    ("optimizer", "optimizer", ""),
    ("params", "params_total", "int"),
    ("trainable", "params_trainable", "int"),
    ("epochs", "epochs", ""),
    ("train images", "train_images", "int"),
    ("batch", "batch_size", ""),
    ("lr", "lr", "lr"),
    ("lr from", "lr_source", ""),
    ("best epoch", "best_epoch", ""),
    ("best val. acc. %", "best_validation_accuracy", "pct"),
    ("train time", "train_seconds", "seconds"),
    ("images/s", "images_per_second", "rate"),
    ("device", "device", ""),
)
LAB_KEYS = ("lab_accuracy", "lab_position", "lab_difference")
# Columns of words (left-aligned on the page); the others are numbers.
TEXT_KEYS = ("run", "model", "variant", "status_text", "optimizer", "lr_source", "device", "lab_position")


def table_columns(lab: bool = True) -> tuple[tuple[str, str, str], ...]:
    """The columns of a dataset's table; the lab's only where its numbers apply."""
    return tuple(c for c in TABLE if lab or c[1] not in LAB_KEYS)


def table_cells(row: dict, lab: bool = True) -> list[str]:
    return [
        accuracy_words(row) if kind == "accuracy" else fmt(row[key], kind)
        for _, key, kind in table_columns(lab)
    ]


def _markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows]
    return lines


def summary_markdown(rows: Sequence[dict], notes: Iterable[str] = (), lab: bool = True) -> str:
    """One dataset's table as a GitHub-flavoured Markdown table, with the lab notes below it."""
    headers = [h for h, _, _ in table_columns(lab)]
    lines = _markdown_table(headers, (table_cells(row, lab) for row in rows))
    footnotes = [f"- {row['run']}: {row['lab_note']}" for row in rows if lab and row["lab_note"]]
    footnotes += [f"- {note}" for note in notes]
    return "\n".join(lines) + ("\n\n" + "\n".join(footnotes) if footnotes else "") + "\n"


# --- across datasets ----------------------------------------------------------------------------


def cross_dataset_rows(rows: Sequence[dict], datasets: Sequence[str]) -> list[dict]:
    """Each run's accuracy on each dataset side by side: run -> {dataset: its row or None}.

    Runs in first-seen order; None where the run does not train on that dataset.
    """
    by_run: dict[str, dict[str, dict | None]] = {}
    for row in rows:
        by_run.setdefault(row["run"], dict.fromkeys(datasets))[row["dataset"]] = row
    return [{"run": run, "datasets": cells} for run, cells in by_run.items()]


def accuracy_words(row: dict) -> str:
    """A row's accuracy as mean ± sd, '(at chance level)' after it where it is; its status without one."""
    if row["accuracy"].mean is None:
        return row["status"]
    return fmt(row["accuracy"], "mean_sd") + (f" ({AT_CHANCE})" if row.get("at_chance") else "")


def cross_dataset_cell(row: dict | None) -> str:
    """'64.48 ± 0.50 (n 3)', the status of a run without an accuracy, or '-' (not trained on it)."""
    if row is None:
        return "-"
    if row["accuracy"].mean is None:
        return row["status"]
    return f"{accuracy_words(row)} (n {row['n']})"


def cross_dataset_markdown(rows: Sequence[dict], datasets: Sequence[str]) -> str:
    lines = _markdown_table(
        ["run", *(f"{d} test acc. %" for d in datasets)],
        ([r["run"], *(cross_dataset_cell(r["datasets"][d]) for d in datasets)] for r in
         cross_dataset_rows(rows, datasets)),
    )  # fmt: skip
    return "\n".join(lines) + "\n"


# --- between the variants of one sweep ------------------------------------------------------------


def variant_tests(metrics: Sequence[dict], factors: dict[str, float] | None = None) -> list[dict]:
    """Welch's t-test between the variants of each sweep of one dataset, for each pair of them,
    with p adjusted for the pairs of its sweep (ADJUSTMENT, cifarlab.analysis.stats.adjust_p).

    Sweeps come from the runs' settings (cifarlab.plots.figures.sweep_groups: the runs whose entry
    sweeps a setting, one group per value of any other swept setting). Per pair: the group, the
    setting, both variants' values, means, sds and n (seeds with an accuracy), the difference b - a
    (points), p and `p_adjusted` (None: fewer than 2 seeds on a side or no spread at all), the
    verdict on the adjusted p, `detectable` (the smallest true difference, points, its seeds find
    with 80 % power), and for a difference not supported `seeds_needed` (per variant, to resolve
    one of the observed size) and `more_seconds` (the extra seeds' train and evaluate jobs by the
    calibrated estimate: cifarlab.study.estimate.seed_seconds with `factors`, {} or None: uncalibrated).
    """
    groups = group_seeds(metrics)
    runs = {run: seeds[0]["settings"] for (_, run), seeds in groups.items()}
    seeds_of = {run: seeds for (_, run), seeds in groups.items()}
    settings = list(dict.fromkeys(k for s in runs.values() for k in (s.get("sweep") or {})))
    tests = []
    for setting in settings:
        for label, names in sweep_groups(runs, setting).items():
            family = [
                _pair_test(label, setting, a, b, seeds_of, factors or {})
                for i, a in enumerate(names)
                for b in names[i + 1 :]
            ]
            tested = [t for t in family if t["p"] is not None]
            for test, adjusted in zip(tested, adjust_p([t["p"] for t in tested]), strict=True):
                test["p_adjusted"] = adjusted
                test["verdict"] = (
                    "supported"
                    if adjusted < ALPHA
                    else "not after adjustment"
                    if test["p"] < ALPHA
                    else "not supported"
                )
            for test in family:
                if test["verdict"] != "supported" and test["seeds_needed"] is not None:
                    extra = {r: max(0, test["seeds_needed"] - test[f"{side}_n"]) for r, side in
                             ((test["a"], "a"), (test["b"], "b"))}  # fmt: skip
                    test["more_seconds"] = sum(
                        n * seed_seconds(seeds_of[r][0], factors or {}) for r, n in extra.items() if n
                    )
                else:
                    test["seeds_needed"] = None
            tests += family
    return tests


def _pair_test(
    label: str, setting: str, a: str, b: str, seeds_of: dict[str, list[dict]], factors: dict[str, float]
) -> dict:
    values = {r: [m["test_accuracy"] for m in seeds_of[r] if has_accuracy(m)] for r in (a, b)}
    sa, sb = (summarise(values[r]) for r in (a, b))
    p = welch_p(values[a], values[b])
    if min(len(values[a]), len(values[b])) < 2:
        verdict = "not enough seeds"
    elif p is None:
        verdict = "no spread to test"
    else:
        verdict = "not supported"  # until adjusted with the other pairs of its sweep (variant_tests)
    difference = None if sa.mean is None or sb.mean is None else sb.mean - sa.mean
    return {
        "group": label,
        "setting": setting,
        "a": a,
        "b": b,
        "a_value": seeds_of[a][0]["settings"]["sweep"][setting],
        "b_value": seeds_of[b][0]["settings"]["sweep"][setting],
        "a_mean": sa.mean,
        "b_mean": sb.mean,
        "a_sd": sa.sd,
        "b_sd": sb.sd,
        "a_n": len(values[a]),
        "b_n": len(values[b]),
        "difference": difference,
        "p": p,
        "p_adjusted": None,
        "verdict": verdict,
        "detectable": detectable_difference(sa.sd, sa.n, sb.sd, sb.n),
        "seeds_needed": seeds_needed(difference, sa.sd, sb.sd) if p is not None else None,
        "more_seconds": None,
    }


def _pair_words(test: dict) -> str:
    text = f"{test['a_value']} vs {test['b_value']}"
    if test["difference"] is not None:
        text += f" ({test['difference']:+.2f} points"
        if test["p"] is not None:
            text += f", p {fmt(test['p'], 'p')}, adjusted {fmt(test['p_adjusted'], 'p')}"
        text += ")"
    return text


def seeds_text(test: dict) -> str:
    """About how many seeds per variant would resolve the observed difference, and how long the
    extra ones take: 'about 24 per variant (42 more jobs, 12 min)'; '-' where not asked."""
    n = test["seeds_needed"]
    if n is None:
        return "-"
    if n > MAX_SEEDS:
        return f"more than {MAX_SEEDS} per variant"
    more = max(0, n - test["a_n"]) + max(0, n - test["b_n"])
    return f"about {n} per variant ({more} more seeds, {duration(test['more_seconds'] or 0.0)})"


def variant_sentences(tests: Sequence[dict]) -> list[str]:
    """One sentence per sweep group: which differences survive the adjustment for its pairs
    (Welch, Benjamini-Hochberg adjusted p < 0.05), which were below 0.05 only before it, which
    not, which pairs have too few seeds to say, and what its seeds could detect."""
    sentences = []
    for key in dict.fromkeys((t["group"], t["setting"]) for t in tests):
        group = [t for t in tests if (t["group"], t["setting"]) == key]
        parts = []
        for verdict, words in (
            ("supported", "the seeds support a difference, after the adjustment, for"),
            ("not after adjustment", "p < 0.05 before the adjustment only (not supported) for"),
            ("not supported", "they do not for"),
            ("no spread to test", "no spread to test for"),
            ("not enough seeds", "not enough seeds (n < 2) for"),
        ):
            pairs = [_pair_words(t) for t in group if t["verdict"] == verdict]
            if pairs:
                parts.append(f"{words} {'; '.join(pairs)}")
        detectable = sorted(round(t["detectable"], 1) for t in group if t["detectable"] is not None)
        if detectable:
            low, high = detectable[0], detectable[-1]
            span = f"{low:.1f}" + (f" to {high:.1f}" if high != low else "")
            parts.append(f"with these seeds a difference is found (80 % power) from about {span} points")
        tested = sum(t["p"] is not None for t in group)
        sentences.append(
            f"{key[0]}, {key[1]} (Welch's t-test, p < {ALPHA} after {ADJUSTMENT} over its {tested} "
            f"tested pair{'s' * (tested != 1)}): " + "; ".join(parts) + "."
        )
    return sentences


# (header, key, format kind) of the variants table.
VARIANT_TABLE = (
    ("sweep", "group", ""),
    ("setting", "setting", ""),
    ("a", "a_value", ""),
    ("b", "b_value", ""),
    ("mean a %", "a_mean", "pct"),
    ("mean b %", "b_mean", "pct"),
    ("b - a", "difference", "diff"),
    ("n a", "a_n", ""),
    ("n b", "b_n", ""),
    ("p (Welch)", "p", "p"),
    ("p adjusted (BH)", "p_adjusted", "p"),
    ("difference", "verdict", ""),
    ("detectable (80 % power)", "detectable", "pct"),
    ("seeds to resolve b - a", "seeds_needed", "seeds"),
)


def variant_cells(test: dict) -> list[str]:
    return [seeds_text(test) if kind == "seeds" else fmt(test[key], kind) for _, key, kind in VARIANT_TABLE]


def variants_markdown(tests: Sequence[dict]) -> str:
    """The variants table of one dataset in Markdown (summary.md), its sentences below it."""
    if not tests:
        return ""
    lines = _markdown_table([h for h, _, _ in VARIANT_TABLE], (variant_cells(t) for t in tests))
    return "\n".join([*lines, "", *(f"{s}\n" for s in variant_sentences(tests))])


# --- summary.md: every dataset, the study's identity ----------------------------------------------


def results_section(datasets: Sequence[str], rows: Sequence[dict], config_hash: str, overlays: str) -> str:
    """summary.md's '## Results' section: which config (hash, overlays) and how many seeds made the
    study; `cifarlab.report.readme_results` copies its table into the README."""
    seeds = sorted({s for r in rows for s in r["seeds"]})
    counts = sorted({len(r["seeds"]) for r in rows})
    lines = [
        RESULTS_HEADING,
        "",
        f"- config hash: `{config_hash or 'unknown'}`" + (f" (config files: {overlays})" if overlays else ""),
        f"- seeds per run: {', '.join(map(str, counts))} (seeds {', '.join(map(str, seeds))})",
        f"- datasets: {', '.join(datasets)}",
        "",
        RESULTS_BEGIN,
        *_markdown_table(
            [
                "dataset",
                "run",
                "epochs",
                "test acc. % (mean ± sd)",
                "95 % interval",
                "n",
                "lab %",
                "lab vs interval",
            ],
            (
                [
                    r["dataset"],
                    f"`{r['run']}`",
                    fmt(r["epochs"]),
                    accuracy_words(r),
                    fmt(r["accuracy"], "interval"),
                    str(r["n"]),
                    fmt(r["lab_accuracy"], "pct"),
                    r["lab_position"] or "-",
                ]
                for r in rows
            ),
        ),
    ]
    # why a row has no lab figure beside it (not comparable, other data) and seeds without an
    # accuracy: inside the markers, so that the README gets them with the table
    notes = [
        f"- {r['dataset']} `{r['run']}`: {note}"
        for r in rows
        for note in (r["lab_note"], r["status_text"] if r["status_text"] != "ok" else "")
        if note
    ]
    lines += (["", *notes] if notes else []) + [RESULTS_END]
    return "\n".join(lines) + "\n"


RESULTS_HEADING = "## Results"
# Around the results table in summary.md and in the README (cifarlab.report.readme_results).
RESULTS_BEGIN = "<!-- results: begin (written by python -m cifarlab.report.readme_results) -->"
RESULTS_END = "<!-- results: end -->"


def summary_document(
    sections: Sequence[tuple[str, str]],
    cross_dataset: str,
    results: str,
    notes: Iterable[str] = (),
) -> str:
    """summary.md: the results section, the cross-dataset table (several datasets only), then one
    section per dataset (title, its Markdown: table, notes, variant tests)."""
    parts = ["# cifarlab: summary", "", results]
    if cross_dataset:
        parts += ["## Across datasets", "", cross_dataset]
    for title, text in sections:
        parts += [f"## {title}", "", text]
    parts += [f"- {note}" for note in notes]
    return "\n".join(parts).rstrip("\n") + "\n"


# --- metrics.csv: every metric of every seed, flat, and each run's aggregate ----------------------

AGGREGATE_SEED = "all"

METRIC_COLUMNS = (
    "dataset",
    "run",
    "seed",
    "model",
    "status",
    "at_chance",
    "chance_accuracy",
    "test_accuracy",
    "test_accuracy_sd",
    "ci_low",
    "ci_high",
    "n",
    "test_loss",
    "tta",
    "tta_test_accuracy",
    "tta_test_loss",
    "best_epoch",
    "best_validation_accuracy",
    "final_train_accuracy",
    "train_test_gap",
    "params_total",
    "params_trainable",
    "epochs",
    "train_images",
    "validation_images",
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
    "lab_position",
)


def _param_columns(settings: dict) -> dict[str, Any]:
    return {
        f"param.{name}": json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
        for name, value in sorted(settings.items())
    }


def flat_metrics(metrics: dict, reference: dict[str, dict]) -> dict[str, Any]:
    """One seed's metrics.csv row: the scalar metrics, per-class accuracy and every run setting.

    Settings become `param.<name>` columns (nested ones as JSON) so that a diff of two studies
    can show which settings changed, as `dvc params diff` does.
    """
    diverged = metrics.get("diverged") or {}
    lab_accuracy, lab_difference, _ = lab_comparison(metrics, reference)
    row = {k: metrics.get(k) for k in METRIC_COLUMNS}
    one = summarise([metrics["test_accuracy"]] if has_accuracy(metrics) else [])
    classes = metrics.get("classes") or []
    row.update(
        n=1 if has_accuracy(metrics) else 0,
        at_chance=at_chance(one, classes),
        chance_accuracy=chance_accuracy(classes) if classes else None,
        train_test_gap=train_test_gap(metrics),
        diverged_epoch=diverged.get("epoch"),
        diverged_lr=diverged.get("lr"),
        diverged_loss=diverged.get("loss"),
        lab_accuracy=lab_accuracy,
        lab_difference=lab_difference,
    )
    for name, accuracy in (metrics.get("per_class_accuracy") or {}).items():
        row[f"per_class_accuracy.{name}"] = accuracy
    row.update(_param_columns(metrics["settings"]))
    return row


def aggregate_metrics(row: dict, seeds: Sequence[dict]) -> dict[str, Any]:
    """The aggregate metrics.csv row of one (dataset, run): `seed` 'all', the comparison row's
    mean, sd, interval and n, the means of the other per-seed numbers, and the settings the
    seeds share (`param.seed` is left out)."""
    flat = [flat_metrics(m, {}) for m in seeds]
    ok = [f for f, m in zip(flat, seeds, strict=True) if has_accuracy(m)]
    aggregate: dict[str, Any] = {k: None for k in METRIC_COLUMNS}
    for key in (
        "test_loss",
        "tta_test_loss",
        "best_validation_accuracy",
        "final_train_accuracy",
        "train_test_gap",
    ):
        aggregate[key] = _mean([f[key] for f in ok])
    aggregate.update({key: row[key] for key in METRIC_COLUMNS if key in row})
    aggregate.update(
        seed=AGGREGATE_SEED,
        model=seeds[0]["model"],
        status=row["status"],
        at_chance=row["at_chance"],
        chance_accuracy=flat[0]["chance_accuracy"],
        tta=row["tta"],
        validation_images=seeds[0].get("validation_images"),
        freeze=seeds[0].get("freeze"),
        image_size=seeds[0].get("image_size"),
        precision=seeds[0].get("precision"),
        pretrained=seeds[0]["pretrained"],
        lab_position=row["lab_position"] or None,
    )
    for name in flat[0]:
        if name.startswith("per_class_accuracy."):
            aggregate[name] = _mean([f.get(name) for f in ok])
    shared = {k: v for k, v in seeds[0]["settings"].items() if k != "seed"}
    aggregate.update(_param_columns(shared))
    return aggregate


def metrics_table(
    metrics: Sequence[dict], rows: Sequence[dict], reference: dict[str, dict], lab_datasets: Sequence[str]
) -> list[dict]:
    """metrics.csv's rows: per (dataset, run) each seed's row, then its aggregate (`seed` 'all').
    The lab's numbers go to the rows of `lab_datasets` only (those it applies to), as in the table."""
    by_key = {(r["dataset"], r["run"]): r for r in rows}
    table = []
    for key, seeds in group_seeds(metrics).items():
        lab = reference if key[0] in lab_datasets else {}
        table += [flat_metrics(m, lab) for m in seeds]
        table.append(aggregate_metrics(by_key[key], seeds))
    return table


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
    "best_validation_accuracy",
    "train_test_gap",
    "params_total",
    "train_seconds",
    "images_per_second",
)


def load_study(path: str | Path, dataset: str | None = None) -> dict[str, dict[str, str]]:
    """Another study's metrics on one dataset as run -> {column: text}, from a metrics.csv or a
    results folder: each run's aggregate row (`seed` 'all') where the study has seeds.

    A folder may be a project root (`results/report/metrics.csv`), a `results/` folder, or one
    whose `<dataset>/runs/<run>/seed<seed>/metrics.json` (or, from before datasets and seeds,
    `runs/<run>/metrics.json`) exist: a study whose report was never built. `dataset`: the rows
    of that dataset; a study without datasets (an older metrics.csv, the lab's numbers) gives all
    its rows, one with a single dataset gives that one's when `dataset` is None.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "report" / "metrics.csv", path / "results" / "report" / "metrics.csv"):
            if candidate.is_file():
                return load_study(candidate, dataset)
        for base in (path, path / "results"):
            seeded = sorted(base.glob("*/runs/*/seed*/metrics.json"))
            if seeded:
                metrics = [load_metrics(p) for p in seeded]
                table = metrics_table(metrics, comparison_rows(metrics, {}), {}, [])
                return _study_rows(table, dataset, path)
            older = sorted(base.glob("runs/*/metrics.json"))
            if older:
                return _study_rows([flat_metrics(load_metrics(p), {}) for p in older], dataset, path)
        raise FileNotFoundError(
            f"report.compare_to: {path} holds no report/metrics.csv and no "
            "<dataset>/runs/<run>/seed<seed>/metrics.json; give a metrics.csv or the results folder "
            "of another study"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"report.compare_to: {path} does not exist; give a metrics.csv or a results folder"
        )
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "run" not in (reader.fieldnames or []):
            raise ValueError(f"report.compare_to: {path} has no 'run' column; is it a metrics.csv?")
        return _study_rows(list(reader), dataset, path)


def _study_rows(rows: Sequence[dict], dataset: str | None, path: Path) -> dict[str, dict[str, str]]:
    """run -> row (as text) of one dataset's aggregate rows (see load_study)."""
    rows = [r for r in rows if str(r.get("seed", AGGREGATE_SEED)) in (AGGREGATE_SEED, "")]
    present = list(dict.fromkeys(r["dataset"] for r in rows if r.get("dataset")))
    if present:
        if dataset is None and len(present) > 1:
            raise ValueError(
                f"report.compare_to: {path} has the datasets {present}; say which one to compare with"
            )
        wanted = dataset if dataset is not None else present[0]
        rows = [r for r in rows if r.get("dataset") == wanted]
    return {r["run"]: {k: "" if v is None else str(v) for k, v in r.items()} for r in rows}


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
