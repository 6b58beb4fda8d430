"""Where every step's files live: one pattern per kind of file, the study's dimensions as wildcards.

A study has three dimensions: its datasets (`{dataset}`), its runs (`{run}`, one trained model's
settings) and each run's seeds (`{seed}`, an integer). A trained model is one (dataset, run, seed):
its files are under `RUN`. The LR finder and saliency maps are per (dataset, run), made with the
run's first seed. The rules (workflow/rules/*.smk), the figure table (cifarlab.plots.figures), the status
command and the tests all read the patterns here, so a path is written once.

No torch here: the .smk files import this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Prepared data of one dataset (cifarlab.data.prepare) and its fetched source.
DATA = "results/data/{dataset}"
PREPARED = DATA + "/{split}.pt"  # split: train or test
TRAIN_DATA = PREPARED.replace("{split}", "train")
TEST_DATA = PREPARED.replace("{split}", "test")
RESOURCES = "resources/{dataset}"
ARCHIVE = RESOURCES + "/{archive}"  # its name is the source's (cifarlab.data.sources.archive_name)
SOURCE_RECORD = ARCHIVE + ".json"  # where it came from, its size and digests
SAMPLES = "results/figures/{dataset}/samples.png"

# What a run's name may be: the {run} wildcard's constraint and the config's check of each expanded
# name (cifarlab.config.validate.expand_runs), one pattern for both. Letters, digits and `_.+-` (a
# sweep's values: `lr1e-05`, `torchvision.resnet50`), starting with a letter, digit or `_` (no
# `..`), never a path separator; not a name that a file beside a run's uses (`saliency/sample.json`,
# `saliency/comparison.png`), nor such a name and a dot. A character class, not the alternation of
# the study's names: Snakemake writes the constraint into every file pattern and scans it for each
# job, so an alternation of N names costs O(N) per job and planning grew as N squared (issue 26).
RESERVED_RUN_NAMES = ("sample", "comparison")
RUN_NAME = rf"(?!(?:{'|'.join(RESERVED_RUN_NAMES)})(?:[./]|$))[A-Za-z0-9_][A-Za-z0-9_.+-]*"

# One trained model: a run of the study on one dataset with one seed.
RUN = "results/{dataset}/runs/{run}/seed{seed}"
MODEL = RUN + "/model.pt"
HISTORY = RUN + "/history.csv"
METRICS = RUN + "/metrics.json"
# the trained model as a torch.export program that takes raw images (cifarlab.training.export)
EXPORTED = RUN + "/model.pt2"
# the same as ONNX, where the onnx package is installed (not a declared output: it may be missing)
EXPORTED_ONNX = RUN + "/model.onnx"
# the live curves (cifarlab.training.live_curves): TensorBoard event files written as the run trains,
# not a declared output (`tensorboard: false` writes none); `tensorboard --logdir results` shows all
TENSORBOARD = RUN + "/tensorboard"
# Outside the declared outputs, so that a killed training job resumes from it.
CHECKPOINT = "results/checkpoints/{dataset}/{run}/seed{seed}.pt"

# Per (dataset, run): the LR range test and the saliency maps (of the run's first seed).
LR_FINDER = "results/{dataset}/lr_finder/{run}.json"
SALIENCY_SAMPLE = "results/{dataset}/saliency/sample.json"
SALIENCY_MAPS = "results/{dataset}/saliency/{run}.pt"
SALIENCY_RESULT = "results/{dataset}/saliency/{run}.json"

# A frozen backbone's features of one dataset ({backbone}-{weights}-{size}: cifarlab.training.features).
FEATURES = "results/features/{dataset}/{backbone}-{weights}-{size}"
FEATURES_TRAIN = FEATURES + "/train.pt"
FEATURES_TEST = FEATURES + "/test.pt"

# The figures of one dataset (cifarlab.plots.figures.FIGURES) and the study's report.
FIGURES = "results/figures/{dataset}"
REPORT = "results/report"
REPORT_PAGE = REPORT + "/index.html"
REPORT_SUMMARY = REPORT + "/summary.md"
REPORT_METRICS = REPORT + "/metrics.csv"

# Snakemake's `benchmark:` files: seconds per job (the estimate's calibration, the report's total).
BENCHMARKS = "results/benchmarks"
PREPARE_BENCHMARK = BENCHMARKS + "/prepare/{dataset}.tsv"
TRAIN_BENCHMARK = BENCHMARKS + "/train/{dataset}/{run}/seed{seed}.tsv"
LR_FIND_BENCHMARK = BENCHMARKS + "/lr_find/{dataset}/{run}.tsv"
SALIENCY_BENCHMARK = BENCHMARKS + "/saliency/{dataset}/{run}.tsv"
FEATURES_BENCHMARK = BENCHMARKS + "/features/{dataset}/{backbone}-{weights}-{size}.tsv"

# The logs of a model's jobs (python -m cifarlab status reads them).
TRAIN_LOG = "logs/train/{dataset}/{run}/seed{seed}.log"
EVALUATE_LOG = "logs/evaluate/{dataset}/{run}/seed{seed}.log"
LR_FIND_LOG = "logs/lr_find/{dataset}/{run}.log"

# What planning caches per dataset: its local source's file hashes and its sizes (cifarlab.data.sources).
CONTENT_CACHE = ".snakemake/cifarlab/{dataset}-content.json"
SIZES_CACHE = ".snakemake/cifarlab/{dataset}-sizes.json"

# Folder names under results/ that a dataset may not take (its results would mix with theirs).
RESERVED_NAMES = ("benchmarks", "checkpoints", "data", "features", "figures", "report", "runs")


def fill(pattern: str, **wildcards: Any) -> str:
    """`pattern` with its wildcards filled: fill(METRICS, dataset="cifar10", run="vit", seed=0)."""
    try:
        return pattern.format(**wildcards)
    except KeyError as error:
        raise KeyError(f"{pattern} needs the wildcard {error}; given {sorted(wildcards)}") from None


def wildcards_of(pattern: str, path: str) -> dict[str, str]:
    """The wildcard values of `path`, a file of `pattern` (the inverse of `fill`; values as strings)."""
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+?)", re.escape(pattern))
    match = re.fullmatch(regex, str(path))
    if match is None:
        raise ValueError(f"{path} is not a file of the pattern {pattern}")
    return match.groupdict()


def job_label(settings: Mapping[str, Any], per_seed: bool = True) -> str:
    """How progress lines and `status` name a job: `<dataset>/<run>/seed<k>` (its folder under
    results/<dataset>/runs/), `<dataset>/<run>` for a per-run step (LR finder, saliency); a run
    trained outside a study (no `dataset` in its settings: tests, benchmarks) by its name."""
    if "dataset" not in settings:
        return settings["name"]
    label = f"{settings['dataset']}/{settings['name']}"
    return f"{label}/seed{settings['seed']}" if per_seed else label


def fill_each(pattern: str, instances: list[Mapping[str, Any]]) -> list[str]:
    """`fill(pattern, **instance)` for each instance (dicts of wildcards), in order, without repeats."""
    return list(dict.fromkeys(fill(pattern, **instance) for instance in instances))
