# Shared by all rules: the validated config, the study's datasets, runs and seeds, and the inputs
# and params each job depends on. Every path is a pattern of cifarlab.core.paths: a trained model is
# one (dataset, run, seed), the {dataset}, {run} and {seed} wildcards.
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from cifarlab.core import paths
from cifarlab.config.schema import ConfigError
from cifarlab.config.validate import (
    apply_command_line_overrides,
    checked_datasets,
    dataset_runs,
    in_study_order,
    job_settings,
    lr_finder_runs,
    saliency_runs,
    study_jobs,
    uses_cached_features,
    validate_config,
)
from cifarlab.core.hashing import settings_hash
from cifarlab.core.code_version import code_digest, code_digest_of_modules
from cifarlab.models import model_source, model_spec
from cifarlab.data.sources import (
    archive_name,
    file_digests,
    local_path,
    source_fingerprint,
)

# Validate before any job runs: a bad key stops here with a message that names it. Validation
# also writes the schema's defaults into `config` and caps it by the budget: read it plainly.
try:
    # --config values typed as YAML types them (Snakemake leaves those inside {...} text)
    apply_command_line_overrides(config, workflow.config_settings.config)
    # the Snakefile's configfile (beside it: --directory may be another folder)
    in_study_order(config, Path(workflow.basedir) / "config" / "config.yaml")
    RUNS = validate_config(config)
    # name -> settings (source, md5, labels, image_size, ...: cifarlab.data.catalog), study order
    DATASETS = checked_datasets(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# Every trained model: {"dataset", "run", "seed"}, dataset by dataset, runs in config order.
JOBS = study_jobs(RUNS, list(DATASETS))
ARCHIVES = {name: archive_name(d["source"]) for name, d in DATASETS.items()}
# A local folder or archive is known by its content, not its name: when images are added,
# removed or replaced, this changes and `download` (and all that follows) reruns. Per-file
# hashes are cached by size and mtime (benchmarks/README.md: the cost on CIFAR-10).
# Only the main process decides whether `download` (a local rule) reruns: a cluster job that
# parses this file again does not hash the source again.
SOURCE_CONTENT = {
    name: (
        source_fingerprint(d["source"], paths.fill(paths.CONTENT_CACHE, dataset=name))
        if workflow.is_main_process
        else None
    )
    for name, d in DATASETS.items()
}


def source_url(dataset):
    """A dataset's source where it is not known by its content (a URL, `synthetic`), else None:
    a local archive or folder is its SOURCE_CONTENT, wherever it lies (the `download` params).
    """
    source = DATASETS[dataset]["source"]
    return source if source == "synthetic" or local_path(source) is None else None


def config_without_paths(config):
    """The config less the paths of local data (`data_source`, a dataset's `source`): the page's
    `datasets` param knows that data by its content, so the same bytes elsewhere rerun nothing.
    """

    def local(source):
        return (
            isinstance(source, str)
            and source != "synthetic"
            and local_path(source) is not None
        )

    def entry(item):
        if isinstance(item, dict) and local(item.get("source")):
            return {k: v for k, v in item.items() if k != "source"}
        return item

    less = {k: v for k, v in config.items() if not (k == "data_source" and local(v))}
    if isinstance(less.get("datasets"), list):
        less["datasets"] = [entry(item) for item in less["datasets"]]
    if "dataset" in less:
        less["dataset"] = entry(less["dataset"])
    return less


def file_content(path):
    """sha256 of a file that no job writes (a user's model, a caption, a compared table), a
    param beside the input, since the profile's rerun triggers leave out mtime (a touch or a
    copy reruns nothing; an edit reruns what reads it)."""
    if path not in _CONTENT:
        _CONTENT[path] = file_digests(path)["sha256"] if Path(path).is_file() else None
    return _CONTENT[path]


_CONTENT = {}
LR_FINDER_RUNS = lr_finder_runs(config, RUNS)
SALIENCY_RUNS = saliency_runs(config, RUNS)
LR_FINDER_SETTINGS = {k: v for k, v in config["lr_finder"].items() if k != "runs"}
SALIENCY_SETTINGS = {k: v for k, v in config["saliency"].items() if k != "runs"}
DEVICE = config["device"]
PRECISION = config["precision"]

# Code is an input: a rule's `code` param is code_digest of its script (the script and the
# cifarlab modules it imports, by content), so editing that code reruns the rule, and only it
# and what depends on its outputs.
SCRIPTS = Path(workflow.basedir) / "scripts"


# Settings that only `evaluate` reads: changing them re-evaluates, never retrains.
EVALUATION_KEYS = ("tta",)


def per_run(names):
    """{"dataset", "run"} of each (dataset, run) of the study among the runs `names`."""
    return [
        {"dataset": dataset, "run": name}
        for dataset in DATASETS
        for name in dataset_runs(RUNS, dataset, names)
    ]


def data_file(split):
    """A job's prepared split of its {dataset} (an input function)."""
    return lambda wildcards: paths.fill(
        paths.PREPARED, dataset=wildcards.dataset, split=split
    )


def archive_file(dataset):
    """The fetched archive of a dataset (its name is its source's)."""
    return paths.fill(paths.ARCHIVE, dataset=dataset, archive=ARCHIVES[dataset])


def first_seed_model(wildcards):
    """The model that a run's saliency maps explain: its first seed's."""
    return paths.fill(
        paths.MODEL,
        dataset=wildcards.dataset,
        run=wildcards.run,
        seed=RUNS[wildcards.run]["seeds"][0],
    )


def job(wildcards):
    """The settings of one job: its run's, with its {dataset} and {seed} (the run's first seed
    for the per-run LR finder and saliency jobs): job_settings."""
    seed = int(wildcards.seed) if "seed" in wildcards.keys() else None
    return job_settings(RUNS[wildcards.run], wildcards.dataset, seed)


def model_code(wildcards):
    """The code of a run's model (its spec's constructor module, by content): a job's `model_code`
    param, beside its `code`, so that editing one model family reruns that family's runs only.
    """
    run = RUNS[wildcards.run] if "run" in wildcards.keys() else None
    model = run["model"] if run else backbone_params(wildcards)["model"]
    source = model_source(model)  # a user's own model file: its content too
    code = code_digest_of_modules([model_spec(model).module])
    return code if source is None else [code, file_content(str(source))]


def run_settings(wildcards):
    """What training a job depends on: its settings less EVALUATION_KEYS (train, lr_find params)."""
    return {k: v for k, v in job(wildcards).items() if k not in EVALUATION_KEYS}


def evaluation_settings(wildcards):
    """The settings of a run that only its evaluation reads (the evaluate rule's params)."""
    return {k: RUNS[wildcards.run][k] for k in EVALUATION_KEYS}


def backbone_name(run):
    """The frozen backbone of a cached-features run: its model, plus a hash of its model_args."""
    args = run.get("model_args") or {}
    return run["model"] + (f"+{settings_hash(args)[:8]}" if args else "")


def features_wildcards(settings):
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


def cached_feature_jobs():
    """The settings of every job (train, and the per-run LR finder) that trains on cached features."""
    jobs = [job_settings(RUNS[j["run"]], j["dataset"], j["seed"]) for j in JOBS]
    jobs += [
        job_settings(RUNS[j["run"]], j["dataset"]) for j in per_run(LR_FINDER_RUNS)
    ]
    return [settings for settings in jobs if uses_cached_features(settings)]


CACHED_FEATURE_JOBS = cached_feature_jobs()
# The backbones whose features some run caches: the `features` rule's {backbone} wildcard.
BACKBONES = sorted({backbone_name(s) for s in CACHED_FEATURE_JOBS})


def model_file(run):
    """{"model_file": path} of a run whose model is the user's own file (so editing it reruns), else {}."""
    source = model_source(run["model"])
    return {"model_file": str(source)} if source is not None else {}


def train_inputs(wildcards):
    settings = job(wildcards)
    inputs = {
        "train": data_file("train")(wildcards),
        "test": data_file("test")(wildcards),
        **model_file(settings),
    }
    if uses_cached_features(settings):
        features = features_wildcards(settings)
        inputs.update(
            cached_train=paths.fill(paths.FEATURES_TRAIN, **features),
            cached_test=paths.fill(paths.FEATURES_TEST, **features),
        )
    if settings["lr"] == "auto":
        inputs["lr_finder"] = paths.fill(paths.LR_FINDER, **dict(wildcards.items()))
    return inputs


def evaluate_inputs(wildcards):
    """A head trained on cached features is evaluated on them too (same predictions, cheaper)."""
    settings = job(wildcards)
    inputs = {
        "model": paths.fill(paths.MODEL, **dict(wildcards.items())),
        "history": paths.fill(paths.HISTORY, **dict(wildcards.items())),
        "test": data_file("test")(wildcards),
        **model_file(settings),
    }
    if uses_cached_features(settings):
        inputs["cached_test"] = paths.fill(
            paths.FEATURES_TEST, **features_wildcards(settings)
        )
    return inputs


def lr_find_inputs(wildcards):
    """A frozen head sweeps on the cached backbone features, as it trains (a backbone pass
    per step would cost hours on a CPU); a user's model file reruns the sweep when edited.
    """
    settings = job(wildcards)
    inputs = {"train": data_file("train")(wildcards), **model_file(settings)}
    if uses_cached_features(settings):
        inputs["cached_train"] = paths.fill(
            paths.FEATURES_TRAIN, **features_wildcards(settings)
        )
    return inputs


def lr_finder_params(wildcards):
    """What a run's LR sweep depends on: the run's settings (first seed) and the finder's own."""
    return {"run": run_settings(wildcards), "finder": LR_FINDER_SETTINGS}


def backbone_params(wildcards):
    """What the `features` step of one backbone folder depends on (its `backbone` param)."""
    features = {k: str(v) for k, v in wildcards.items()}
    users = [
        s
        for s in CACHED_FEATURE_JOBS
        if {k: str(v) for k, v in features_wildcards(s).items()} == features
    ]
    model_args = (users[0].get("model_args") or {}) if users else {}
    return {
        "model": wildcards.backbone.partition("+")[0],
        **({"model_args": model_args} if model_args else {}),
        "pretrained": wildcards.weights.startswith("imagenet"),
        # the seed of a random backbone's weights, or of an ImageNet one's subset (0: all images)
        "seed": int(
            wildcards.weights.removeprefix("imagenet").removeprefix("random") or 0
        ),
        "image_size": int(wildcards.size),
        # Only the images these runs use (cifarlab.training.features.needed_indices): with subsets, a
        # CPU embeds a few thousand images instead of all 60,000.
        "subsets": features_subsets(users),
    }


def features_subsets(users):
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
    return {
        "train": None if train is None else [list(t) for t in train],
        "test": test,
    }
