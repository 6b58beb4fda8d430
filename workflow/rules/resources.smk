# What each job asks of the machine or the cluster (threads, memory, time, GPU).
# Under --retries, memory and time grow with `attempt`.

GPU_JOBS = 1 if DEVICE == "cuda" else 0


def train_mem_mb(wildcards, attempt):
    run = RUNS[wildcards.run]
    base = 8000 if run["image_size"] >= 128 else 4000
    return base * attempt


def train_runtime(wildcards, attempt):
    """Minutes; scales with epochs and with the cost of the model."""
    run = RUNS[wildcards.run]
    per_epoch = {
        "simple_cnn": 2,
        "dropout_cnn": 5,
        "vit": 20,
        "resnet18": 20,
        "vgg16": 60,
    }
    return max(30, run["epochs"] * per_epoch[run["model"]]) * attempt
