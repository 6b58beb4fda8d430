"""How long the planned jobs should take: the cost model, its calibration and the printed estimate.

The workflow (workflow/rules/resources.smk) turns each job into model seconds with `image_seconds`
and each model's cost per image (its spec, cifarlab.models.specs); it asks the cluster for those
seconds with headroom (its `runtime`), and before the first job runs it prints `format_estimate`
of the jobs Snakemake plans. `cifarlab.study.status` uses the same figures for the runs still waiting.
No torch here: the workflow layer imports this.

Those are deliberately slow-machine figures (a cluster kills a job that outruns its time
limit). The estimate corrects them per step kind by the study's own measurements: the
`benchmark:` files (results/benchmarks/<rule>/...tsv, wall seconds in column `s`) of jobs that
are already done, measured against what the model said for them. The factors are remembered per
machine (`remember_factors`), so that a study with nothing done yet is calibrated by the last
one that ran here.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cifarlab.config.validate import uses_cached_features
from cifarlab.core.files import write_json
from cifarlab.core.progress import duration
from cifarlab.models.cost import VIT_REFERENCE, model_cost
from cifarlab.study import results

# A forward pass alone (inference) costs about a third of forward and backward.
FORWARD_ONLY = 1 / 3
# Forward passes over the test set per `tta` setting (cifarlab.training.loop.tta_views), beside the plain one.
TTA_VIEWS = {"none": 0, "flip": 2, "flip_translate": 6}
# Decoding and packing the source images (the prepare step), per 1,000 images.
PREPARE_SECONDS_PER_1000_IMAGES = 1.0
# Every job: starting Python, importing torch, reading the prepared data, writing outputs (all a
# cheap job costs: a download of a local file, a plot, the report). Measured on the project's
# 2-core machine: 5-7 s when quiet, 10-13 s at load 7; not scaled by the calibration.
JOB_START_SECONDS = 10.0
# In measured costs (remembered_costs): the seconds a job takes to start on this machine (a
# Python process importing what a training job imports, timed by cifarlab.training.calibrate),
# plus SNAKEMAKE_JOB_SECONDS, Snakemake's own for a job (its script's preamble, the benchmark).
START_KEY = "*job_start"
SNAKEMAKE_JOB_SECONDS = 1.0
# Jobs with less modelled work than this (seconds) do not calibrate: their time is all start-up.
MIN_CALIBRATING_SECONDS = 1.0
# The step kinds that run a model: only their measured speed stands in for a kind not measured.
MODEL_KINDS = ("train", "evaluate", "features", "lr_find", "saliency")
# From this much wall time on, the estimate says so and names the smaller study.
LONG_SECONDS = 3600.0
SMALLER_STUDY = "config/quick.yaml"
# The longest chain of dependent jobs, as step kinds one after another (each stage: the kinds
# that can take its place in a chain): however many cores, the study takes at least the longest
# job of each stage, added up (an upper bound of its critical path: simple, and never optimistic).
CHAIN_STAGES = (
    ("download",),
    ("prepare",),
    ("features",),
    ("train", "lr_find"),
    ("evaluate", "saliency"),
    ("plot_*",),
    ("report",),
)
# The exit status of the calibration subprocess (cifarlab.training.calibrate) when the device it
# was asked to measure is missing: the planner turns it into a config error.
DEVICE_MISSING_EXIT = 3
# Calibration factors measured by earlier studies, per machine (a cache, like the rest of .snakemake/).
CALIBRATION_FILE = ".snakemake/cifarlab/calibration.json"


def on_gpu(device: str) -> bool:
    """Whether the cost model uses GPU figures: only for an explicit `device: cuda` or `mps`
    (`auto` is estimated at CPU speed, pessimistic where it finds a GPU)."""
    return device in ("cuda", "mps")


# Seconds per 1,000 training images (forward and backward, 32 px) per model, measured on this
# machine and device (cifarlab.training.calibrate); a model missing from it costs its spec's.
Costs = Mapping[str, float]


def image_seconds(
    model: str,
    image_size: int,
    images: float,
    *,
    on_gpu: bool,
    passes: float = 1.0,
    costs: Costs | None = None,
    vit: Mapping[str, int] | None = None,
) -> float:
    """Seconds to push `images` through `model` at `image_size` px (passes=FORWARD_ONLY for inference).

    The model's seconds per 1,000 images at 32 px are `costs[model]` when measured here, else its
    spec's `seconds_per_1000_images` (GPU or CPU; cifarlab.models.cost; slow-machine figures on
    purpose); cost grows with the pixel count, and a ViT's with its size (`vit`: its `vit:`
    settings; vit_factor).
    """
    if costs and model in costs:
        per_1000 = costs[model]
    else:
        per_1000 = model_cost(model).seconds_per_1000_images[0 if on_gpu else 1]
    if model == "vit" and vit is not None:
        scale = vit_factor(vit, image_size)
    else:
        scale = size_factor(image_size)
    return images / 1000 * per_1000 * scale * passes


def vit_work(vit: Mapping[str, int], image_size: int) -> float:
    """Multiply-adds of one image through a vit-pytorch ViT (its blocks; attention heads are 64
    wide whatever `dim` is): tokens x (qkv, output, MLP) + the attention matrix, per block."""
    tokens = (image_size // vit["patch_size"]) ** 2 + 1
    inner = vit["heads"] * 64
    per_token = 4 * vit["dim"] * inner + 2 * vit["dim"] * vit["mlp_dim"]
    return vit["depth"] * tokens * (per_token + 2 * tokens * inner)


def vit_factor(vit: Mapping[str, int], image_size: int) -> float:
    """How much more a ViT of `vit` sizes at `image_size` px costs than the one the cost figures
    are for (VIT_REFERENCE at 32 px: the lab's ViT; the spec's and a measurement's)."""
    return vit_work(vit, image_size) / vit_work(VIT_REFERENCE, 32)


def size_factor(image_size: int) -> float:
    """How much more a pass costs at `image_size` px than at 32 px (the pixel count; never less)."""
    return max(1.0, (image_size / 32) ** 2)


def split_images(sizes: dict[str, int], split: str, run: dict | None = None) -> int:
    """Images of a split ("train" or "test") a job sees: the run's subset, else all of the
    dataset's. sizes: cifarlab.data.catalog.dataset_sizes of the job's dataset (known without
    opening the data)."""
    if run is not None and run[f"{split}_subset"]:
        return min(run[f"{split}_subset"], sizes[split])
    return sizes[split]


def run_image_seconds(
    run: dict, images: float, *, on_gpu: bool, passes: float = 1.0, costs: Costs | None = None
) -> float:
    """`image_seconds` of a run's network; a head on cached features costs what a small CNN does."""
    if uses_cached_features(run):
        return image_seconds("simple_cnn", 32, images, on_gpu=on_gpu, passes=passes, costs=costs)
    return image_seconds(
        run["model"], run["image_size"], images, on_gpu=on_gpu, passes=passes, costs=costs, vit=run.get("vit")
    )


def training_passes(run: dict) -> float:
    """What a training step costs in passes: forward and backward (1), but a frozen backbone
    trained through its images (`freeze: head` with augmentation) is a forward pass and a head."""
    return FORWARD_ONLY if run.get("freeze") == "head" and not uses_cached_features(run) else 1.0


def train_seconds(sizes: dict[str, int], run: dict, *, on_gpu: bool, costs: Costs | None = None) -> float:
    """Seconds of work of a run's `train` job on a dataset of `sizes` (split_images): every epoch
    trains on the training images (less the held-out `validation` ones), then evaluates the
    held-out images and the test set."""
    trained = min(split_images(sizes, "train", run), sizes["train"] - run["validation"])
    evaluated = run["validation"] + split_images(sizes, "test", run)
    per_epoch = run_image_seconds(
        run, trained, on_gpu=on_gpu, passes=training_passes(run), costs=costs
    ) + run_image_seconds(run, evaluated, on_gpu=on_gpu, passes=FORWARD_ONLY, costs=costs)
    return run["epochs"] * per_epoch


def evaluate_seconds(sizes: dict[str, int], run: dict, *, on_gpu: bool, costs: Costs | None = None) -> float:
    """A run's `evaluate` job: the plain test pass, plus one per view of test-time augmentation."""
    passes = (1 + TTA_VIEWS[run["tta"]]) * FORWARD_ONLY
    return run_image_seconds(run, split_images(sizes, "test", run), on_gpu=on_gpu, passes=passes, costs=costs)


def lr_find_seconds(run: dict, finder: Mapping, *, on_gpu: bool, costs: Costs | None = None) -> float:
    """A run's `lr_find` job: `repeats` sweeps of `num_iter` mini-batches (finder: config["lr_finder"])."""
    batches = finder["num_iter"] * finder["repeats"]
    return run_image_seconds(
        run, batches * run["batch_size"], on_gpu=on_gpu, passes=training_passes(run), costs=costs
    )


def saliency_seconds(
    sizes: dict[str, int], run: dict, saliency: Mapping, *, on_gpu: bool, costs: Costs | None = None
) -> float:
    """A run's `saliency` job: up to ~300 gradient passes per image (SmoothGrad, integrated
    gradients), twice (the trained and the randomised model of the sanity check)."""
    images = sizes["classes"] * saliency["images_per_class"]
    return run_image_seconds(run, images * 300 * 2, on_gpu=on_gpu, costs=costs)


def features_seconds(
    sizes: dict[str, int],
    model: str,
    image_size: int,
    *,
    on_gpu: bool,
    costs: Costs | None = None,
    subsets: Mapping[str, list | None] | None = None,
) -> float:
    """A `features` job: one forward pass of a frozen backbone over the images its runs use
    (subsets: cifarlab.study.plan.features_subsets; at most their sizes added up; None: all)."""
    images = 0
    for split in ("train", "test"):
        wanted = (subsets or {}).get(split)
        if wanted is None:
            images += sizes[split]
        else:
            images += min(sizes[split], sum(w[0] if isinstance(w, list | tuple) else w for w in wanted))
    return image_seconds(model, image_size, images, on_gpu=on_gpu, passes=FORWARD_ONLY, costs=costs)


def prepare_seconds(sizes: dict[str, int]) -> float:
    """A dataset's `prepare` job: decoding and packing both splits."""
    return (sizes["train"] + sizes["test"]) / 1000 * PREPARE_SECONDS_PER_1000_IMAGES


@dataclass(frozen=True)
class Job:
    """One planned job: its step kind (the rule's name), a label (its run, or wildcards) and the
    cost model's seconds of work (without start-up); `benchmark`: its earlier measurement file."""

    kind: str
    name: str
    seconds: float
    benchmark: str | None = None


def read_benchmark(path: str | Path) -> float | None:
    """Wall seconds of a Snakemake `benchmark:` file (the mean of its rows), None if absent or unreadable."""
    try:
        rows = results.benchmark_seconds(path)
    except (OSError, ValueError):
        return None
    return statistics.fmean(rows) if rows else None


def calibration(done: Iterable[Job], start: float = JOB_START_SECONDS) -> dict[str, float]:
    """Per step kind: measured / modelled seconds of work (median over the jobs with a benchmark file).

    A job's work is its measured wall time less `start` (job_start). `done`: jobs that already ran
    under the current settings. Kinds without a measurement get, under the key "*", the median over
    the measured jobs that run a model (MODEL_KINDS); nothing measured gives {}.
    """
    ratios: dict[str, list[float]] = {}
    for job in done:
        measured = read_benchmark(job.benchmark) if job.benchmark else None
        if measured is not None and job.seconds >= MIN_CALIBRATING_SECONDS:
            ratios.setdefault(job.kind, []).append(max(measured - start, 0.0) / job.seconds)
    factors = {kind: statistics.median(values) for kind, values in ratios.items()}
    # Decoding images (prepare) says nothing of a model's speed: a done prepare job 10x faster
    # than its model once made every unmeasured training job of a study 10x too short.
    model_ratios = [v for kind in MODEL_KINDS for v in ratios.get(kind, [])]
    if model_ratios:
        factors["*"] = statistics.median(model_ratios)
    return factors


def calibration_key(machine: str, device: str, precision: str, threads: int = 1) -> str:
    """The calibration file's entry for costs measured on `machine` with the study's `device` and
    `precision` settings and `threads` per job (cifarlab.training.calibrate)."""
    return f"{machine} {device} {precision} {threads}t"


def job_threads(threads: int, cores: int | None = None) -> int:
    """The threads one job of a study gets: its config's `threads`, at most `cores` (--cores:
    Snakemake gives a job no more; None: no limit)."""
    return min(threads, cores or threads)


def job_calibration_key(machine: str, config: Mapping, cores: int | None = None) -> str:
    """calibration_key of a study's jobs on `machine` (a validated config: its `device`,
    `precision` and job_threads under `cores`): the one key the planner, the measurement and the
    printed estimate share."""
    threads = job_threads(config["threads"], cores)
    return calibration_key(machine, config["device"], config["precision"], threads)


def read_calibration(path: str | Path) -> dict:
    """The whole calibration file at `path` (entry -> costs and factors), {} if absent or unreadable.
    Read it once per call and pick entries with remembered_costs, remembered_factors or
    machine_calibration."""
    try:
        with open(path) as f:
            known = json.load(f)
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def remembered_costs(known: Mapping, key: str) -> dict[str, float]:
    """Seconds per 1,000 training images at 32 px per model family, measured under `key`
    (calibration_key) in the calibration file `known` (read_calibration), {} if none: the cost
    basis that replaces the specs' in the estimate. START_KEY: a job's start-up there (job_start)."""
    entry = known.get(key)
    costs = entry.get("costs") if isinstance(entry, dict) else None
    try:
        return {k: float(v) for k, v in costs.items()} if isinstance(costs, dict) else {}
    except (TypeError, ValueError):  # a malformed entry: the specs' figures (measured again)
        return {}


def remembered_factors(known: Mapping, machine: str) -> dict[str, float]:
    """The calibration factors last measured under `machine` (a host name, "cluster", or a
    calibration_key with measured costs) in the calibration file `known` (read_calibration),
    {} if none.

    A study whose jobs are all still to run (a new study, or `--forceall`) has no done jobs to
    calibrate by; it uses the factors that earlier studies measured on the same machine.
    """
    entry = known.get(machine, {})
    if isinstance(entry, dict) and "costs" in entry:
        entry = entry.get("factors", {})
    try:
        return {k: float(v) for k, v in entry.items()}
    except (TypeError, ValueError, AttributeError):
        return {}


def remember_costs(path: str | Path, key: str, costs: Mapping[str, float]) -> dict:
    """Merge measured `costs` into `key`'s entry. Its factors are dropped: they were measured
    against the costs before (a factor is relative to its cost basis: never counted twice).
    Returns the whole file as written (read_calibration's form)."""
    known = read_calibration(path)
    # what was there, read as remembered_costs reads it (a malformed entry: none)
    known[key] = {"costs": {**remembered_costs(known, key), **costs}, "factors": {}}
    write_json(known, path, indent=1)
    return known


def job_start(costs: Mapping[str, float]) -> float:
    """A job's start-up seconds: measured (START_KEY of remembered_costs), else JOB_START_SECONDS."""
    return costs.get(START_KEY, JOB_START_SECONDS)


def remember_factors(path: str | Path, machine: str, factors: Mapping[str, float]) -> None:
    """Merge `factors` into the entry `machine` of the file at `path` (written atomically)."""
    if not factors:
        return
    known = read_calibration(path)
    entry = known.get(machine) if isinstance(known.get(machine), dict) else {}
    if "costs" in entry:
        entry["factors"] = {**entry.get("factors", {}), **factors}
        known[machine] = entry
    else:
        known[machine] = {**entry, **factors}
    write_json(known, path, indent=1)


@dataclass(frozen=True)
class MachineCalibration:
    """What the calibration file holds for a study's jobs on one machine: `key`
    (job_calibration_key), the `costs` measured under it ({}: the specs' figures), `factors_key`
    (where its factors are: beside those costs when there are some, else under the machine alone,
    relative to the specs' figures) and those `factors` (remembered_factors)."""

    key: str
    costs: dict[str, float]
    factors_key: str
    factors: dict[str, float]


def machine_calibration(
    known: Mapping, machine: str, config: Mapping, cores: int | None = None
) -> MachineCalibration:
    """The MachineCalibration of a study (its validated config) on `machine` under `cores`, from
    the calibration file already read (read_calibration): one read per planning call."""
    key = job_calibration_key(machine, config, cores)
    costs = remembered_costs(known, key)
    where = key if costs else machine  # factors beside measured costs, else the specs' basis
    return MachineCalibration(key, costs, where, remembered_factors(known, where))


@dataclass(frozen=True)
class Estimate:
    """Per step kind: (jobs, seconds); `total`: seconds of all jobs one after the other;
    `wall`: with `parallel` jobs side by side; `calibrated`: the kinds corrected by measurements;
    `measured`: the model families whose cost was measured on this machine (remembered_costs);
    `chain`: seconds of the longest chain of dependent jobs (CHAIN_STAGES), the least wall time
    whatever the cores (`wall` is at least it)."""

    kinds: dict[str, tuple[int, float]]
    total: float
    wall: float
    parallel: int
    calibrated: tuple[str, ...]
    measured: tuple[str, ...] = ()
    chain: float = 0.0
    chain_bound: bool = False  # the chain, not the cores, sets `wall` (more cores: no faster)


def estimate(
    planned: Iterable[Job],
    factors: Mapping[str, float],
    parallel: int,
    costs: Mapping[str, float] | None = None,
    light_parallel: int | None = None,
) -> Estimate:
    """The seconds of the planned jobs: start-up plus their model seconds times their kind's factor.

    parallel: how many jobs run side by side (--cores // threads per job, at least 1). The wall
    time is the larger of: the jobs spread over that many slots, and the longest chain of
    dependent jobs (CHAIN_STAGES: a job waits for the one before it, whatever the cores). costs: the
    costs measured on this machine (remembered_costs) that the jobs' seconds used, and its start-up.
    light_parallel: how many jobs without modelled work (plots, the report: one thread each) run
    side by side (--cores; default: `parallel`).
    """
    costs = costs or {}
    start = job_start(costs)
    kinds: dict[str, tuple[int, float]] = {}
    light = 0.0
    longest: dict[str, float] = {}  # step kind -> its longest job (seconds, start-up included)
    for job in planned:
        factor = factors.get(job.kind, factors.get("*", 1.0))
        count, seconds = kinds.get(job.kind, (0, 0.0))
        kinds[job.kind] = (count + 1, seconds + start + factor * job.seconds)
        longest[job.kind] = max(longest.get(job.kind, 0.0), start + factor * job.seconds)
        light += start if job.seconds == 0 else 0.0
    total = sum(seconds for _, seconds in kinds.values())
    parallel = max(1, parallel)
    light_parallel = max(parallel, light_parallel or parallel)
    calibrated = tuple(kind for kind in kinds if kind in factors)
    measured = tuple(sorted(k for k in costs if k != START_KEY))
    chain = sum(max((longest.get(kind, 0.0) for kind in stage), default=0.0) for stage in CHAIN_STAGES)
    spread = (total - light) / parallel + light / light_parallel
    wall = max(spread, chain)
    return Estimate(kinds, total, wall, parallel, calibrated, measured, chain, chain > spread)


def format_estimate(result: Estimate) -> str:
    """The lines printed before the work starts, beginning with 'Estimate:' (easy to grep)."""
    if not result.kinds:
        return "Estimate: nothing to do."
    if result.measured:
        source = f"cost model with costs measured on this machine ({', '.join(result.measured)})"
        if result.calibrated:
            source += f", calibrated by jobs measured here ({', '.join(result.calibrated)})"
    elif result.calibrated:
        source = f"cost model, calibrated by jobs measured on this machine ({', '.join(result.calibrated)})"
    else:
        source = "cost model (slow-machine figures, uncalibrated: expect less)"
    jobs = sum(n for n, _ in result.kinds.values())
    lines = [
        f"Estimate: {duration(result.wall)} wall time for {jobs} job{'s' * (jobs != 1)} "
        f"({duration(result.total)} of jobs, {result.parallel} side by side); {source}"
    ]
    if result.chain_bound and jobs > 1:  # one job is its own chain: nothing worth saying
        lines.append(
            "Estimate: set by the longest chain of jobs that wait for one another (a run's model, "
            "and the steps before and after it); more --cores would not shorten it."
        )
    # Ties by name: Snakemake lists the planned jobs in no fixed order, and a dry run must print
    # the same block as the run it plans (tests/test_workflow_e2e.py).
    for kind, (count, seconds) in sorted(result.kinds.items(), key=lambda item: (-item[1][1], item[0])):
        lines.append(f"  {kind:<16} {count:>4} job{'s' if count != 1 else ' '}  {duration(seconds):>9}")
    if result.wall >= LONG_SECONDS:
        lines.append(
            f"Estimate: this is long. The same comparisons in the time you have: --config time_budget=20m "
            f"(or --configfile {SMALLER_STUDY}; docs/budgets.md); `python -m cifarlab status` shows progress "
            "at any time."
        )
    return "\n".join(lines)


def seed_seconds(metrics: Mapping, factors: Mapping[str, float]) -> float:
    """Seconds one more seed of a finished run should take here (its `train` and `evaluate` jobs):
    the cost model of the run's recorded settings and images (its metrics.json), corrected by the
    calibration `factors` (remembered_factors of this machine; {}: the uncalibrated model)."""
    run = metrics["settings"]
    matrix = metrics.get("confusion_matrix") or []
    tested = sum(sum(row) for row in matrix) or (run.get("test_subset") or 0)
    sizes = {"train": (metrics.get("train_images") or 0) + run["validation"], "test": tested}
    # the device's type: the first word of its kind ('cuda (NVIDIA H200)'), older records read alike
    gpu = on_gpu(str(results.recorded_device(metrics)["device"] or "cpu").split(" ")[0])
    seconds = 0.0
    for kind, work in (
        ("train", train_seconds(sizes, run, on_gpu=gpu)),
        ("evaluate", run_image_seconds(run, tested, on_gpu=gpu, passes=FORWARD_ONLY)),
    ):
        seconds += JOB_START_SECONDS + factors.get(kind, factors.get("*", 1.0)) * work
    return seconds
