"""Datasets and seeds as dimensions of a study, through Snakemake: a two-dataset study (generated
shapes and a small image folder) run to its report, and what adding a seed or a dataset plans.

The study is its own config/config.yaml (the lab's defaults, tiny runs), so that it costs about
two minutes on a 2-core machine.
"""

from __future__ import annotations

import copy
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, planned_jobs
from test_data import make_image_folder

from cifarlab.config.validate import study_jobs, validate_config
from cifarlab.core import paths

WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config", "profiles", "environment.yaml")
DATASETS = [
    {
        "name": "shapes",
        "source": "synthetic",
        "synthetic": {"seed": 0, "train_per_class": 40, "test_per_class": 10},
    },
    {"name": "folder", "source": "images"},  # made by the fixture: train/<class>/*.png, test/<class>/*.png
]
RUNS = {
    # on both datasets, two seeds each
    "simple_cnn": {"model": "simple_cnn", "lr": 0.01, "seeds": 2, "sweep": {"optimizer": ["sgd", "adam"]}},
    # on the image folder only, one seed
    "folder_only": {"model": "simple_cnn", "lr": 0.01, "datasets": ["folder"]},
}


def study_config() -> dict:
    config = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    config.update(
        datasets=copy.deepcopy(DATASETS),
        pretrained=False,
        threads=1,
        runs=copy.deepcopy(RUNS),
        lr_finder={"runs": []},
        saliency={"runs": ["simple_cnn-sgd"], "methods": ["vanilla"]},
    )
    config["defaults"].update(epochs=1, seeds=1)
    return config


def snakemake(workdir: Path, *args: str, overlay: dict | None = None) -> subprocess.CompletedProcess:
    extra = []
    if overlay is not None:
        (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
        extra = ["--configfile", "overlay.yaml"]
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args, "--cores", "2", *extra],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
    )


def planned(result: subprocess.CompletedProcess) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run plans."""
    assert result.returncode == 0, result.stderr[-3000:]
    return [(job["rule"], job["wildcards"]) for job in planned_jobs(result.stdout + result.stderr)]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("dimensions")
    for part in WORKFLOW_PARTS:
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / part)
    make_image_folder(workdir / "images", per_class={"train": 12, "test": 4})
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(study_config(), sort_keys=False))
    result = snakemake(workdir, "report")
    assert result.returncode == 0, result.stderr[-6000:]
    return workdir


@pytest.mark.slow
def test_a_two_dataset_study_trains_each_run_on_its_datasets_and_reports_both(study):
    config = study_config()
    runs = validate_config(config, study)
    jobs = study_jobs(runs, ["shapes", "folder"])
    assert len(jobs) == 2 * 2 * 2 + 1  # two optimizers x two seeds x two datasets, and folder_only
    for job in jobs:
        metrics = json.loads((study / paths.fill(paths.METRICS, **job)).read_text())
        assert (metrics["dataset"], metrics["run"], metrics["seed"]) == (
            job["dataset"],
            job["run"],
            job["seed"],
        )
        assert metrics["status"] == "ok" and 0 <= metrics["test_accuracy"] <= 100
    assert not (study / paths.fill(paths.RUN, dataset="shapes", run="folder_only", seed=0)).exists()
    # each dataset prepared once, from its own source, with its own classes
    shapes = json.loads(
        (study / paths.fill(paths.METRICS, dataset="shapes", run="simple_cnn-sgd", seed=0)).read_text()
    )
    folder = json.loads(
        (study / paths.fill(paths.METRICS, dataset="folder", run="simple_cnn-sgd", seed=0)).read_text()
    )
    assert len(shapes["confusion_matrix"]) == 10 and len(folder["confusion_matrix"]) == 3
    for dataset in ("shapes", "folder"):
        assert (
            (study / paths.fill(paths.FIGURES, dataset=dataset) / "report" / "optimizers.png").stat().st_size
        )
    with open(study / paths.REPORT / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {row["dataset"] for row in rows} == {"shapes", "folder"}
    page = (study / paths.REPORT / "index.html").read_text()
    summary = (study / paths.REPORT / "summary.md").read_text()
    for text in (page, summary):
        assert "shapes" in text and "folder" in text and "folder_only" in text


@pytest.mark.slow
def test_adding_a_seed_plans_that_seeds_jobs_only(study):
    assert planned(snakemake(study, "report", "-n")) == []  # the finished study
    jobs = planned(snakemake(study, "report", "-n", overlay={"runs": {"folder_only": {"seeds": 2}}}))
    trained = [w for rule, w in jobs if rule == "train"]
    assert trained == [{"dataset": "folder", "run": "folder_only", "seed": "1"}], jobs
    assert {rule for rule, _ in jobs} <= {"train", "evaluate", "plot_curves", "plot_confusion", "report"} | {
        f"plot_{name}" for name in ("accuracy_vs_params", "accuracy_vs_time", "learning_curves")
    }, jobs
    assert all(w.get("dataset", "folder") == "folder" for _, w in jobs), jobs


@pytest.mark.slow
def test_adding_a_dataset_plans_only_its_jobs(study):
    more = {
        "name": "more",
        "source": "synthetic",
        "synthetic": {"seed": 1, "train_per_class": 20, "test_per_class": 5},
    }
    jobs = planned(snakemake(study, "report", "-n", overlay={"datasets": [*DATASETS, more]}))
    rules = {rule for rule, _ in jobs}
    assert {"download", "prepare", "train", "evaluate", "report"} <= rules, jobs
    # every job with a dataset is the new one's; the report is the one job of the whole study
    assert all(w["dataset"] == "more" for rule, w in jobs if rule != "report"), jobs
    assert len([1 for rule, _ in jobs if rule == "train"]) == 2 * 2  # simple_cnn's; folder_only is not on it
