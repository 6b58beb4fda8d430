"""Datasets and seeds as dimensions of a study: the config's `datasets:` and a run's `seeds`,
`datasets` read into one form (cifarlab.data.catalog, cifarlab.config.validate), and the jobs they make."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, planned_counts, planned_jobs

from cifarlab.config.budgets import apply_budget
from cifarlab.config.schema import ConfigError
from cifarlab.config.validate import checked_datasets, job_settings, study_jobs, validate_config
from cifarlab.core import paths
from cifarlab.data.catalog import BUILTIN, dataset_sizes, reference_datasets, source_name
from cifarlab.data.synthetic import CLASSES
from cifarlab.study.status import load_config


@pytest.fixture()
def config() -> dict:
    with open(ROOT / "config" / "config.yaml") as f:
        return yaml.safe_load(f)


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as excinfo:
        validate_config(config)
    return str(excinfo.value)


def test_the_lab_study_is_cifar10_built_in_with_its_published_checksum(config):
    validate_config(config)
    (cifar10,) = checked_datasets(config).values()
    assert cifar10["source"] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar10["md5"] == "c58f30108f718f92721af3b95e74349a"
    assert cifar10["reference"] is True and cifar10["labels"] == "fine" and cifar10["image_size"] == 32
    assert dataset_sizes(cifar10) == {"train": 50_000, "test": 10_000, "classes": 10}


def test_cifar100_by_name_with_fine_or_coarse_labels(config):
    config["datasets"] = [
        "cifar10",
        "cifar100",
        {"name": "cifar100-coarse", "source": "cifar100", "labels": "coarse"},
    ]
    validate_config(config)
    datasets = checked_datasets(config)
    assert list(datasets) == ["cifar10", "cifar100", "cifar100-coarse"]
    assert datasets["cifar100"]["md5"] == BUILTIN["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert datasets["cifar100-coarse"]["source"] == BUILTIN["cifar100"].source
    assert [dataset_sizes(d)["classes"] for d in datasets.values()] == [10, 100, 20]
    # the lab's numbers were measured on CIFAR-10: they apply to it only
    assert reference_datasets(datasets) == ["cifar10"]


@pytest.mark.parametrize(
    ("datasets", "where", "names"),
    [
        (["cifar10", "imagenet"], "datasets[1]", "['cifar10', 'cifar100']"),
        ([{"name": "mine"}], "datasets[0].source", "needs a source"),
        ([{"name": "cifar10", "labels": "coarse"}], "datasets[0].labels", "['fine']"),
        (["cifar10", "cifar10"], "datasets[1].name", "listed twice"),
        ([{"name": "figures", "source": "synthetic"}], "datasets[0].name", "folder of results/"),
    ],
)
def test_a_wrong_dataset_is_a_config_error_naming_what_exists(config, datasets, where, names):
    config["datasets"] = datasets
    message = _error(config)
    assert f"config error at {where}" in message and names in message


def test_one_dataset_mapping_replaces_the_list(config):
    """An overlay (config/demo.yaml) names its one dataset with `dataset:`, as before `datasets:`."""
    config["dataset"] = {"name": "synthetic", "source": "synthetic"}
    validate_config(config)
    (synthetic,) = checked_datasets(config).values()
    assert synthetic["name"] == "synthetic" and synthetic["reference"] is False
    assert synthetic["synthetic"] == {
        "seed": 0,
        "train_per_class": 500,
        "test_per_class": 100,
    }  # the schema's
    assert dataset_sizes(synthetic) == {"train": 5000, "test": 1000, "classes": len(CLASSES)}


def test_data_source_points_a_one_dataset_study_at_other_data(config):
    config["data_source"] = "../shared/datasets/cifar10-jpeg.zip"
    validate_config(config)
    (copy_of_cifar10,) = checked_datasets(config).values()
    # its own name, so the prepared tensors of two sources never overwrite each other; still CIFAR-10
    assert copy_of_cifar10["name"] == "cifar10-jpeg" == source_name("../shared/datasets/cifar10-jpeg.zip")
    assert copy_of_cifar10["md5"] is None and copy_of_cifar10["reference"] is True
    config["datasets"] = ["cifar10", "cifar100"]
    assert "one-dataset study" in _error(config)


def test_each_run_trains_on_its_datasets_with_each_seed(config):
    config["datasets"] = ["cifar10", "cifar100"]
    config["runs"]["vit"]["datasets"] = ["cifar100"]
    config["runs"]["vgg16"]["seeds"] = [7, 9]
    runs = validate_config(config)
    assert runs["simple_cnn-sgd"]["seeds"] == [0, 1, 2]  # config.yaml's seeds: 3 from seed 0
    assert runs["vgg16"]["seeds"] == [7, 9]
    assert runs["vit"]["datasets"] == ["cifar100"] and runs["resnet18"]["datasets"] == ["cifar10", "cifar100"]
    jobs = study_jobs(runs, ["cifar10", "cifar100"])
    assert {"dataset": "cifar10", "run": "vit", "seed": 0} not in jobs
    assert [j for j in jobs if j["run"] == "vgg16"] == [
        {"dataset": d, "run": "vgg16", "seed": s} for d in ("cifar10", "cifar100") for s in (7, 9)
    ]
    assert len(jobs) == 2 * 3 * (len(runs) - 2) + 2 * 2 + 3  # vgg16: 2 seeds, vit: one dataset
    assert paths.fill(paths.METRICS, **jobs[0]) == "results/cifar10/runs/simple_cnn-sgd/seed0/metrics.json"


def test_a_jobs_settings_do_not_change_when_a_seed_or_dataset_is_added(config):
    """A job's params are its settings: adding a seed or a dataset must leave the others' as they were."""
    before = validate_config(copy.deepcopy(config))["simple_cnn-sgd"]
    config["defaults"]["seeds"] = 4
    config["datasets"] = ["cifar10", "cifar100"]
    after = validate_config(config)["simple_cnn-sgd"]
    assert after["seeds"] == [0, 1, 2, 3] and before["seeds"] == [0, 1, 2]
    assert job_settings(after, "cifar10", 1) == job_settings(before, "cifar10", 1)
    settings = job_settings(after, "cifar100", 3)
    assert (settings["seed"], settings["dataset"]) == (3, "cifar100")
    assert "seeds" not in settings and "datasets" not in settings
    assert job_settings(after, "cifar10")["seed"] == 0  # the LR finder and saliency: the first seed


def test_an_unknown_dataset_of_a_run_names_the_studys(config):
    config["runs"]["vit"]["datasets"] = ["cifar100"]
    message = _error(config)
    assert "runs.vit.datasets" in message and "['cifar10']" in message


def test_image_size_null_needs_one_size_among_a_runs_datasets(config):
    config["datasets"] = ["cifar10", {"name": "big", "source": "synthetic", "image_size": 64}]
    message = _error(config)
    assert "runs.simple_cnn.image_size" in message and "'big': 64" in message
    config["defaults"]["image_size"] = 32
    config["runs"]["vgg16"]["image_size"] = 224
    runs = validate_config(config)
    assert runs["simple_cnn-sgd"]["image_size"] == 32


def test_the_budget_caps_seeds_without_recording_them(config):
    """`budget.max_seeds` keeps the first seeds; not under `budget`: no one model's setting changes."""
    config["budget"] = {"max_seeds": 2}
    runs = validate_config(config)
    assert runs["vit"]["seeds"] == [0, 1] and "budget" not in runs["vit"]
    run = apply_budget({**runs["vit"], "seeds": [5, 6, 7]}, validate_config(config) and config["budget"])
    assert run["seeds"] == [5, 6]


@pytest.mark.parametrize("seeds", [0, [], [1, 1], -1, [-1], "3"])
def test_bad_seeds_are_config_errors_naming_what_is_allowed(config, seeds):
    config["defaults"]["seeds"] = seeds
    message = _error(config)
    assert "config error at defaults.seeds" in message
    assert "an integer >= 1, or a list of distinct seeds (integers >= 0)" in message


def test_a_study_without_data_says_how_to_give_it(config):
    del config["datasets"]
    assert "config error at datasets: the study has no data; give datasets:" in _error(config)
    config["datasets"] = [3]
    assert "config error at datasets[0]: got 3; a dataset is a built-in name" in _error(config)


def test_the_budget_cannot_change_which_models_a_run_trains(config):
    """budget.runs shrinks a run; its seeds and datasets are the run's own (or budget.max_seeds)."""
    config["budget"] = {"runs": {"vit": {"seeds": 2}}}
    message = _error(config)
    assert "config error at budget.runs.vit: ['seeds']" in message and "runs.vit" in message


def test_data_source_synthetic_gets_the_generated_sets_sizes(config):
    config["data_source"] = "synthetic"
    validate_config(config)
    (synthetic,) = checked_datasets(config).values()
    assert dataset_sizes(synthetic) == {"train": 5000, "test": 1000, "classes": 10}


def _project(workdir, config: dict | None = None):
    """A copy of the workflow in `workdir`, with `config` as its config/config.yaml if given."""
    for part in ("Snakefile", "workflow", "scripts", "config", "profiles", "environment.yaml"):
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / part)
    if config is not None:
        (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def _dry_run(tmp_path, config: dict, *args: str) -> str:
    """`snakemake -n report` of `config` as the study (the job blocks Snakemake prints)."""
    return _snakemake(_project(tmp_path, config), "-n", "report", *args)


def test_the_cifar100_example_plans_the_lab_study_on_both_datasets(tmp_path, config):
    plan = _dry_run(tmp_path, config, "--configfile", "config/cifar100.yaml", "--quiet", "rules")
    counts = planned_counts(plan)
    assert counts["download"] == counts["prepare"] == 2
    assert counts["train"] == 2 * 3 * 15  # both datasets, 3 seeds, the 15 runs


def test_resources_are_sized_from_each_datasets_images(tmp_path, config):
    """A small dataset's jobs ask for less time than CIFAR-10's: sizes come from each source."""
    config["datasets"] = [
        "cifar10",
        {"name": "tiny", "source": "synthetic", "synthetic": {"train_per_class": 10, "test_per_class": 2}},
    ]
    runtime = {
        job["wildcards"]["dataset"]: int(job["resources"]["runtime"])
        for job in planned_jobs(_dry_run(tmp_path, config))
        if job["rule"] == "train" and job["wildcards"]["run"] == "vit" and job["wildcards"]["seed"] == "0"
    }
    # the ViT's 20 epochs: hours on CIFAR-10's 60,000 images, the 10-minute floor on 120
    assert runtime["tiny"] == 10 and runtime["cifar10"] > 60, runtime


def _finish_without_running(workdir, *args: str) -> None:
    """Mark the whole `report` DAG of the study in `workdir` done without running it: every output
    and benchmark file of the plan created empty, then `snakemake --touch` records them."""
    plan = planned_jobs(_snakemake(workdir, "-n", "report", *args))
    assert plan
    done = _snakemake(workdir, "-n", "report", "--printshellcmds", *args)
    for line in done.splitlines():
        key, _, files = line.strip().partition(": ")
        for name in files.split(", ") if key in ("output", "benchmark") else []:
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / name).touch()
    _snakemake(workdir, "--touch", "--forceall", "report", *args)


def _snakemake(workdir, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_adding_a_seed_to_the_quick_study_plans_that_seeds_jobs_only(tmp_path, config):
    """The whole quick study (every step: cached ImageNet features on a subset, the LR finder,
    saliency), finished, then a second seed: only seed 1's jobs are planned, no other's again."""
    _project(tmp_path)
    # quick.yaml's budget on generated data, with ImageNet weights (planned, never loaded here)
    (tmp_path / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": "shapes", "source": "synthetic"},
                # subsets, as quick.yaml's caps were before its time budget: resnet18's frozen
                # ImageNet backbone then embeds one seed's subset (features per seed)
                "budget": {"max_train_images": 10000, "max_test_images": 2000},
            }
        )
    )
    # its sizes as the overlay sets them (no time budget: a plan is per machine; seeds are the point)
    study = (
        "--configfile",
        "config/quick.yaml",
        "data.yaml",
        "--config",
        "pretrained=true",
        "time_budget=null",
    )
    _finish_without_running(tmp_path, *study)
    assert "Nothing to be done" in _snakemake(tmp_path, "-n", "report", *study)
    (tmp_path / "seeds.yaml").write_text(yaml.safe_dump({"defaults": {"seeds": 2}}))
    more = (
        "--configfile",
        "config/quick.yaml",
        "data.yaml",
        "seeds.yaml",
        "--config",
        "pretrained=true",
        "time_budget=null",
    )
    jobs = planned_jobs(_snakemake(tmp_path, "-n", "report", *more))
    rules = {job["rule"] for job in jobs}
    assert {"train", "evaluate", "features", "report"} <= rules, rules
    assert not rules & {"download", "prepare", "lr_find", "saliency", "saliency_sample"}, rules
    for job in jobs:
        wildcards = job["wildcards"]
        assert wildcards.get("seed", "1") == "1", job
        if job["rule"] == "features":  # resnet18's frozen ImageNet backbone on seed 1's subset
            assert wildcards["weights"] == "imagenet1", job
    trained = [job["wildcards"]["run"] for job in jobs if job["rule"] == "train"]
    runs = validate_config(load_config(["config/quick.yaml"], [], ROOT))
    # the runs of one seed before (the simple CNN's sweep has 3 of its own)
    assert sorted(trained) == sorted(name for name, run in runs.items() if run["seeds"] == [0])
