"""The whole study through Snakemake on tiny synthetic data: every step, the report, one figure rebuilt.

This is what a user runs (`snakemake --cores 2 report --configfile config/demo.yaml`), made tiny by
tests/e2e_study.yaml so that it takes a couple of minutes.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cifarlab.config.validate import study_jobs, validate_config
from cifarlab.core import paths
from cifarlab.plots.figures import figure_named

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config", "profiles", "environment.yaml")
OVERLAYS = ("config/demo.yaml", "tests/e2e_study.yaml")


def snakemake(
    workdir: Path, *args: str, timeout: int = 1200, overlays: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        # targets first: --configfile takes every word after it
        [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", *OVERLAYS, *overlays],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result


def copy_workflow(workdir: Path) -> Path:
    """The workflow and the tiny study's overlay, copied into `workdir` (no data, no results)."""
    for part in WORKFLOW_PARTS:
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / part)
    (workdir / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "e2e_study.yaml", workdir / "tests")
    return workdir


# What Snakemake printed while it ran the study (its terminal), saved by the `study` fixture.
TERMINAL = "snakemake-terminal.txt"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A copy of the workflow in a temp folder, with the tiny study run to its report."""
    workdir = copy_workflow(tmp_path_factory.mktemp("study"))
    result = snakemake(workdir, "report")
    assert result.returncode == 0, result.stderr[-6000:]
    (workdir / TERMINAL).write_text(result.stdout + result.stderr)
    return workdir


def study_config(workdir: Path) -> dict:
    """The tiny study's config as the workflow sees it: merged, validated, defaults filled in."""
    config = {}
    for path in ("config/config.yaml", *OVERLAYS):
        overlay = yaml.safe_load(open(workdir / path))
        config = _merge(config, overlay)
    validate_config(config)
    return config


def expanded_runs(workdir: Path) -> dict[str, dict]:
    return validate_config(study_config(workdir))


# The tiny study's one dataset (config/demo.yaml's `dataset:`).
DATASET = "synthetic"


def result(workdir: Path, pattern: str, run: str, seed: int = 0) -> Path:
    """A file of the tiny study (a cifarlab.core.paths pattern) for a run and seed."""
    return workdir / paths.fill(pattern, dataset=DATASET, run=run, seed=seed)


def _merge(base: dict, overlay: dict) -> dict:
    """Snakemake's merge of --configfile overlays: dicts recursively, everything else replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.mark.slow
def test_every_run_is_trained_evaluated_and_reported(study):
    runs = expanded_runs(study)
    assert len(runs) == 11  # the study's 15, with the dropout sweep cut to two values
    jobs = study_jobs(runs, [DATASET])
    assert len(jobs) == 11 + 3  # the simple CNN's three optimizers with two seeds each
    fast = json.loads(result(study, paths.METRICS, "airbench").read_text())
    assert fast["tta"] == "flip_translate" and 0 <= fast["tta_test_accuracy"] <= 100  # beside the plain one
    for job in jobs:
        metrics = json.loads((study / paths.fill(paths.METRICS, **job)).read_text())
        assert (metrics["run"], metrics["dataset"], metrics["seed"]) == (job["run"], DATASET, job["seed"])
        assert metrics["status"] == "ok", (job, metrics["status"])
        assert 0 <= metrics["test_accuracy"] <= 100
        assert metrics["params_total"] >= metrics["params_trainable"] > 0
        assert (
            result(study, paths.FIGURES + "/curves/{run}/seed{seed}.png", job["run"], job["seed"])
            .stat()
            .st_size
        )
    two_seeds = [result(study, paths.MODEL, "simple_cnn-sgd", seed).read_bytes() for seed in (0, 1)]
    assert two_seeds[0] != two_seeds[1]  # two seeds are two trainings
    with open(study / "results" / "report" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # a row per trained model, and one per run over its seeds
    assert len(rows) == len(jobs) + len(runs)
    assert list(dict.fromkeys(row["run"] for row in rows)) == list(runs)
    html = (study / "results" / "report" / "index.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and 'src="https://' not in html
    assert (study / "results" / "report" / "summary.md").read_text().count("\n|") >= len(runs)


@pytest.mark.slow
def test_report_opens_in_a_real_browser(study):
    from test_report_browser import check_report_in_browser, require_browser

    require_browser()
    rows = len(expanded_runs(study))
    screenshot = check_report_in_browser(study / "results" / "report" / "index.html", rows, name="e2e-demo")
    assert screenshot.stat().st_size > 0


@pytest.mark.slow
def test_nothing_is_stale_after_a_run_and_one_figure_rebuilds_alone(study):
    result = snakemake(study, "report", "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr
    figure = study / figure_named("confusion").path(dataset=DATASET, run="vit", seed=0)
    figure.unlink()
    plan = snakemake(study, str(figure.relative_to(study)), "-n", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr
    assert "plot_confusion" in plan.stdout and "train" not in plan.stdout and "evaluate" not in plan.stdout
    rebuilt = snakemake(study, str(figure.relative_to(study)))
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert figure.stat().st_size > 0


def test_changing_an_evaluation_setting_re_evaluates_without_retraining(study):
    """`tta` is read by evaluate only: a new value plans evaluate (and the report), no train."""
    overlay = study / "tta.yaml"
    overlay.write_text("runs:\n  airbench: {tta: flip}\n")
    plan = snakemake(study, "report", "-n", "--quiet", "rules", overlays=(str(overlay),))
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "evaluate" in plan.stdout and "report" in plan.stdout
    assert "train" not in plan.stdout and "lr_find" not in plan.stdout, plan.stdout


def estimate_block(terminal: str) -> list[str]:
    """The estimate Snakemake printed: its 'Estimate:' line and the indented lines under it."""
    lines = terminal.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Estimate: "))
    end = next((i for i in range(first + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[first:end]


@pytest.mark.slow
def test_the_terminal_shows_each_runs_epochs_the_lr_finder_saliency_and_the_estimate(study, tmp_path):
    terminal = (study / TERMINAL).read_text()
    runs = expanded_runs(study)
    for job in study_jobs(runs, [DATASET]):
        run, label = (
            runs[job["run"]],
            f"{DATASET}/{job['run']}/seed{job['seed']}",
        )  # cifarlab.core.paths.job_label
        for epoch in range(1, run["epochs"] + 1):
            assert f"train {label} epoch {epoch}/{run['epochs']} | loss " in terminal, label
    config = study_config(study)
    repeats = config["lr_finder"]["repeats"]
    lr_find_runs = [name for name, run in runs.items() if run["lr"] == "auto"]
    assert lr_find_runs
    for name in lr_find_runs:
        assert f"lr_find {DATASET}/{name} {repeats}/{repeats} repeats | ~0 s left" in terminal, name
    for name in config["saliency"]["runs"]:
        assert f"saliency {DATASET}/{name} 1/" in terminal, name
    assert "\r" not in terminal  # whole lines, no carriage-return bars (stderr is not a terminal)
    # The estimate comes after Snakemake's table of jobs, before the first job runs; a dry run of
    # the same study from scratch prints the same one.
    block = estimate_block(terminal)
    assert "wall time for" in block[0] and any(line.split()[0] == "train" for line in block[1:])
    assert terminal.index("Estimate: ") < terminal.index("rule train:")
    dry = snakemake(copy_workflow(tmp_path), "report", "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert estimate_block(dry.stdout + dry.stderr) == block


@pytest.mark.slow
def test_a_study_with_nothing_done_is_calibrated_by_the_last_one_on_this_machine(study):
    """The finished study remembered what its jobs measured: a plan that reruns everything uses it."""
    forced = snakemake(study, "report", "-n", "--forceall")
    assert forced.returncode == 0, forced.stderr[-3000:]
    first = estimate_block(forced.stdout + forced.stderr)[0]
    assert "calibrated by jobs measured on this machine (" in first and "train" in first, first
