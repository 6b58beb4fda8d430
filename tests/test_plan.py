"""The study's plan (cifarlab.study.plan.Study) is the plan Snakemake runs, and the one the status
command and the report read: the demo study is planned once here and once by a dry run of the
workflow, and they must list the same jobs."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import planned_jobs

from cifarlab.config import validate
from cifarlab.config.schema import ConfigError
from cifarlab.core import paths
from cifarlab.study import estimate, plan
from cifarlab.study.plan import Study, features_wildcards
from cifarlab.study.status import load_config, merge, study_status

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


# --- a study's size (issue 26) --------------------------------------------------------------------


def sweep_overlay(runs: int) -> dict:
    """An overlay adding one entry whose lr sweep makes `runs` runs (benchmarks/planning.py's)."""
    values = [round(1e-3 + i * 1e-7, 10) for i in range(runs)]
    return {"runs": {"scale": {"model": "simple_cnn", "sweep": {"lr": values}}}}


def demo_config(*overlays: dict) -> dict:
    config = load_config([DEMO], [], ROOT)
    for extra in overlays:
        config = merge(config, extra)
    return config


def test_a_study_above_the_limit_is_planned_only_when_confirmed(monkeypatch):
    small = demo_study()
    limit = len(small.jobs) - 1  # the demo is one model too many
    monkeypatch.setattr(plan, "LARGE_STUDY_MODELS", limit)
    with pytest.raises(ConfigError) as refused:
        Study.from_config(demo_config(), ROOT)
    message = str(refused.value)
    hours = sum(estimate.JOB_START_SECONDS + s for s in small.train_seconds(ROOT)) / 3600
    assert f"trains {len(small.jobs):,} models" in message and f"more than {limit:,}" in message
    assert f"{small.job_count():,} jobs" in message and f"about {hours:,.0f} h" in message
    assert "--config confirm_large_study=true" in message
    confirmed = Study.from_config(demo_config({"confirm_large_study": True}), ROOT)
    assert confirmed.jobs == small.jobs
    # the flag as Snakemake's --config gives it (text), and its default in the schema
    assert Study.from_config(merge(load_config([DEMO], ["confirm_large_study=true"], ROOT), {}), ROOT).jobs
    monkeypatch.setattr(plan, "LARGE_STUDY_MODELS", len(small.jobs))  # at the limit: no question
    assert Study.from_config(demo_config(), ROOT).config["confirm_large_study"] is False


@pytest.mark.slow
def test_the_job_count_is_what_snakemake_plans(dry_run):
    assert demo_study().job_count() == sum(len(jobs) for jobs in dry_run.values())


RUN_NAMES_OF_SWEEPS = [
    "simple_cnn-lr1e-05",
    "vit-lr1e+06",
    "a-pretrainedtrue",
    "b-seed-1",
    "torchvision.resnet50",
]


def test_the_run_name_pattern_matches_every_valid_name_and_no_path():
    names = [
        name
        for c in ([], [DEMO], ["config/cifar100.yaml"])
        for name in Study.from_config(load_config(c, [], ROOT), ROOT).runs
    ]
    for name in names + RUN_NAMES_OF_SWEEPS:
        assert re.fullmatch(paths.RUN_NAME, name), name
    for bad in ["a/b", "../a", "..", ".hidden", "-a", "", "a b", "sample", "comparison", "sample.x"]:
        assert not re.fullmatch(paths.RUN_NAME, bad), bad
    # as Snakemake uses it, inside a file pattern: a file beside the runs' is no run's
    result = paths.SALIENCY_RESULT.replace("{dataset}", "d").replace("{run}", f"(?P<run>{paths.RUN_NAME})")
    assert re.fullmatch(result, "results/d/saliency/vit-lr0.01.json")["run"] == "vit-lr0.01"
    assert not re.fullmatch(result, paths.fill(paths.SALIENCY_SAMPLE, dataset="d"))
    assert not re.fullmatch(result, "results/d/saliency/a/b.json")


def test_a_run_name_that_is_no_file_name_is_refused_by_the_config_check():
    # a sweep over the user's own model files: the run's name would hold the path
    with pytest.raises(ConfigError, match=r"run name 'own-models/net.py' is not a valid file name"):
        Study.from_config(
            demo_config({"runs": {"own": {"model": "simple_cnn", "sweep": {"model": ["models/net.py"]}}}}),
            ROOT,
        )


def test_planning_calls_the_validation_once_per_run(monkeypatch):
    counts = collections.Counter()

    def counted(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        monkeypatch.setattr(validate, name, wrapper)

    for name in ("raise_first_error", "_check_run_name", "_checked_model", "apply_budget"):
        counted(name, getattr(validate, name))

    def calls(runs: int) -> collections.Counter:
        counts.clear()
        Study.from_config(demo_config(sweep_overlay(runs)), ROOT)
        return collections.Counter(counts)

    base, once, twice = calls(20), calls(40), calls(60)
    for name in counts:
        assert twice[name] - once[name] == once[name] - base[name] > 0, name  # linear in the runs


JOB_RULES = {"features": "train.smk", "train": "train.smk", "evaluate": "train.smk"}
JOB_RULES |= {"lr_find": "lr_finder.smk", "saliency": "saliency.smk"}


@pytest.mark.parametrize("rule", sorted(JOB_RULES))
def test_a_rule_s_params_are_the_study_s_and_its_script_reads_them(rule):
    """Study.rule_params is where a job rule's params come from (its .smk's `params:` and
    benchmarks/gpu_steps.py): the rule takes them there, and its script reads each of them and
    no other (beside the code digests)."""
    study = demo_study()
    text = (ROOT / "workflow" / "rules" / JOB_RULES[rule]).read_text()
    block = text[text.index(f"rule {rule}:") :]
    block = block[block.index("    params:") : block.index("    script:")]
    assert f'**study_params("{rule}")' in block
    script = (ROOT / "scripts" / f"{rule}.py").read_text()
    read = set(re.findall(r"snakemake\.params\.(\w+)", script)) - {"code", "model_code"}
    assert read == set(study.rule_params(rule))
    job = {"dataset": "synthetic", "run": "simple_cnn-sgd", "seed": "0"}
    if rule == "train":
        params = study.job_params(rule, job)
        assert params["run"] == study.run_settings(job)
        assert params["checkpoint"] == paths.fill(paths.CHECKPOINT, **job)
    if rule == "evaluate":
        assert study.job_params(rule, job)["evaluation"] == study.evaluation_settings(job)
