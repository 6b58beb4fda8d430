"""The study's plan (cifarlab.study.plan.Study) is the plan Snakemake runs, and the one the status
command and the report read: the demo study is planned once here and once by a dry run of the
workflow, and they must list the same jobs."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import planned_jobs

from cifarlab.core import paths
from cifarlab.study.plan import Study, features_wildcards
from cifarlab.study.status import load_config, study_status

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config", "environment.yaml")
DEMO = "config/demo.yaml"


def demo_study() -> Study:
    """The demo study as Snakemake merges it (config.yaml, then the overlay), planned."""
    return Study.from_config(load_config([DEMO], [], ROOT), ROOT)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict[str, list[dict[str, str]]]:
    """rule -> the wildcards of each job a forced dry run of the demo study plans."""
    workdir = tmp_path_factory.mktemp("plan")
    for part in WORKFLOW_PARTS:
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / part)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "all", "-n", "-F", "--cores", "1", "--configfile", DEMO],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = collections.defaultdict(list)
    for job in planned_jobs(result.stdout + result.stderr):
        jobs[job["rule"]].append(job["wildcards"])
    return jobs


def as_strings(items: list[dict]) -> list[dict[str, str]]:
    return [{k: str(v) for k, v in item.items()} for item in items]


def key(item: dict) -> tuple:
    return tuple(sorted(item.items()))


@pytest.mark.slow
def test_the_plan_lists_the_jobs_snakemake_plans(dry_run):
    study = demo_study()
    for rule, planned in (
        ("train", study.jobs),
        ("evaluate", study.jobs),
        ("lr_find", study.lr_finder_pairs),
        ("saliency", study.saliency_pairs),
        ("prepare", [{"dataset": d} for d in study.datasets]),
    ):
        assert sorted(dry_run[rule], key=key) == sorted(as_strings(planned), key=key), rule
    features = {key(w) for w in as_strings([features_wildcards(s) for s in study.cached_feature_jobs])}
    assert {key(w) for w in dry_run["features"]} == features
    assert len(dry_run["features"]) == len(features)
    # each plot job draws one figure file of the report
    plotted = sum(len(jobs) for rule, jobs in dry_run.items() if rule.startswith("plot_"))
    assert plotted == sum(len(study.figure_files(f)) for f in study.page_figures())


@pytest.mark.slow
def test_status_and_the_report_read_the_runs_snakemake_trains(dry_run, tmp_path):
    study = demo_study()
    trained = sorted(dry_run["train"], key=key)
    # status: one line per trained model, nothing trained yet in an empty project
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    statuses = study_status(load_config([str(ROOT / DEMO)], [], tmp_path), tmp_path)
    assert sorted(s.run for s in statuses) == sorted(
        paths.job_label({"name": j["run"], **j}) for j in trained
    )
    assert {s.state for s in statuses} == {"waiting"}
    # the report: the metrics of each evaluated model, the LR sweeps and maps of each pair
    inputs = study.report_inputs()
    assert sorted(inputs["metrics"]) == sorted(paths.fill_each(paths.METRICS, dry_run["evaluate"]))
    assert sorted(inputs["lr_finder"]) == sorted(paths.fill_each(paths.LR_FINDER, dry_run["lr_find"]))
    assert sorted(inputs["saliency"]) == sorted(paths.fill_each(paths.SALIENCY_RESULT, dry_run["saliency"]))


def test_seeds_and_the_budget_are_those_of_the_config():
    overlay = yaml.safe_load((ROOT / DEMO).read_text())
    study = demo_study()
    dataset = next(iter(study.datasets))
    for name, run in study.runs.items():
        entry = overlay["runs"].get(run["entry"]) or {}
        expected = entry.get("seeds", overlay["defaults"]["seeds"])
        assert study.seeds(dataset, name) == list(range(expected)), name
        jobs = [j for j in study.jobs if j["run"] == name]
        assert [j["seed"] for j in jobs] == study.seeds(dataset, name)
        # the budget caps every job's settings (the plan reads the capped config)
        for job in jobs:
            settings = study.job(job)
            assert settings["epochs"] <= overlay["budget"]["max_epochs"]
            assert settings["image_size"] <= overlay["budget"]["max_image_size"]
    assert study.seeds("no-such-dataset", next(iter(study.runs))) == []
    # the lab's study trains longer than the budget: the cap did something
    lab = Study.from_config(load_config([], [], ROOT), ROOT)
    assert max(run["epochs"] for run in lab.runs.values()) > overlay["budget"]["max_epochs"]


def test_the_first_seed_is_the_one_the_lr_finder_and_saliency_use():
    study = demo_study()
    for pair in study.saliency_pairs:
        run = study.runs[pair["run"]]
        assert study.saliency_inputs(pair)["model"] == paths.fill(paths.MODEL, **pair, seed=run["seeds"][0])
    for pair in study.lr_finder_pairs:
        assert study.job(pair)["seed"] == study.runs[pair["run"]]["seeds"][0]
