# What each job asks of the machine or the cluster: threads (the rule's `threads:`, the config's
# `threads`), memory (`mem_mb`, MB), wall time (`runtime`, minutes) and a GPU (`gpu`).
#
# A cluster kills a job that outgrows its request, so the estimates below are pessimistic, and
# under --retries memory and time grow with `attempt`: a retry gets twice, then three times as
# much. A training job killed by its time limit resumes from its checkpoint on the retry.
# Override any of them without editing code, step by step: `--set-resources train:runtime=600`, or
# `set-resources:` in a profile (profiles/slurm/config.yaml).
import functools
import math

from cifarlab.config.validate import uses_cached_features
from cifarlab.core.gpu_slots import visible_gpus
from cifarlab.study import estimate
from cifarlab.data.catalog import dataset_sizes
from cifarlab.models import model_spec
from cifarlab.models.cost import model_cost

# Only `device: cuda` asks for a GPU (`--gpus=1` under SLURM). With `auto` a cluster job gets
# no GPU and trains on the CPU, so its time is estimated at CPU speed.
ON_GPU = estimate.on_gpu(DEVICE)


# One job per GPU, locally: each GPU job asks for gpu=1 and the `gpu` resource defaults to the
# number of GPUs, so N GPUs run N jobs at once; each job then claims its own GPU's slot
# (cifarlab.core.gpu_slots, through core.device.pick_device). `--resources gpu=K` still caps them.
@functools.cache
def local_gpus():
    """This machine's GPUs (cifarlab.core.gpu_slots.visible_gpus: CUDA_VISIBLE_DEVICES, else
    nvidia-smi) as the main Snakemake process sees them; [] in a job's own inner Snakemake.
    Asked only where it matters (device cuda or auto, not on a cluster; the callers' `and`s) and
    once per start; with CUDA_VISIBLE_DEVICES set no nvidia-smi runs (tests/test_gpu_slots.py).
    """
    return visible_gpus() if workflow.is_main_process else []


# The default is set while this file is read, before Snakemake creates its scheduler (later it
# would not count), when the executor is not known yet: a run that sets `_nodes` (--jobs without
# the local executor's --cores: a cluster profile) is taken for a cluster one, as Snakemake's own
# scheduler does, and left uncapped. A local `-j N` is too: its jobs still get one GPU each,
# but past N GPU jobs the extra ones wait for a slot holding their cores (docs/cluster.md).
if (
    DEVICE in ("cuda", "auto")
    and workflow.global_resources["_nodes"].value is None
    and "gpu" not in workflow.global_resources
    and local_gpus()
):
    workflow.register_resource("gpu", len(local_gpus()))


def gpu_jobs(wildcards):
    """The `gpu` resource of a job that may train on a GPU: 1 with `device: cuda` (`--gpus=1`
    under SLURM), and with `device: auto` in a local run that finds GPUs (it trains on them, and
    Snakemake must not start more such jobs than GPUs); else 0 (`auto` on a cluster asks for no
    GPU and trains on CPUs). Evaluated per job, once Snakemake knows its executor."""
    if DEVICE == "cuda":
        return 1
    return 1 if DEVICE == "auto" and workflow.local_exec and local_gpus() else 0


# Each model's activation memory per training image and the width of its cached features are
# its cost's and spec's (cifarlab.models.cost: activation_mb; cifarlab.models.specs: feature_width).
BASE_MB = 3000  # Python, torch and the two Snakemake processes of a cluster job
START_MINUTES = 5  # start-up, loading the data, writing outputs


@functools.cache
def sizes(dataset):
    """{"train", "test", "classes"} of a dataset, from its source (cifarlab.data.catalog.dataset_sizes)."""
    return dataset_sizes(
        DATASETS[dataset], cache=paths.fill(paths.SIZES_CACHE, dataset=dataset)
    )


def split_images(wildcards, split, run=None):
    """Images in a split of the job's dataset: the run's subset, else all of them."""
    return estimate.split_images(sizes(wildcards.dataset), split, run)


def data_mb(wildcards):
    """The prepared train and test tensors (uint8), both held in memory by every heavy job."""
    size = DATASETS[wildcards.dataset]["image_size"]
    images = split_images(wildcards, "train") + split_images(wildcards, "test")
    return images * 3 * size * size / 2**20


def minutes(seconds, attempt):
    """A time limit: the estimate with 50 % headroom and start-up, at least 10 min, x attempt."""
    return max(10, math.ceil(START_MINUTES + 1.5 * seconds / 60)) * attempt


def round_mb(mb, attempt):
    return math.ceil(mb / 500) * 500 * attempt


def train_mem_mb(wildcards, attempt):
    """Host memory of a job that holds one run's model and data (train, evaluate, lr_find, saliency)."""
    run = job(wildcards)
    model = "simple_cnn" if uses_cached_features(run) else run["model"]
    activations = (
        0
        if ON_GPU
        else run["batch_size"]
        * model_cost(model).activation_mb
        * estimate.size_factor(run["image_size"])
    )
    features = 0
    if uses_cached_features(run):
        images = split_images(wildcards, "train") + split_images(wildcards, "test")
        features = images * model_spec(run["model"]).feature_width * 4 / 2**20
    return round_mb(BASE_MB + 2 * data_mb(wildcards) + activations + features, attempt)


def train_seconds(wildcards, costs=None):
    return estimate.train_seconds(
        sizes(wildcards.dataset), job(wildcards), on_gpu=ON_GPU, costs=costs
    )


def evaluate_seconds(wildcards, costs=None):
    return estimate.evaluate_seconds(
        sizes(wildcards.dataset), job(wildcards), on_gpu=ON_GPU, costs=costs
    )


def lr_find_seconds(wildcards, costs=None):
    return estimate.lr_find_seconds(
        job(wildcards), config["lr_finder"], on_gpu=ON_GPU, costs=costs
    )


def saliency_seconds(wildcards, costs=None):
    return estimate.saliency_seconds(
        sizes(wildcards.dataset),
        job(wildcards),
        config["saliency"],
        on_gpu=ON_GPU,
        costs=costs,
    )


def features_mem_mb(wildcards, attempt):
    spec = model_spec(backbone_params(wildcards)["model"])
    images = split_images(wildcards, "train") + split_images(wildcards, "test")
    output = images * spec.feature_width * 4 / 2**20
    batch = (
        0
        if ON_GPU
        else 128
        * model_cost(spec.name).activation_mb
        * estimate.size_factor(int(wildcards.size))
    )
    return round_mb(BASE_MB + 2 * data_mb(wildcards) + output + batch, attempt)


def features_seconds(wildcards, costs=None):
    backbone = backbone_params(wildcards)
    return estimate.features_seconds(
        sizes(wildcards.dataset),
        backbone["model"],
        int(wildcards.size),
        on_gpu=ON_GPU,
        costs=costs,
        subsets=backbone["subsets"],
    )


def prepare_seconds(wildcards, costs=None):
    return estimate.prepare_seconds(sizes(wildcards.dataset))


# Seconds of work of a job, by rule, from cifarlab.study.estimate's cost model (each model's
# seconds_per_1000_images, cifarlab.models.cost), as functions of (wildcards, costs): the rules'
# `runtime` below (minutes, with headroom; prepare asks for a fixed 30) uses the spec figures
# (costs=None) and so keeps its headroom; the estimate printed before the work
# (workflow/rules/estimate.smk) passes the costs measured on this machine where there are some.
JOB_SECONDS = {
    "prepare": prepare_seconds,
    "features": features_seconds,
    "lr_find": lr_find_seconds,
    "train": train_seconds,
    "evaluate": evaluate_seconds,
    "saliency": saliency_seconds,
}


def runtime(rule):
    """The `runtime` resource of `rule` (minutes): its seconds with headroom, x attempt."""
    return lambda wildcards, attempt: minutes(JOB_SECONDS[rule](wildcards), attempt)


train_runtime = runtime("train")
evaluate_runtime = runtime("evaluate")
lr_find_runtime = runtime("lr_find")
saliency_runtime = runtime("saliency")
features_runtime = runtime("features")


def prepare_mem_mb(wildcards, attempt):
    """Decoded images, their packed tensors and the archive's bytes, at once."""
    return round_mb(BASE_MB + 4 * data_mb(wildcards), attempt)
