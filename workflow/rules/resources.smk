# What each job asks of the machine or the cluster: threads (the rule's `threads:`, the config's
# `threads`), memory (`mem_mb`, MB), wall time (`runtime`, minutes) and a GPU (`gpu`).
#
# A cluster kills a job that outgrows its request, so the estimates below are pessimistic, and
# under --retries memory and time grow with `attempt`: a retry gets twice, then three times as
# much. A training job killed by its time limit resumes from its checkpoint on the retry.
# Override any of them without editing code, step by step: `--set-resources train:runtime=600`, or
# `set-resources:` in a profile (profiles/slurm/config.yaml).
import math

# Only `device: cuda` asks for a GPU (`--gpus=1` under SLURM). With `auto` a cluster job gets
# no GPU and trains on the CPU, so its time is estimated at CPU speed.
GPU_JOBS = 1 if DEVICE == "cuda" else 0
ON_GPU = DEVICE in ("cuda", "mps")

# Seconds per 1,000 images, forward and backward, at 32 px: (on a GPU, on a CPU with `threads`
# cores). Slow-machine figures on purpose; larger images cost (size / 32)^2 times more.
SECONDS_PER_1000_IMAGES = {
    "simple_cnn": (0.2, 1),
    "dropout_cnn": (0.5, 5),
    "vit": (2, 30),
    "resnet18": (0.2, 10),
    "vgg16": (0.4, 30),
    "airbench": (0.05, 4),
}
# Activation memory (MB) per training image at 32 px, held in host memory when on the CPU.
ACTIVATION_MB = {
    "simple_cnn": 0.1,
    "dropout_cnn": 0.5,
    "vit": 8,
    "resnet18": 1,
    "vgg16": 2,
    "airbench": 2,
}
# Width of the cached features of a frozen backbone (its output before the last layer).
FEATURE_WIDTH = {"vgg16": 4096, "resnet18": 512}
BASE_MB = 3000  # Python, torch and the two Snakemake processes of a cluster job
START_MINUTES = 5  # start-up, loading the data, writing outputs


def split_images(split, run=None):
    """Images in a split: the run's subset, the synthetic set's size, else CIFAR-10's."""
    if run and run.get(f"{split}_subset"):
        return run[f"{split}_subset"]
    synthetic = config["dataset"].get("synthetic") or {}
    if SOURCE == "synthetic":
        return 10 * synthetic.get(f"{split}_per_class", 500)
    return {"train": 50000, "test": 10000}[split]


def size_factor(image_size):
    return max(1.0, (image_size / 32) ** 2)


def data_mb():
    """The prepared train and test tensors (uint8), both held in memory by every heavy job."""
    size = config["dataset"]["image_size"]
    images = split_images("train") + split_images("test")
    return images * 3 * size * size / 2**20


def minutes(seconds, attempt):
    """A time limit: the estimate with 50 % headroom and start-up, at least 10 min, x attempt."""
    return max(10, math.ceil(START_MINUTES + 1.5 * seconds / 60)) * attempt


def round_mb(mb, attempt):
    return math.ceil(mb / 500) * 500 * attempt


def image_seconds(run, images, passes=1.0):
    """Seconds to push `images` of a run through its model; passes=1/3 for forward only."""
    # A frozen backbone's cached features: only a head trains, on vectors, cheap at any size.
    if uses_cached_features(run):
        model, size = "simple_cnn", 32
    else:
        model, size = run["model"], run["image_size"]
    per_1000 = SECONDS_PER_1000_IMAGES[model][0 if ON_GPU else 1]
    return images / 1000 * per_1000 * size_factor(size) * passes


def train_mem_mb(wildcards, attempt):
    """Host memory of a job that holds one run's model and data (train, evaluate, lr_find, saliency)."""
    run = RUNS[wildcards.run]
    model = "simple_cnn" if uses_cached_features(run) else run["model"]
    activations = (
        0
        if ON_GPU
        else run["batch_size"] * ACTIVATION_MB[model] * size_factor(run["image_size"])
    )
    features = 0
    if uses_cached_features(run):
        images = split_images("train") + split_images("test")
        features = images * FEATURE_WIDTH[run["model"]] * 4 / 2**20
    return round_mb(BASE_MB + 2 * data_mb() + activations + features, attempt)


def train_runtime(wildcards, attempt):
    """Minutes: every epoch trains on the training set and tests on the test set."""
    run = RUNS[wildcards.run]
    per_epoch = image_seconds(run, split_images("train", run)) + image_seconds(
        run, split_images("test", run), passes=1 / 3
    )
    return minutes(run["epochs"] * per_epoch, attempt)


def evaluate_runtime(wildcards, attempt):
    run = RUNS[wildcards.run]
    return minutes(image_seconds(run, split_images("test", run), passes=1 / 3), attempt)


def lr_find_runtime(wildcards, attempt):
    """Minutes: `repeats` sweeps of `num_iter` mini-batches each."""
    run = RUNS[wildcards.run]
    finder = config.get("lr_finder", {})
    batches = finder.get("num_iter", 200) * finder.get("repeats", 5)
    return minutes(image_seconds(run, batches * run["batch_size"]), attempt)


def saliency_runtime(wildcards, attempt):
    """Minutes: up to ~300 gradient passes per image (SmoothGrad, integrated gradients), twice
    (the trained and the randomised model of the sanity check)."""
    run = RUNS[wildcards.run]
    images = 10 * config.get("saliency", {}).get("images_per_class", 1)
    return minutes(image_seconds(run, images * 300 * 2), attempt)


def features_run(wildcards):
    """A stand-in run for a backbone's features job (the backbone at its input size)."""
    return {
        "model": wildcards.backbone,
        "image_size": int(wildcards.size),
        "freeze": "none",
        "augment": "",
    }


def features_mem_mb(wildcards, attempt):
    images = split_images("train") + split_images("test")
    output = images * FEATURE_WIDTH[wildcards.backbone] * 4 / 2**20
    batch = (
        0
        if ON_GPU
        else 128 * ACTIVATION_MB[wildcards.backbone] * size_factor(int(wildcards.size))
    )
    return round_mb(BASE_MB + 2 * data_mb() + output + batch, attempt)


def features_runtime(wildcards, attempt):
    """Minutes: one forward pass over both splits."""
    images = split_images("train") + split_images("test")
    return minutes(
        image_seconds(features_run(wildcards), images, passes=1 / 3), attempt
    )


def prepare_mem_mb(wildcards, attempt):
    """Decoded images, their packed tensors and the archive's bytes, at once."""
    return round_mb(BASE_MB + 4 * data_mb(), attempt)
