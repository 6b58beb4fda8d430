"""The study's plan, built once: its datasets, runs, seeds, jobs and each rule's inputs.

`Study.from_config(config)` validates the config (writing the schema's defaults into it) and
derives everything the workflow, `python -m cifarlab status`, the cost estimate and the report
need to know about what the study trains: a trained model is one (dataset, run, seed), the LR
finder and saliency are per (dataset, run) with the run's first seed, and a frozen backbone's
features are one `features` job per (dataset, backbone, weights, image size). The .smk files
adapt Snakemake's wildcards to these methods and nothing else, so there is one place per thing.

Wildcards come as Snakemake gives them: a mapping of strings ({"dataset", "run", "seed"}).
No torch here: the workflow layer imports this.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlab.config.schema import ConfigError
from cifarlab.config.validate import (
    checked_datasets,
    dataset_runs,
    job_settings,
    lr_finder_runs,
    saliency_runs,
    study_jobs,
    uses_cached_features,
    validate_config,
)
from cifarlab.core import paths
from cifarlab.core.hashing import settings_hash
from cifarlab.data.catalog import dataset_sizes
from cifarlab.data.sources import archive_name, file_digests, local_path
from cifarlab.models import model_source

# the torch-free table of figures (it imports cifarlab.core.paths only): the layers contract lets
# this one module read it, so that the figures each study draws are planned here too
from cifarlab.plots.figures import FIGURES, Figure, figure_files, figure_runs
from cifarlab.study import estimate

# Above this many trained models (datasets x runs x seeds) a study is planned only when the config
# says `confirm_large_study: true`: Snakemake plans about 1,000 runs a minute here (benchmarks/README.md).
LARGE_STUDY_MODELS = 1000

# Settings that only `evaluate` reads: changing them re-evaluates, never retrains.
EVALUATION_KEYS = ("tta", "time_budget")


@dataclass(frozen=True)
class Study:
    """One study's plan. Built by `from_config`; every list is in the study's order (dataset by
    dataset, runs in config order, each run's seeds).

    config: the validated config (defaults written in); datasets: name -> settings
    (cifarlab.data.catalog); runs: expanded run name -> settings (with `datasets`, `seeds`);
    jobs: every trained model as wildcards {"dataset", "run", "seed"}; lr_finder_runs /
    saliency_runs: run names; lr_finder_pairs / saliency_pairs: their (dataset, run) wildcards;
    archives: dataset -> archive file name; cached_feature_jobs: the job settings (train, and
    the per-run LR finder) that train on cached features; backbones: their backbone names;
    figure_runs: figure name -> dataset -> the runs that figure shows.
    """

    config: dict
    datasets: dict[str, dict]
    runs: dict[str, dict]
    jobs: list[dict]
    lr_finder_runs: list[str]
    saliency_runs: list[str]
    lr_finder_pairs: list[dict]
    saliency_pairs: list[dict]
    archives: dict[str, str]
    cached_feature_jobs: list[dict]
    backbones: list[str]
    figure_runs: dict[str, dict[str, list[str]]]

    @classmethod
    def from_config(
        cls, config: dict, root: str | Path = ".", time_caps: dict | None = None, *, checked: bool = False
    ) -> Study:
        """Validate `config` (in place: defaults written in, capped by the budget) and plan it;
        raise cifarlab.config.schema.ConfigError naming the bad key. root: the project folder.
        time_caps: a time plan's caps (cifarlab.study.time_plan.plan_study chooses them).
        checked: `config` already passed cifarlab.config.validate.check_config (not checked again)."""
        runs = validate_config(config, root, time_caps, checked=checked)
        datasets = checked_datasets(config)
        lr_runs, sal_runs = lr_finder_runs(config, runs), saliency_runs(config, runs)

        def per_run(names: list[str]) -> list[dict]:
            return [{"dataset": d, "run": n} for d in datasets for n in dataset_runs(runs, d, names)]

        jobs = study_jobs(runs, list(datasets))
        lr_pairs = per_run(lr_runs)
        settings = [job_settings(runs[j["run"]], j["dataset"], j["seed"]) for j in jobs]
        settings += [job_settings(runs[j["run"]], j["dataset"]) for j in lr_pairs]
        cached = [s for s in settings if uses_cached_features(s)]
        run_sets = {"all": list(runs), "lr_finder": lr_runs, "saliency": sal_runs}
        study = cls(
            config=config,
            datasets=datasets,
            runs=runs,
            jobs=jobs,
            lr_finder_runs=lr_runs,
            saliency_runs=sal_runs,
            lr_finder_pairs=lr_pairs,
            saliency_pairs=per_run(sal_runs),
            archives={name: archive_name(d["source"]) for name, d in datasets.items()},
            cached_feature_jobs=cached,
            backbones=sorted({backbone_name(s) for s in cached}),
            figure_runs={f.name: {d: figure_runs(f, runs, run_sets, d) for d in datasets} for f in FIGURES},
        )
        study.check_size(root)
        return study

    def check_size(self, root: str | Path = ".") -> None:
        """Raise ConfigError for a study above LARGE_STUDY_MODELS trained models that the config
        does not confirm (`confirm_large_study`), saying how many jobs and hours it would be."""
        if len(self.jobs) <= LARGE_STUDY_MODELS or self.config.get("confirm_large_study"):
            return
        seconds = sum(estimate.JOB_START_SECONDS + s for s in self.train_seconds(root))
        raise ConfigError(
            f"config error at confirm_large_study: this study trains {len(self.jobs):,} models (datasets x "
            f"runs x seeds; more than {LARGE_STUDY_MODELS:,}): {self.job_count():,} jobs, about "
            f"{seconds / 3600:,.0f} h of training one after another on device {self.config['device']!r} (the "
            "cost model's estimate, cifarlab.study.estimate, before any calibration). If that is the study "
            "you mean, confirm it: --config confirm_large_study=true (or `confirm_large_study: true` in the "
            "config file); else look for a sweep list or `seeds` larger than meant."
        )

    def job_count(self) -> int:
        """The jobs Snakemake plans for the whole study (target `all`, nothing done yet)."""
        features = {tuple(sorted(features_wildcards(s).items())) for s in self.cached_feature_jobs}
        samples = {pair["dataset"] for pair in self.saliency_pairs}  # saliency_sample: one per dataset
        figures = sum(len(self.figure_files(f)) for f in self.page_figures())
        per_dataset = 2 * len(self.datasets)  # download, prepare
        heavy = 2 * len(self.jobs) + len(self.lr_finder_pairs) + len(self.saliency_pairs) + len(features)
        return per_dataset + len(samples) + heavy + figures + 2  # report, all

    def train_seconds(self, root: str | Path = ".") -> list[float]:
        """Seconds of work of each training job of `jobs` (start-up not included), by the cost
        model (cifarlab.study.estimate; uncalibrated). root: the project, whose size caches it reads."""
        on_gpu = estimate.on_gpu(self.config["device"])
        sizes = {
            name: dataset_sizes(settings, cache=str(Path(root) / paths.fill(paths.SIZES_CACHE, dataset=name)))
            for name, settings in self.datasets.items()
        }
        return [estimate.train_seconds(sizes[j["dataset"]], self.job(j), on_gpu=on_gpu) for j in self.jobs]

    # --- one job's settings --------------------------------------------------------------------

    def seeds(self, dataset: str, run: str) -> list[int]:
        """The seeds of `run` on `dataset` (none where the run does not train on it)."""
        return list(self.runs[run]["seeds"]) if dataset in self.runs[run]["datasets"] else []

    def job(self, wildcards: Mapping[str, str]) -> dict:
        """The settings of one job: its run's, with its {dataset} and {seed} (the run's first seed
        for the per-run LR finder and saliency jobs): job_settings."""
        seed = int(wildcards["seed"]) if "seed" in wildcards else None
        return job_settings(self.runs[wildcards["run"]], wildcards["dataset"], seed)

    def run_settings(self, wildcards: Mapping[str, str]) -> dict:
        """What training a job depends on: its settings less EVALUATION_KEYS (train, lr_find params)."""
        return {k: v for k, v in self.job(wildcards).items() if k not in EVALUATION_KEYS}

    def evaluation_settings(self, wildcards: Mapping[str, str]) -> dict:
        """The settings of a run that only its evaluation reads (the evaluate rule's params)."""
        run = self.runs[wildcards["run"]]
        return {k: run[k] for k in EVALUATION_KEYS if k in run}  # time_budget: only where it cut

    def lr_suggestion(self, wildcards: Mapping[str, str]) -> str | None:
        """The LR finder's suggestion method for an `lr: auto` run, else None: a new suggestion
        must not retrain the others (the train rule's param)."""
        auto = self.runs[wildcards["run"]]["lr"] == "auto"
        return self.config["lr_finder"]["suggestion"] if auto else None

    def lr_finder_params(self, wildcards: Mapping[str, str]) -> dict:
        """What a run's LR sweep depends on: the run's settings (first seed) and the finder's own."""
        finder = {k: v for k, v in self.config["lr_finder"].items() if k != "runs"}
        return {"run": self.run_settings(wildcards), "finder": finder}

    def saliency_settings(self) -> dict:
        """The saliency step's own settings (its `runs` list chooses jobs, it is no setting)."""
        return {k: v for k, v in self.config["saliency"].items() if k != "runs"}

    def checkpoint(self, wildcards: Mapping[str, str]) -> str:
        """A train job's checkpoint: outside the declared outputs, so that a killed job resumes from it."""
        return paths.fill(paths.CHECKPOINT, **wildcards)

    def rule_params(self, rule: str) -> dict[str, Any]:
        """The params of a job rule ("features", "train", "evaluate", "lr_find", "saliency") that
        the study decides, by name: a value, or a method of the job's wildcards. The rules'
        `params:` (workflow/rules/*.smk, beside their `code` and `model_code`) and
        benchmarks/gpu_steps.py (the steps without Snakemake: job_params) both take them here.
        A param is a rerun trigger: each says what its step depends on, and no more."""
        device = {"device": self.config["device"]}
        precision = {"precision": self.config["precision"]}
        params: dict[str, dict[str, Any]] = {
            "features": {"backbone": self.backbone_params, **device, **precision},
            "train": {
                "run": self.run_settings,
                **device,
                **precision,
                # only `lr: auto` runs depend on it: a new finder suggestion must not retrain the others
                "lr_suggestion": self.lr_suggestion,
                "checkpoint": self.checkpoint,
            },
            "evaluate": {**device, **precision, "evaluation": self.evaluation_settings},
            "lr_find": {"settings": self.lr_finder_params, **device, **precision},
            "saliency": {"settings": self.saliency_settings(), **device},
        }
        return params[rule]

    def job_params(self, rule: str, wildcards: Mapping[str, str]) -> dict[str, Any]:
        """rule_params of one job of `rule`: each method called with its wildcards."""
        return {k: v(wildcards) if callable(v) else v for k, v in self.rule_params(rule).items()}

    # --- each rule's inputs ----------------------------------------------------------------------

    def archive_file(self, dataset: str) -> str:
        """The fetched archive of a dataset (its name is its source's)."""
        return paths.fill(paths.ARCHIVE, dataset=dataset, archive=self.archives[dataset])

    def source_record(self, dataset: str) -> str:
        """The download record of a dataset's archive."""
        return paths.fill(paths.SOURCE_RECORD, dataset=dataset, archive=self.archives[dataset])

    def source_url(self, dataset: str) -> str | None:
        """A dataset's source where it is not known by its content (a URL, `synthetic`), else None:
        a local archive or folder is known by its content, wherever it lies (the `download` params)."""
        source = self.datasets[dataset]["source"]
        return source if source == "synthetic" or local_path(source) is None else None

    def train_inputs(self, wildcards: Mapping[str, str]) -> dict[str, str]:
        """The prepared data, a user's model file, cached features and the LR sweep (`lr: auto`)."""
        settings = self.job(wildcards)
        inputs = _data_inputs(wildcards, "train", "test") | model_file(settings)
        if uses_cached_features(settings):
            features = features_wildcards(settings)
            inputs["cached_train"] = paths.fill(paths.FEATURES_TRAIN, **features)
            inputs["cached_test"] = paths.fill(paths.FEATURES_TEST, **features)
        if settings["lr"] == "auto":
            inputs["lr_finder"] = paths.fill(paths.LR_FINDER, **wildcards)
        return inputs

    def evaluate_inputs(self, wildcards: Mapping[str, str]) -> dict[str, str]:
        """A head trained on cached features is evaluated on them too (same predictions, cheaper)."""
        settings = self.job(wildcards)
        inputs = {
            "model": paths.fill(paths.MODEL, **wildcards),
            "history": paths.fill(paths.HISTORY, **wildcards),
            **_data_inputs(wildcards, "test"),
            **model_file(settings),
        }
        if uses_cached_features(settings):
            inputs["cached_test"] = paths.fill(paths.FEATURES_TEST, **features_wildcards(settings))
        return inputs

    def lr_find_inputs(self, wildcards: Mapping[str, str]) -> dict[str, str]:
        """A frozen head sweeps on the cached backbone features, as it trains (a backbone pass
        per step would cost hours on a CPU); a user's model file reruns the sweep when edited."""
        settings = self.job(wildcards)
        inputs = _data_inputs(wildcards, "train") | model_file(settings)
        if uses_cached_features(settings):
            inputs["cached_train"] = paths.fill(paths.FEATURES_TRAIN, **features_wildcards(settings))
        return inputs

    def saliency_inputs(self, wildcards: Mapping[str, str]) -> dict[str, str]:
        """The model of the run's first seed that the maps explain, the test images and sample."""
        run = self.runs[wildcards["run"]]
        return {
            **model_file(run),
            "model": paths.fill(paths.MODEL, **wildcards, seed=run["seeds"][0]),
            **_data_inputs(wildcards, "test"),
            "sample": paths.fill(paths.SALIENCY_SAMPLE, **wildcards),
        }

    def backbone_params(self, wildcards: Mapping[str, str]) -> dict:
        """What the `features` step of one backbone folder ({dataset}, {backbone}, {weights},
        {size}) depends on (its `backbone` param)."""
        features = {k: str(v) for k, v in wildcards.items()}
        users = [
            s
            for s in self.cached_feature_jobs
            if {k: str(v) for k, v in features_wildcards(s).items()} == features
        ]
        model_args = (users[0].get("model_args") or {}) if users else {}
        weights = wildcards["weights"]
        return {
            "model": wildcards["backbone"].partition("+")[0],
            **({"model_args": model_args} if model_args else {}),
            "pretrained": weights.startswith("imagenet"),
            # the seed of a random backbone's weights, or of an ImageNet one's subset (0: all images)
            "seed": int(weights.removeprefix("imagenet").removeprefix("random") or 0),
            "image_size": int(wildcards["size"]),
            # Only the images these runs use (cifarlab.training.features.needed_indices): with
            # subsets, a CPU embeds a few thousand images instead of all 60,000.
            "subsets": features_subsets(users),
        }

    # --- the report's inputs ---------------------------------------------------------------------

    def benchmarks(self) -> list[str]:
        """Snakemake's benchmark TSVs of every heavy job of the study: the page's compute time."""
        features = [features_wildcards(s) for s in self.cached_feature_jobs]
        files = [paths.fill(paths.PREPARE_BENCHMARK, dataset=d) for d in self.datasets]
        files += paths.fill_each(paths.TRAIN_BENCHMARK, self.jobs)
        files += paths.fill_each(paths.LR_FIND_BENCHMARK, self.lr_finder_pairs)
        files += paths.fill_each(paths.SALIENCY_BENCHMARK, self.saliency_pairs)
        files += paths.fill_each(paths.FEATURES_BENCHMARK, features)
        return list(dict.fromkeys(files))

    def page_figures(self) -> list[Figure]:
        """The figures that have runs on some dataset of this study (a sweep figure only where
        the study has that sweep), in the order of the table of figures."""
        return [f for f in FIGURES if any(self.figure_runs[f.name].values())]

    def figure_files(self, figure: Figure) -> list[str]:
        """Every file of `figure` this study draws, dataset by dataset."""
        shown = self.figure_runs[figure.name]
        return [
            path for d, names in shown.items() if names for path in figure_files(figure, self.runs, names, d)
        ]

    def report_inputs(self) -> dict[str, str | list[str]]:
        """The report rule's inputs by name (scripts/report.py reads them): per-dataset lists are
        in the study's dataset order."""
        report = self.config["report"]
        figures = self.page_figures()
        compare_to = report["compare_to"]
        return {
            "metrics": paths.fill_each(paths.METRICS, self.jobs),
            "lr_finder": paths.fill_each(paths.LR_FINDER, self.lr_finder_pairs),
            "saliency": paths.fill_each(paths.SALIENCY_RESULT, self.saliency_pairs),
            "data_records": [self.source_record(d) for d in self.datasets],
            "data_train": [paths.fill(paths.TRAIN_DATA, dataset=d) for d in self.datasets],
            "data_test": [paths.fill(paths.TEST_DATA, dataset=d) for d in self.datasets],
            "samples": [paths.fill(paths.SAMPLES, dataset=d) for d in self.datasets],
            "benchmarks": self.benchmarks(),
            **{f"figure_{f.name}": self.figure_files(f) for f in figures},
            **{f"caption_{f.name}": f.caption for f in figures if not f.per_run},
            # a compared metrics.csv is an input (its change rebuilds the page); a folder is read as is
            **({"compare_to": compare_to} if compare_to and Path(compare_to).is_file() else {}),
            **({"reference": report["reference"]} if report["reference"] else {}),
        }


# --- helpers, by settings alone ------------------------------------------------------------------


def _data_inputs(wildcards: Mapping[str, str], *splits: str) -> dict[str, str]:
    """{split: the prepared split of the job's {dataset}} for each of `splits`."""
    return {s: paths.fill(paths.PREPARED, dataset=wildcards["dataset"], split=s) for s in splits}


def model_file(run: dict) -> dict[str, str]:
    """{"model_file": path} of a run whose model is the user's own file (so editing it reruns), else {}."""
    source = model_source(run["model"])
    return {"model_file": str(source)} if source is not None else {}


def backbone_name(run: dict) -> str:
    """The frozen backbone of a cached-features run: its model, plus a hash of its model_args."""
    args = run.get("model_args") or {}
    return run["model"] + (f"+{settings_hash(args)[:8]}" if args else "")


def features_wildcards(settings: dict) -> dict[str, Any]:
    """The `features` job that a frozen-backbone job (its settings, with its dataset and seed)
    trains its head on, as wildcards. A random backbone is one per seed (`random<seed>`); an
    ImageNet one is shared by the seeds that train on all images (`imagenet`), and one per seed
    for a subset (`imagenet<seed>`: the subset is the seed's), so that adding a seed (to the runs
    that share a backbone) adds a features job and changes none of the others."""
    if not settings["pretrained"]:
        weights = f"random{settings['seed']}"
    elif settings["train_subset"] is None:
        weights = "imagenet"
    else:
        weights = f"imagenet{settings['seed']}"
    return {
        "dataset": settings["dataset"],
        "backbone": backbone_name(settings),
        "weights": weights,
        "size": settings["image_size"],
    }


def features_subsets(users: list[dict]) -> dict[str, list | None]:
    """{"train": [[size, seed, validation], ...] or None (all), "test": [size, ...] or None} of
    these jobs: the images they train on and hold out (cifarlab.training.features.needed_indices).
    """
    if not users or any(r["train_subset"] is None for r in users):
        train = None
    else:
        train = sorted({(r["train_subset"], r["seed"], r["validation"]) for r in users})
    if not users or any(r["test_subset"] is None for r in users):
        test = None
    else:
        test = sorted({r["test_subset"] for r in users})
    return {"train": None if train is None else [list(t) for t in train], "test": test}


# Config keys that cannot change a result: the live curves' switch (read by scripts/train.py) and
# the confirmation of a large study. Left out of the study's identity (the report's config hash),
# so that switching them reruns nothing, not even the report.
NOT_THE_STUDY = ("tensorboard", "confirm_large_study")


def config_identity(config: dict) -> dict:
    """The config that identifies the study (the report's `config_hash`): less the paths of local
    data (`data_source`, a dataset's `source`), which the page's `datasets` param knows by content
    (the same bytes elsewhere rerun nothing), and less NOT_THE_STUDY (confirming a large study
    changes none of its results).
    """

    def local(source: Any) -> bool:
        return isinstance(source, str) and source != "synthetic" and local_path(source) is not None

    def entry(item: Any) -> Any:
        if isinstance(item, dict) and local(item.get("source")):
            return {k: v for k, v in item.items() if k != "source"}
        return item

    less = {
        k: v for k, v in config.items() if not (k == "data_source" and local(v)) and k not in NOT_THE_STUDY
    }
    if isinstance(less.get("datasets"), list):
        less["datasets"] = [entry(item) for item in less["datasets"]]
    if "dataset" in less:
        less["dataset"] = entry(less["dataset"])
    return less


@functools.cache
def file_content(path: str) -> str | None:
    """sha256 of a file that no job writes (a user's model, a caption, a compared table), a
    param beside the input, since the profile's rerun triggers leave out mtime (a touch or a
    copy reruns nothing; an edit reruns what reads it). None: no such file. Read once a process."""
    return file_digests(path)["sha256"] if Path(path).is_file() else None
