"""The comparison report: table and lab comparison, study diffs, figures, the page, and the
report rules through Snakemake, all from step outputs written here in the documented formats."""

from __future__ import annotations

import copy
import csv
import inspect
import json
import math
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from PIL import Image

from cifarlab import comparison_figures, page, provenance, report, results, synthetic, tables
from cifarlab.config import check_schema, expand_runs, validate_config
from cifarlab.figures import FIGURES, figure_inputs, figure_named, figure_params, figure_runs, sweep_groups
from cifarlab.lr_finder import median_curve

ROOT = Path(__file__).resolve().parent.parent
CLASSES = list(tables.CIFAR10_CLASSES)  # the study of these tests claims CIFAR-10 data
LAB = ROOT / "config" / "lab-reference.csv"

# The study of these tests: an optimizer sweep, a dropout sweep (one p diverges), a
# pretrainable backbone without its ImageNet weights, and a ViT.
STUDY_RUNS = {
    "simple_cnn": {"model": "simple_cnn", "lr": 0.01, "sweep": {"optimizer": ["sgd", "adam", "yogi"]}},
    "dropout_cnn": {"model": "dropout_cnn", "sweep": {"dropout": [0.0, 0.1, 0.9]}},
    "vgg16": {"model": "vgg16", "freeze": "head"},
    "vit": {"model": "vit", "optimizer": "adam", "lr": 1.0e-3},
}
DIVERGED = "dropout_cnn-dropout0.9"


def study_config() -> dict:
    with open(ROOT / "config" / "config.yaml") as f:
        config = yaml.safe_load(f)
    config.update(runs=copy.deepcopy(STUDY_RUNS), pretrained=False)
    config["defaults"]["epochs"] = 4
    config["dataset"].update(name="synthetic", source="synthetic", md5=None)
    config["dataset"]["synthetic"] = {"seed": 0, "train_per_class": 3, "test_per_class": 2}
    config["lr_finder"]["runs"] = ["simple_cnn-sgd", "simple_cnn-adam"]
    config["report"] = {"reference": "config/lab-reference.csv", "compare_to": None}
    return config


def fake_history(run: dict, index: int, diverged: bool) -> list[dict]:
    """A plausible learning curve: test accuracy saturates, train accuracy keeps rising."""
    rows = []
    for epoch in range(1, run["epochs"] + 1):
        if diverged and epoch == 3:
            rows.append(
                dict(
                    epoch=epoch,
                    train_loss=math.nan,
                    train_accuracy=math.nan,
                    test_loss=math.nan,
                    test_accuracy=math.nan,
                    lr=1.0,
                    seconds=1.0,
                )
            )
            break
        test = 40 + 10 * index % 30 + 20 * (1 - math.exp(-epoch))
        rows.append(
            dict(
                epoch=epoch,
                train_loss=2.0 / epoch,
                train_accuracy=test + 4 * epoch,
                test_loss=1.0 + 0.5 / epoch,
                test_accuracy=test,
                lr=run["lr"],
                seconds=2.0 + index,
            )
        )
    return rows


def fake_metrics(name: str, run: dict, history: list[dict], diverged: bool) -> dict:
    """metrics.json as docs/architecture.md specifies it."""
    last = history[-1]
    ok = not diverged
    params = {"simple_cnn": 62_006, "dropout_cnn": 4_746_186, "vgg16": 134_301_514, "vit": 1_234_567}
    return {
        "run": name,
        "model": run["model"],
        "status": "ok" if ok else "diverged",
        "diverged": None if ok else {"epoch": 3, "lr": 1.0, "loss": None},
        "test_accuracy": last["test_accuracy"] if ok else None,
        "test_loss": last["test_loss"] if ok else None,
        "per_class_accuracy": {c: (last["test_accuracy"] if ok else 0.0) for c in CLASSES},
        "confusion_matrix": [[5 if i == j else 0 for j in range(10)] for i in range(10)],
        "classes": CLASSES,
        "best_epoch": max(history, key=lambda h: h["test_accuracy"])["epoch"] if ok else 2,
        "best_test_accuracy": max(h["test_accuracy"] for h in history if ok or h["epoch"] < 3),
        "final_train_accuracy": last["train_accuracy"] if ok else None,
        "params_total": params[run["model"]],
        "params_trainable": 5130 if run["freeze"] == "head" else params[run["model"]],
        "epochs": run["epochs"],
        "batch_size": run["batch_size"],
        "optimizer": run["optimizer"],
        "lr": run["lr"],
        "lr_source": "config",
        "dropout": run["dropout"],
        "pretrained": run["pretrained"],
        "freeze": run["freeze"],
        "image_size": run["image_size"],
        "train_seconds": sum(h["seconds"] for h in history),
        "images_per_second": 1000.0 * (1 + history[0]["seconds"]),
        "device": "cpu",
        "settings": run,
    }


def fake_lr_finder(name: str) -> dict:
    """An LR-finder result: loss falls, then blows up past 1; two repeats of different length."""
    lrs = [10 ** (-7 + 8 * i / 59) for i in range(60)]
    repeats = []
    for r in range(2):
        smoothed = [
            2.3 - 1.5 * min(1, max(0, math.log10(lr) + 5) / 4) + 3 * max(0, math.log10(lr)) for lr in lrs
        ]
        repeats.append({"seed": r, "losses": smoothed, "smoothed": smoothed[: 60 - 5 * r]})
    suggestions = {
        m: {"lrs": [0.01, 0.02], "median": 0.014, "spread_decades": 0.3} for m in ("valley", "steepest")
    }
    return {
        "run": name,
        "lrs": lrs,
        "repeats": repeats,
        "suggestions": suggestions,
        "chosen": "valley",
        "lr": 0.014,
        "seconds": 3.0,
    }


def fake_saliency(model: str) -> dict:
    methods = {"vanilla": 0.1, "guided_backprop": 0.9}
    return {
        "methods": list(methods),
        "unsupported": {"gradcam": "no convolution"} if model == "vit" else {},
        "sanity": {
            "threshold": 0.5,
            "methods": {m: {"fully_randomised": v, "passes": v < 0.5} for m, v in methods.items()},
        },
    }


def write_study(root: Path) -> dict:
    """Every file the report reads, in a project folder `root`, as the steps write them.

    Figures are drawn by the report's own plot functions so that they are real PNGs.
    Returns the expanded runs.
    """
    config = study_config()
    runs = validate_config(config)
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(LAB, root / "config" / "lab-reference.csv")
    res = root / "results"
    record = {
        "source": "synthetic",
        "archive": "synthetic.zip",
        "bytes": 10,
        "md5": "0" * 32,
        "sha256": "1" * 64,
        "md5_expected": None,
    }
    _write(root / "resources/synthetic/source.json", json.dumps(record))
    (root / "resources/synthetic/synthetic.zip").write_bytes(b"PK")  # never read: prepare is up to date
    for split, per_class in (("train", 3), ("test", 2)):
        images, labels = synthetic.make_split(per_class, 32, seed=1)
        data = {
            "images": images,
            "labels": labels,
            "classes": CLASSES,
            "mean": torch.zeros(3),
            "std": torch.ones(3),
            "source": "synthetic",
        }
        _save(res / f"data/synthetic/{split}.pt", data)
    _write(res / "saliency/sample.json", json.dumps({"indices": [0], "labels": [0]}))
    _save(res / "features/synthetic/vgg16-random0-32/train.pt", {})
    _save(res / "features/synthetic/vgg16-random0-32/test.pt", {})
    for index, (name, run) in enumerate(runs.items()):
        history = fake_history(run, index, name == DIVERGED)
        _save(res / f"runs/{name}/model.pt", {"run": run})
        with open(res / f"runs/{name}/history.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=results.HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(history)
        metrics = fake_metrics(name, run, history, name == DIVERGED)
        _write(res / f"runs/{name}/metrics.json", json.dumps(metrics))
        _save(res / f"saliency/{name}.pt", {})
        _write(res / f"saliency/{name}.json", json.dumps(fake_saliency(run["model"])))
        for step in ("train", "saliency"):
            _write(res / f"benchmarks/{step}/{name}.tsv", "s\th:m:s\tmax_rss\n12.5\t0:00:12\t100\n")
    for name in config["lr_finder"]["runs"]:
        _write(res / f"lr_finder/{name}.json", json.dumps(fake_lr_finder(name)))
        _write(res / f"benchmarks/lr_find/{name}.tsv", "s\th:m:s\n3.0\t0:00:03\n")
    _write(res / "benchmarks/prepare/synthetic.tsv", "s\th:m:s\n1.0\t0:00:01\n")
    _write(res / "benchmarks/features/synthetic/vgg16-random0-32.tsv", "s\th:m:s\n2.0\t0:00:02\n")
    # The per-run figures (drawn by other modules in the workflow): real PNGs of these runs.
    for name in runs:
        metrics, history = [res / f"runs/{name}/metrics.json"], [res / f"runs/{name}/history.csv"]
        for kind in ("curves", "confusion", "saliency"):
            comparison_figures.plot_learning_curves(metrics, history, res / f"figures/{kind}/{name}.png")
    for name in config["lr_finder"]["runs"]:
        comparison_figures.plot_lr_finder_comparison(
            [res / f"lr_finder/{name}.json"], res / f"figures/lr_finder/{name}.png"
        )
    all_metrics = [res / f"runs/{n}/metrics.json" for n in runs]
    comparison_figures.plot_accuracy_scatter(
        all_metrics, "params_total", res / "figures/saliency/comparison.png"
    )
    comparison_figures.plot_accuracy_scatter(
        all_metrics, "train_seconds", res / "figures/data/synthetic-samples.png"
    )
    return runs


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _save(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def build_report(root: Path, runs: dict, compare_to=None) -> list[dict]:
    """Draw the comparison figures and write the report with the package functions."""
    res = root / "results"
    metrics = [res / f"runs/{n}/metrics.json" for n in runs]
    histories = [res / f"runs/{n}/history.csv" for n in runs]
    # every per-study figure at its target (cifarlab.figures.FIGURES)
    figures = {f.name: root / f.target for f in FIGURES if not f.per_run}
    comparison_figures.plot_accuracy_scatter(metrics, "params_total", figures["accuracy_vs_params"])
    comparison_figures.plot_accuracy_scatter(metrics, "train_seconds", figures["accuracy_vs_time"])
    dropout = sweep_groups(runs, "dropout")
    comparison_figures.plot_dropout_sweep(
        [res / f"runs/{n}/metrics.json" for n in dropout["dropout_cnn"]], dropout, figures["dropout_sweep"]
    )
    optimizers = sweep_groups(runs, "optimizer")
    names = optimizers["simple_cnn"]
    comparison_figures.plot_optimizers(
        [res / f"runs/{n}/metrics.json" for n in names],
        [res / f"runs/{n}/history.csv" for n in names],
        optimizers,
        figures["optimizers"],
    )
    comparison_figures.plot_learning_curves(metrics, histories, figures["learning_curves"])
    finder = sorted((res / "lr_finder").glob("*.json"))
    comparison_figures.plot_lr_finder_comparison(finder, figures["lr_finder_comparison"])
    run_figures = {
        n: {k: res / f"figures/{k}/{n}.png" for k in ("curves", "confusion", "saliency")} for n in runs
    }
    return report.write_report(
        metrics,
        {
            k: res / f"report/{v}"
            for k, v in (("html", "index.html"), ("summary", "summary.md"), ("metrics", "metrics.csv"))
        },
        figures=figures,
        run_figures=run_figures,
        captions={f.name: ROOT / f.caption for f in FIGURES},
        lr_finder_paths=finder,
        saliency_paths=[res / f"saliency/{n}.json" for n in runs],
        data_record=root / "resources/synthetic/source.json",
        data_splits={"train": res / "data/synthetic/train.pt", "test": res / "data/synthetic/test.pt"},
        samples=res / "figures/data/synthetic-samples.png",
        benchmarks=sorted((res / "benchmarks").rglob("*.tsv")),
        reference=LAB,
        compare_to=compare_to,
        config_hash="abc123",
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    """(project folder, runs, table rows) of a report built from the synthetic study."""
    root = tmp_path_factory.mktemp("study")
    runs = write_study(root)
    rows = build_report(root, runs)
    return root, runs, rows


# --- the table ---------------------------------------------------------------------------------


def test_one_row_per_run_in_config_order(study):
    _, runs, rows = study
    assert [r["run"] for r in rows] == list(runs)


def test_diverged_run_stays_a_row_marked_diverged(study):
    root, runs, rows = study
    row = next(r for r in rows if r["run"] == DIVERGED)
    assert row["status"] == "diverged" and row["test_accuracy"] is None
    assert "diverged at epoch 3" in row["status_text"]
    # not averaged in: the page's best run and the dropout figure's line skip it, the table keeps it
    summary = (root / "results/report/summary.md").read_text()
    line = next(x for x in summary.splitlines() if x.startswith(f"| {DIVERGED} "))
    assert "diverged at epoch 3" in line and "| - |" in line
    with open(root / "results/report/metrics.csv", newline="") as f:
        table = {r["run"]: r for r in csv.DictReader(f)}
    assert len(table) == len(runs)
    assert table[DIVERGED]["status"] == "diverged" and table[DIVERGED]["test_accuracy"] == ""
    assert table[DIVERGED]["diverged_epoch"] == "3"


def test_tta_accuracy_has_its_own_column_beside_the_plain_one(study):
    root, _, _ = study
    plain = json.loads((root / "results/runs/simple_cnn-sgd/metrics.json").read_text())
    tta = {**plain, "tta": "flip_translate", "tta_test_accuracy": plain["test_accuracy"] + 1.25}
    rows = [tables.comparison_row(tta, {}), tables.comparison_row(plain, {})]
    assert rows[0]["test_accuracy"] == plain["test_accuracy"]  # the plain accuracy stays the plain one
    assert (
        rows[0]["tta_test_accuracy"] == plain["test_accuracy"] + 1.25 and rows[1]["tta_test_accuracy"] is None
    )
    header, _, with_tta, without = tables.summary_markdown(rows).splitlines()[:4]
    columns = [c.strip() for c in header.split("|")]
    plain_at, tta_at = columns.index("test acc. %"), columns.index("with TTA %")
    assert tta_at == plain_at + 1
    cells = [c.strip() for c in with_tta.split("|")]
    assert (
        cells[plain_at] == f"{plain['test_accuracy']:.2f}"
        and cells[tta_at] == f"{plain['test_accuracy'] + 1.25:.2f}"
    )
    assert [c.strip() for c in without.split("|")][tta_at] == "-"
    assert tables.flat_metrics(tta, {})["tta_test_accuracy"] == plain["test_accuracy"] + 1.25


def test_lab_difference_is_ours_minus_lab(study):
    root, _, rows = study
    row = next(r for r in rows if r["run"] == "simple_cnn-sgd")
    metrics = json.loads((root / "results/runs/simple_cnn-sgd/metrics.json").read_text())
    assert row["lab_accuracy"] == 66.71
    assert row["lab_difference"] == pytest.approx(metrics["test_accuracy"] - 66.71)
    assert next(r for r in rows if r["run"] == "simple_cnn-adam")["lab_accuracy"] is None  # no lab row


def test_not_pretrained_backbone_is_labelled_and_not_set_against_the_lab(study):
    _, _, rows = study
    row = next(r for r in rows if r["run"] == "vgg16")
    assert row["model"] == "vgg16 (not pretrained)"
    assert row["lab_accuracy"] is None and row["lab_difference"] is None
    assert "not pretrained" in row["lab_note"] and "86.06" in row["lab_note"]


def test_runs_on_other_data_are_not_set_against_the_lab(study):
    root, _, _ = study
    metrics = json.loads((root / "results/runs/simple_cnn-sgd/metrics.json").read_text())
    metrics["classes"] = list(synthetic.CLASSES)
    lab, difference, note = tables.lab_comparison(metrics, tables.load_reference(LAB))
    assert lab is None and difference is None and "not CIFAR-10" in note


def test_pretrained_backbone_is_compared_with_the_lab(study):
    root, _, _ = study
    metrics = json.loads((root / "results/runs/vgg16/metrics.json").read_text())
    metrics["pretrained"] = True
    lab, difference, _ = tables.lab_comparison(metrics, tables.load_reference(LAB))
    assert lab == 86.06 and difference == pytest.approx(metrics["test_accuracy"] - 86.06)


def test_diverged_run_with_a_lab_row_gets_no_difference(study):
    root, _, _ = study
    metrics = json.loads((root / f"results/runs/{DIVERGED}/metrics.json").read_text())
    metrics["run"] = "dropout_cnn-dropout0.1"  # the lab has this row
    lab, difference, note = tables.lab_comparison(metrics, tables.load_reference(LAB))
    assert lab == 68.41 and difference is None and "diverged" in note


def test_metrics_csv_has_every_metric_and_setting(study):
    root, runs, _ = study
    with open(root / "results/report/metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    for column in (
        "test_loss",
        "best_test_accuracy",
        "train_test_gap",
        "params_trainable",
        "lab_difference",
        "per_class_accuracy.airplane",
        "param.optimizer",
        "param.weight_decay",
    ):
        assert column in row, column
    assert float(row["train_test_gap"]) > 0  # the fake curves overfit


def test_metrics_without_a_required_key_name_the_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"run": "x", "model": "vit"}))
    with pytest.raises(ValueError, match=r"metrics\.json lacks .*'status'"):
        results.load_metrics(path)


# --- sweeps, from run settings -------------------------------------------------------------


def test_sweep_groups_come_from_the_sweep_settings():
    with open(ROOT / "config" / "config.yaml") as f:
        runs = validate_config(yaml.safe_load(f))
    dropout = sweep_groups(runs, "dropout")
    assert list(dropout) == ["dropout_cnn"] and len(dropout["dropout_cnn"]) == 6
    assert sweep_groups(runs, "optimizer") == {
        "simple_cnn": ["simple_cnn-sgd", "simple_cnn-adam", "simple_cnn-yogi"]
    }


def test_a_two_setting_sweep_gives_one_line_per_other_value():
    config = study_config()
    config["runs"] = {
        "cnn": {"model": "simple_cnn", "sweep": {"optimizer": ["sgd", "adam"], "lr": [0.1, 0.01]}}
    }
    check_schema(config)
    groups = sweep_groups(expand_runs(config), "optimizer")
    assert groups == {
        "cnn (lr 0.1)": ["cnn-sgd-lr0.1", "cnn-adam-lr0.1"],
        "cnn (lr 0.01)": ["cnn-sgd-lr0.01", "cnn-adam-lr0.01"],
    }


# --- comparing studies ----------------------------------------------------------------------


def test_diff_against_a_saved_metrics_csv(study, tmp_path):
    root, runs, _ = study
    theirs = tables.load_study(root / "results/report/metrics.csv")
    ours = copy.deepcopy(theirs)
    ours["vit"]["test_accuracy"] = str(float(theirs["vit"]["test_accuracy"]) + 1.5)
    ours["vit"]["param.lr"] = "0.002"
    ours["new_run"] = dict(ours["vit"], run="new_run")
    del ours["vgg16"]
    diff = tables.diff_studies(ours, theirs)
    by_key = {(d["run"], d["kind"], d["name"]): d for d in diff}
    assert by_key[("vit", "metric", "test_accuracy")]["change"] == pytest.approx(1.5)
    assert (
        by_key[("vit", "param", "lr")]["theirs"] == 0.001 and by_key[("vit", "param", "lr")]["ours"] == 0.002
    )
    assert by_key[("new_run", "run", "present")]["change"] == "added"
    assert by_key[("vgg16", "run", "present")]["change"] == "removed"
    # unchanged params are not listed; unchanged metrics are, with a zero change
    assert ("simple_cnn-sgd", "param", "lr") not in by_key
    assert by_key[("simple_cnn-sgd", "metric", "test_accuracy")]["change"] == 0
    # a diverged run is listed by its status; it has no accuracy to subtract
    assert by_key[(DIVERGED, "metric", "status")]["ours"] == "diverged"
    assert (DIVERGED, "metric", "test_accuracy") not in by_key


def test_a_results_folder_without_a_report_is_read_from_its_metrics_json(study):
    root, runs, _ = study
    from_folder = tables.load_study(root / "results")  # has report/metrics.csv
    shutil.copytree(root / "results/runs", root / "other/runs")
    from_json = tables.load_study(root / "other")
    assert set(from_folder) == set(from_json) == set(runs)
    assert from_json["vit"]["test_accuracy"] == from_folder["vit"]["test_accuracy"]


def test_the_lab_reference_is_a_study_to_diff_against(study):
    root, _, _ = study
    diff = tables.diff_studies(tables.load_study(root / "results/report/metrics.csv"), tables.load_study(LAB))
    sgd = next(d for d in diff if d["run"] == "simple_cnn-sgd" and d["name"] == "test_accuracy")
    assert sgd["theirs"] == 66.71 and sgd["change"] == pytest.approx(sgd["ours"] - 66.71)


def test_compare_to_a_missing_path_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="give a metrics.csv or a results folder"):
        tables.load_study(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="no report/metrics.csv"):
        tables.load_study(tmp_path)


def test_page_shows_the_diff_when_asked(study):
    root, runs, _ = study
    saved = root / "saved-metrics.csv"
    shutil.copy(root / "results/report/metrics.csv", saved)
    build_report(root, runs, compare_to=saved)
    page = (root / "results/report/index.html").read_text()
    assert "Compared with" in page and 'id="diff"' in page
    build_report(root, runs)  # leave the fixture's page as it was


# --- the page -------------------------------------------------------------------------------


def test_page_is_self_contained(study):
    root, runs, _ = study
    page = (root / "results/report/index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    # every figure: 6 comparison, saliency comparison, samples, 3 per run, 2 lr finder (as saliency)
    assert len(sources) == 6 + 1 + 1 + 3 * len(runs)
    table = page[page.index('id="runs"') : page.index("</table>", page.index('id="runs"'))]
    assert table.count("<tr") == len(runs) + 1  # header + one per run
    assert 'class="bad"' in table  # the diverged row is marked


def test_page_has_data_and_provenance(study):
    root, _, _ = study
    page = (root / "results/report/index.html").read_text()
    assert "1" * 64 in page  # the archive's sha256 from source.json
    assert "abc123" in page  # config hash
    assert "torch" in page and "snakemake" in page
    # counts per class: 3 train and 2 test images of each of the 10 classes
    assert re.search(r"<td class=\"text\">airplane</td><td>3</td><td>2</td>", page)
    # compute time: 12.5 s of train and of saliency for each of 8 runs, 2 x 3 s lr_find, 1 s prepare,
    # 2 s features
    assert ">3 min 29 s</td>" in page


def test_further_facts_show_under_how_it_was_made():
    """The report step can add facts (such as the code version) to the provenance table."""
    facts = provenance.provenance([], "abc123", [], facts={"code version": "0123abc (dirty)"})
    html = page._provenance_html(facts)
    assert html.index("config hash") < html.index("code version") and "0123abc (dirty)" in html


def test_the_page_names_the_code_of_every_run():
    """Each metrics.json records its code version; runs from two commits show both, once each."""
    version = {"commit": "a" * 40, "dirty": False, "package_version": "0.1.0"}
    metrics = [
        {"device": "cpu", "code_version": version},
        {"device": "cpu", "code_version": version},
        {"device": "cpu", "code_version": {**version, "commit": "b" * 40, "dirty": True}},
    ]
    html = page._provenance_html(provenance.provenance(metrics, "abc123", []))
    assert "cifarlab 0.1.0, commit aaaaaaaaaaaa; cifarlab 0.1.0, commit bbbbbbbbbbbb (dirty)" in html
    assert html.count("aaaaaaaaaaaa") == 1
    assert "not recorded" in page._provenance_html(provenance.provenance([{"device": "cpu"}], "x", []))


def test_benchmark_seconds_add_up_per_rule(tmp_path):
    for rule, name, seconds in (("train", "a", 10.5), ("train", "b", 4.5), ("prepare", "d", 2.0)):
        _write(tmp_path / f"results/benchmarks/{rule}/{name}.tsv", f"s\th:m:s\n{seconds}\t0:00:10\n")
    totals = provenance.benchmark_seconds(sorted(tmp_path.rglob("*.tsv")))
    assert totals == {"prepare": 2.0, "train": 15.0}


# --- figures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["accuracy_vs_params", "accuracy_vs_time", "dropout_sweep", "optimizers", "learning_curves", "lr_finder"],
)
def test_comparison_figure_is_a_real_png(study, name):
    root, _, _ = study
    with Image.open(root / f"results/figures/report/{name}.png") as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 150


def test_sweep_figure_without_a_sweep_says_how_to_get_one(tmp_path):
    with pytest.raises(ValueError, match="no dropout sweep"):
        comparison_figures.plot_dropout_sweep([], {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no optimizer sweep"):
        comparison_figures.plot_optimizers([], [], {}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_lr_finder_curve_is_the_median_over_repeats_where_they_exist():
    result = fake_lr_finder("x")
    lrs, median, low, high = median_curve(result)  # what the comparison figure draws
    assert len(lrs) == len(median) == 60  # the longer repeat carries the tail
    assert all(lo <= m <= hi for lo, m, hi in zip(low, median, high, strict=True))


# --- the table of figures ---------------------------------------------------------------------


def test_every_figure_entry_has_its_caption_and_a_function_that_takes_its_keywords(tmp_path):
    assert len({f.name for f in FIGURES}) == len({f.target for f in FIGURES}) == len(FIGURES)
    assert len({f.log for f in FIGURES}) == len(FIGURES)
    for figure in FIGURES:
        caption = ROOT / figure.caption
        assert caption.is_file() and caption.read_text().strip(), figure.caption
        keywords = {**figure.inputs, **figure.params, **({"groups": {}} if figure.sweep else {})}
        # the call scripts/plot.py makes: every keyword is a parameter of the function
        inspect.signature(figure.function()).bind(**keywords, out_png=tmp_path / "x.png")
    with pytest.raises(ValueError, match="runs 'everything' is not one of"):
        type(FIGURES[0])(**{**vars(FIGURES[0]), "runs": "everything"})


def test_the_table_of_figures_and_the_reader_need_no_torch_numpy_or_matplotlib():
    """The .smk files import cifarlab.figures; the status command and the tables read results."""
    code = "import sys, cifarlab.figures, cifarlab.results, cifarlab.tables, cifarlab.page; "
    code += "print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_figure_is_in_a_study_only_with_the_runs_it_shows():
    """Sweep figures need that sweep, the LR-finder and saliency figures their runs."""
    config = study_config()
    config["runs"] = {"cnn": {"model": "simple_cnn", "sweep": {"optimizer": ["sgd", "adam"]}}}
    check_schema(config)
    runs = expand_runs(config)
    run_sets = {"all": list(runs), "lr_finder": [], "saliency": ["cnn-adam"]}
    shown = {f.name: figure_runs(f, runs, run_sets) for f in FIGURES}
    assert shown["optimizers"] == ["cnn-sgd", "cnn-adam"] and shown["dropout_sweep"] == []
    assert shown["lr_finder_comparison"] == shown["lr_finder"] == []
    assert shown["saliency_comparison"] == shown["saliency"] == ["cnn-adam"]
    assert shown["accuracy_vs_params"] == shown["curves"] == ["cnn-sgd", "cnn-adam"]
    assert figure_params(figure_named("optimizers"), runs, run_sets) == {
        "groups": {"cnn": ["cnn-sgd", "cnn-adam"]}
    }
    assert figure_inputs(figure_named("optimizers"), shown["optimizers"])["history_paths"] == [
        "results/runs/cnn-sgd/history.csv",
        "results/runs/cnn-adam/history.csv",
    ]


def test_targets_and_rules_of_the_figures_stay_where_docs_and_tests_name_them():
    """Users and the docs name figures by file and by rule; the table keeps both."""
    table = {f.rule: f.target for f in FIGURES}
    assert table["plot_lr_finder_comparison"] == "results/figures/report/lr_finder.png"
    assert table["plot_saliency_comparison"] == "results/figures/saliency/comparison.png"
    assert table["plot_curves"] == "results/figures/curves/{run}.png"
    assert figure_named("curves").log == "logs/plots/curves/{run}.log"
    documented = re.findall(r"^\| `(results/figures/[^`]+)` \| [^|]+ \| `(plot_\w+)` \|$",
                            (ROOT / "docs/report.md").read_text(), re.M)  # fmt: skip
    assert {rule: target.replace("<run>", "{run}") for target, rule in documented} == table


def test_page_shows_the_figures_in_the_order_of_the_table_with_their_captions(study):
    root, runs, _ = study
    page = (root / "results/report/index.html").read_text()
    shown = re.findall(r"<figcaption>(.*?) <code>([^<]+)</code></figcaption>", page)
    study_figures = [f for _, path in shown for f in FIGURES if not f.per_run and path.endswith(f.target)]
    sections = {s: i for i, s in enumerate(("comparison", "lr_finder", "saliency"))}
    table_order = sorted((f for f in FIGURES if not f.per_run), key=lambda f: sections[f.section])
    assert study_figures == table_order
    for figure in study_figures:  # the caption is the .rst file's text, its ``code`` rendered
        caption = next(c for c, path in shown if path.endswith(figure.target))
        text = " ".join((ROOT / figure.caption).read_text().split())
        assert caption == re.sub(r"``(.+?)``", r"<code>\1</code>", text), figure.name
    # per run: the run's figures in table order, captioned with their titles
    first = next(iter(runs))
    assert [c for c, path in shown if f"/{first}.png" in path] == [
        f"{first}: learning curves",
        f"{first}: confusion matrix",
        f"{first}: saliency maps",
    ]


class _Named(list):
    """What Snakemake gives a script as snakemake.input / .params: a list with names."""

    def __init__(self, named: dict):
        super().__init__(named.values())
        self.named = named

    def items(self):
        return self.named.items()

    def __getitem__(self, key):
        return self.named[key] if isinstance(key, str) else super().__getitem__(key)


@pytest.mark.parametrize(
    "name",
    [
        "accuracy_vs_params",
        "dropout_sweep",
        "optimizers",
        "learning_curves",
        "lr_finder_comparison",
        "curves",
    ],
)
def test_the_plot_script_draws_a_figure_from_its_entry(study, name, tmp_path, monkeypatch):
    """scripts/plot.py finds the rule's entry and calls its function with the rule's inputs and params."""
    root, runs, _ = study
    figure = figure_named(name)
    run_sets = {"all": list(runs), "lr_finder": ["simple_cnn-sgd", "simple_cnn-adam"], "saliency": list(runs)}
    names = figure_runs(figure, runs, run_sets)
    inputs = figure_inputs(figure, names)
    if figure.per_run:
        inputs = {k: v.replace("{run}", "vit") for k, v in inputs.items()}
    out = tmp_path / "figure.png"
    fake = SimpleNamespace(
        rule=figure.rule,
        input=_Named(inputs),
        # a param that is not one of the figure's options (a code digest, say) is not passed on
        params=_Named({**figure_params(figure, runs, run_sets), "code": "0123abc"}),
        output=[str(out)],
        log=[str(tmp_path / "plot.log")],
    )
    monkeypatch.chdir(root)
    runpy.run_path(str(ROOT / "scripts/plot.py"), init_globals={"snakemake": fake})
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 200


# --- through Snakemake ----------------------------------------------------------------------------


def _snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_report_rules_through_snakemake(tmp_path):
    """The plot and report rules run on step outputs, `snakemake --report` works, and one run's new
    metrics rerun only the figures that show that run, and the page."""
    for item in ("Snakefile", "workflow", "scripts", "environment.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    runs = write_study(tmp_path)
    result = _snakemake(tmp_path, "report")
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "results/report/index.html").read_text()
    table = page[page.index('id="runs"') :]
    assert table[: table.index("</table>")].count("<tr") == len(runs) + 1
    for name in ("accuracy_vs_params", "dropout_sweep", "optimizers", "learning_curves", "lr_finder"):
        assert (tmp_path / f"results/figures/report/{name}.png").stat().st_size > 0
    # Snakemake's own report, with the figures marked report() and their captions.
    result = _snakemake(tmp_path, "--report", "results/report/snakemake.html")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Learning curves of run" in (tmp_path / "results/report/snakemake.html").read_text()
    # A new vit result: the figures that show vit and the page rerun, the sweeps do not.
    metrics = tmp_path / "results/runs/vit/metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "test_accuracy": 12.5}))
    plan = _snakemake(tmp_path, "report", "-n", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = set(re.findall(r"^(plot_\w+|report|evaluate|train)\s+\d+", plan.stdout, re.M))
    assert jobs == {
        "plot_accuracy_vs_params",
        "plot_accuracy_vs_time",
        "plot_learning_curves",
        "plot_curves",
        "plot_confusion",
        "report",
    }, plan.stdout


# The workflow's rules and its local rules, as JSON, through Snakemake's API.
_LIST_RULES = """
import json
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    api_workflow = api.workflow(ResourceSettings(cores=1), snakefile=Path("Snakefile"), workdir=Path("."))
    workflow = api_workflow._workflow
    print(json.dumps([[rule.name for rule in workflow.rules], sorted(workflow._localrules)]))
"""


def _walk_through_blocks() -> tuple[str, str, str]:
    """(function, entry, caption) as docs/extending.md's "A new figure" writes them."""
    text = (ROOT / "docs/extending.md").read_text()
    section = text[text.index("## A new figure") :]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    python = [code for lang, code in blocks if lang == "python"]
    function = next(code for code in python if code.startswith("def "))
    entry = next(code for code in python if code.lstrip().startswith("Figure("))
    caption = next(code for lang, code in blocks if lang == "rst")
    return function, entry, caption


@pytest.mark.slow
def test_a_new_figure_from_this_walk_through(tmp_path):
    """docs/extending.md's new figure, applied to a copy of the project as written there (one
    function, one entry, one caption file): its rule exists as a local job, the dry run plans it, it
    draws, and the page shows it with its caption after the figure it follows. (`snakemake --report`
    takes its caption from the same entry as every other figure's: test_report_rules_through_snakemake.)"""
    shutil.copytree(ROOT / "cifarlab", tmp_path / "cifarlab", ignore=shutil.ignore_patterns("__pycache__"))
    for item in ("Snakefile", "workflow", "scripts", "environment.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    function, entry, caption = _walk_through_blocks()
    with open(tmp_path / "cifarlab/comparison_figures.py", "a") as f:
        f.write("\n\n" + function)
    figures_py = tmp_path / "cifarlab/figures.py"
    source = figures_py.read_text()
    after = source.index('name="lr_finder_comparison"')
    at = source.rindex("    Figure(\n", 0, after)  # the doc puts it after learning_curves
    figures_py.write_text(source[:at] + entry + source[at:])
    caption_file = re.search(r'caption="([^"]+)"', entry).group(1)
    (tmp_path / caption_file).write_text(caption)
    runs = write_study(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # the copy's cifarlab, with the new entry

    def snakemake(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    # every figure's rule exists and is a local job (never sent to a cluster), the new one too
    listing = subprocess.run(
        [sys.executable, "-c", _LIST_RULES],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listing.returncode == 0, listing.stderr[-3000:]
    rules, local = json.loads(listing.stdout.splitlines()[-1])
    plot_rules = {f.rule for f in FIGURES} | {"plot_per_class_accuracy"}
    assert plot_rules <= set(local) and {r for r in rules if r.startswith("plot_")} == plot_rules
    plan = snakemake("report", "-n", "--quiet", "rules")
    assert re.search(r"^plot_per_class_accuracy\s+1$", plan.stdout, re.M), plan.stdout
    snakemake("report")
    with Image.open(tmp_path / "results/figures/report/per_class_accuracy.png") as image:
        assert image.format == "PNG" and image.width > 200
    page = (tmp_path / "results/report/index.html").read_text()
    shown = re.findall(r"<figcaption>(.*?) <code>([^<]+)</code></figcaption>", page)
    paths = [path for _, path in shown]
    new = paths.index("results/figures/report/per_class_accuracy.png")
    assert paths[new - 1] == "results/figures/report/learning_curves.png"
    assert "which classes each model finds hard" in shown[new][0]
    assert page.count("<tr") > len(runs)  # the rest of the page is still there
