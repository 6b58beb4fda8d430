# Shared by all rules: the validated config, the expanded runs and the target lists.
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from cifarlab.config import (
    ConfigError,
    dataset_name,
    dataset_source,
    in_study_order,
    lr_finder_runs,
    saliency_runs,
    settings_hash,
    uses_cached_features,
    validate_config,
)
from cifarlab.code_version import code_digest, code_digest_of_modules
from cifarlab.models import model_source, model_spec
from cifarlab.sources import archive_name, source_fingerprint

# Validate before any job runs: a bad key stops here with a message that names it. Validation
# also writes the schema's defaults into `config` and caps it by the budget: read it plainly.
try:
    # the Snakefile's configfile (beside it: --directory may be another folder)
    in_study_order(config, Path(workflow.basedir) / "config" / "config.yaml")
    RUNS = validate_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None

DATASET = dataset_name(config)
SOURCE, SOURCE_MD5 = dataset_source(config)
ARCHIVE = archive_name(SOURCE)
# A local folder or archive is known by its content, not its name: when images are added,
# removed or replaced, this changes and `download` (and all that follows) reruns. Per-file
# hashes are cached by size and mtime (benchmarks/README.md: the cost on CIFAR-10).
# Only the main process decides whether `download` (a local rule) reruns: a cluster job that
# parses this file again does not hash the source again.
SOURCE_CONTENT = (
    source_fingerprint(SOURCE, f".snakemake/cifarlab/{DATASET}-content.json")
    if workflow.is_main_process
    else None
)
LR_FINDER_RUNS = lr_finder_runs(config, RUNS)
SALIENCY_RUNS = saliency_runs(config, RUNS)
LR_FINDER_SETTINGS = {k: v for k, v in config["lr_finder"].items() if k != "runs"}
SALIENCY_SETTINGS = {k: v for k, v in config["saliency"].items() if k != "runs"}
DEVICE = config["device"]
PRECISION = config["precision"]

DATA = f"results/data/{DATASET}"
# Code is an input: a rule's `code` param is code_digest of its script (the script and the
# cifarlab modules it imports, by content), so editing that code reruns the rule, and only it
# and what depends on its outputs.
SCRIPTS = Path(workflow.basedir) / "scripts"


# Settings that only `evaluate` reads: changing them re-evaluates, never retrains.
EVALUATION_KEYS = ("tta",)


def model_code(wildcards):
    """The code of a run's model (its spec's constructor module, by content): a job's `model_code`
    param, beside its `code`, so that editing one model family reruns that family's runs only.
    """
    run = RUNS[wildcards.run] if "run" in wildcards.keys() else None
    model = run["model"] if run else backbone_params(wildcards)["model"]
    return code_digest_of_modules([model_spec(model).module])


def run_settings(wildcards):
    """What training a run depends on: its settings less EVALUATION_KEYS (train, lr_find params)."""
    return {k: v for k, v in RUNS[wildcards.run].items() if k not in EVALUATION_KEYS}


def evaluation_settings(wildcards):
    """The settings of a run that only its evaluation reads (the evaluate rule's params)."""
    return {k: RUNS[wildcards.run][k] for k in EVALUATION_KEYS}


def backbone_name(run):
    """The frozen backbone of a cached-features run: its model, plus a hash of its model_args."""
    args = run.get("model_args") or {}
    return run["model"] + (f"+{settings_hash(args)[:8]}" if args else "")


def cached_features_dir(run):
    """The folder of the `features` step's files that a frozen-backbone run trains its head on."""
    weights = "imagenet" if run["pretrained"] else f"random{run['seed']}"
    return (
        f"results/features/{DATASET}/{backbone_name(run)}-{weights}-{run['image_size']}"
    )


# The backbones whose features some run caches: the `features` rule's {backbone} wildcard.
BACKBONES = sorted({backbone_name(r) for r in RUNS.values() if uses_cached_features(r)})


def model_file(run):
    """{"model_file": path} of a run whose model is the user's own file (so editing it reruns), else {}."""
    source = model_source(run["model"])
    return {"model_file": str(source)} if source is not None else {}


def train_inputs(wildcards):
    run = RUNS[wildcards.run]
    inputs = {"train": f"{DATA}/train.pt", "test": f"{DATA}/test.pt", **model_file(run)}
    if uses_cached_features(run):
        folder = cached_features_dir(run)
        inputs.update(
            cached_train=f"{folder}/train.pt", cached_test=f"{folder}/test.pt"
        )
    if run["lr"] == "auto":
        inputs["lr_finder"] = f"results/lr_finder/{wildcards.run}.json"
    return inputs


def evaluate_inputs(wildcards):
    """A head trained on cached features is evaluated on them too (same predictions, cheaper)."""
    run = RUNS[wildcards.run]
    inputs = {
        "model": f"results/runs/{wildcards.run}/model.pt",
        "history": f"results/runs/{wildcards.run}/history.csv",
        "test": f"{DATA}/test.pt",
        **model_file(run),
    }
    if uses_cached_features(run):
        inputs["cached_test"] = f"{cached_features_dir(run)}/test.pt"
    return inputs


def lr_find_inputs(run):
    """A frozen head sweeps on the cached backbone features, as it trains (a backbone pass
    per step would cost hours on a CPU); a user's model file reruns the sweep when edited.
    """
    inputs = model_file(run)
    if uses_cached_features(run):
        inputs["cached_train"] = f"{cached_features_dir(run)}/train.pt"
    return inputs


def lr_finder_params(wildcards):
    """What a run's LR sweep depends on: the run's settings and the finder's own."""
    return {"run": run_settings(wildcards), "finder": LR_FINDER_SETTINGS}


def backbone_params(wildcards):
    """What the `features` step of one backbone folder depends on (its `backbone` param)."""
    folder = f"results/features/{wildcards.dataset}/{wildcards.backbone}-{wildcards.weights}-{wildcards.size}"
    users = [
        r
        for r in RUNS.values()
        if uses_cached_features(r) and cached_features_dir(r) == folder
    ]
    model_args = (users[0].get("model_args") or {}) if users else {}
    return {
        "model": wildcards.backbone.partition("+")[0],
        **({"model_args": model_args} if model_args else {}),
        "pretrained": wildcards.weights == "imagenet",
        "seed": 0 if wildcards.weights == "imagenet" else int(wildcards.weights[6:]),
        "image_size": int(wildcards.size),
        # Only the images these runs use (cifarlab.features.needed_indices): with subsets, a
        # CPU embeds a few thousand images instead of all 60,000.
        "subsets": features_subsets(users),
    }


def features_subsets(users):
    """{"train": [[size, seed], ...] or None (all), "test": [size, ...] or None} of these runs."""
    if not users or any(r["train_subset"] is None for r in users):
        train = None
    else:
        train = sorted({(r["train_subset"], r["seed"]) for r in users})
    if not users or any(r["test_subset"] is None for r in users):
        test = None
    else:
        test = sorted({r["test_subset"] for r in users})
    return {
        "train": None if train is None else [list(t) for t in train],
        "test": test,
    }
