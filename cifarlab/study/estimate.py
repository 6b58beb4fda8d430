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
from cifarlab.models.cost import model_cost
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
# Jobs with less modelled work than this (seconds) do not calibrate: their time is all start-up.
MIN_CALIBRATING_SECONDS = 1.0
# From this much wall time on, the estimate says so and names the smaller study.
LONG_SECONDS = 3600.0
SMALLER_STUDY = "config/quick.yaml"
# Calibration factors measured by earlier studies, per machine (a cache, like the rest of .snakemake/).
CALIBRATION_FILE = ".snakemake/cifarlab/calibration.json"


def on_gpu(device: str) -> bool:
    """Whether the cost model uses GPU figures: only for an explicit `device: cuda` or `mps`
    (`auto` is estimated at CPU speed, pessimistic where it finds a GPU)."""
    return device in ("cuda", "mps")


def image_seconds(
    model: str,
    image_size: int,
    images: float,
    *,
    on_gpu: bool,
    passes: float = 1.0,
    costs: Mapping[str, tuple[float, float]] | None = None,
) -> float:
    """Seconds to push `images` through `model` at `image_size` px (passes=FORWARD_ONLY for inference).

    The model's (GPU, CPU) seconds per 1,000 images at 32 px are its spec's
    `seconds_per_1000_images` (cifarlab.models.cost; slow-machine figures on purpose), or
    `costs[model]` when given; cost grows with the pixel count.
    """
    per_1000 = (costs[model] if costs is not None else model_cost(model).seconds_per_1000_images)[
        0 if on_gpu else 1
    ]
    return images / 1000 * per_1000 * size_factor(image_size) * passes


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


def run_image_seconds(run: dict, images: float, *, on_gpu: bool, passes: float = 1.0) -> float:
    """`image_seconds` of a run's network; a head on cached features costs what a small CNN does."""
    if uses_cached_features(run):
        return image_seconds("simple_cnn", 32, images, on_gpu=on_gpu, passes=passes)
    return image_seconds(run["model"], run["image_size"], images, on_gpu=on_gpu, passes=passes)


def train_seconds(sizes: dict[str, int], run: dict, *, on_gpu: bool) -> float:
    """Seconds of work of a run's `train` job on a dataset of `sizes` (split_images): every epoch
    trains on the training images (less the held-out `validation` ones), then evaluates the
    held-out images and the test set."""
    trained = min(split_images(sizes, "train", run), sizes["train"] - run["validation"])
    evaluated = run["validation"] + split_images(sizes, "test", run)
    per_epoch = run_image_seconds(run, trained, on_gpu=on_gpu) + run_image_seconds(
        run, evaluated, on_gpu=on_gpu, passes=FORWARD_ONLY
    )
    return run["epochs"] * per_epoch


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


def calibration(done: Iterable[Job]) -> dict[str, float]:
    """Per step kind: measured / modelled seconds of work (median over the jobs with a benchmark file).

    A job's work is its measured wall time less JOB_START_SECONDS. `done`: jobs that already ran
    under the current settings. Kinds without a measurement get the median over all measured
    jobs under the key "*"; nothing measured gives {}.
    """
    ratios: dict[str, list[float]] = {}
    for job in done:
        measured = read_benchmark(job.benchmark) if job.benchmark else None
        if measured is not None and job.seconds >= MIN_CALIBRATING_SECONDS:
            ratios.setdefault(job.kind, []).append(max(measured - JOB_START_SECONDS, 0.0) / job.seconds)
    factors = {kind: statistics.median(values) for kind, values in ratios.items()}
    if ratios:
        factors["*"] = statistics.median(v for values in ratios.values() for v in values)
    return factors


def remembered_factors(path: str | Path, machine: str) -> dict[str, float]:
    """The calibration factors last measured on `machine` (a host name, or "cluster"), {} if none.

    A study whose jobs are all still to run (a new study, or `--forceall`) has no done jobs to
    calibrate by; it uses the factors that earlier studies measured on the same machine.
    """
    try:
        with open(path) as f:
            return {k: float(v) for k, v in json.load(f).get(machine, {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def remember_factors(path: str | Path, machine: str, factors: Mapping[str, float]) -> None:
    """Merge `factors` into the machine's entry of the file at `path` (written atomically)."""
    if not factors:
        return
    try:
        with open(path) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    known[machine] = {**known.get(machine, {}), **factors}
    write_json(known, path, indent=1)


@dataclass(frozen=True)
class Estimate:
    """Per step kind: (jobs, seconds); `total`: seconds of all jobs one after the other;
    `wall`: with `parallel` jobs side by side; `calibrated`: the kinds corrected by measurements."""

    kinds: dict[str, tuple[int, float]]
    total: float
    wall: float
    parallel: int
    calibrated: tuple[str, ...]


def estimate(planned: Iterable[Job], factors: Mapping[str, float], parallel: int) -> Estimate:
    """The seconds of the planned jobs: start-up plus their model seconds times their kind's factor.

    parallel: how many jobs run side by side (--cores // threads per job, at least 1). The wall
    time assumes they keep that many busy; a long last job makes the real one longer.
    """
    kinds: dict[str, tuple[int, float]] = {}
    for job in planned:
        factor = factors.get(job.kind, factors.get("*", 1.0))
        count, seconds = kinds.get(job.kind, (0, 0.0))
        kinds[job.kind] = (count + 1, seconds + JOB_START_SECONDS + factor * job.seconds)
    total = sum(seconds for _, seconds in kinds.values())
    parallel = max(1, parallel)
    calibrated = tuple(kind for kind in kinds if kind in factors)
    return Estimate(kinds, total, total / parallel, parallel, calibrated)


def format_estimate(result: Estimate) -> str:
    """The lines printed before the work starts, beginning with 'Estimate:' (easy to grep)."""
    if not result.kinds:
        return "Estimate: nothing to do."
    if result.calibrated:
        source = f"cost model, calibrated by jobs measured on this machine ({', '.join(result.calibrated)})"
    else:
        source = "cost model (slow-machine figures, uncalibrated: expect less)"
    jobs = sum(n for n, _ in result.kinds.values())
    lines = [
        f"Estimate: {duration(result.wall)} wall time for {jobs} job{'s' * (jobs != 1)} "
        f"({duration(result.total)} of jobs, {result.parallel} side by side); {source}"
    ]
    # Ties by name: Snakemake lists the planned jobs in no fixed order, and a dry run must print
    # the same block as the run it plans (tests/test_workflow_e2e.py).
    for kind, (count, seconds) in sorted(result.kinds.items(), key=lambda item: (-item[1][1], item[0])):
        lines.append(f"  {kind:<16} {count:>4} job{'s' if count != 1 else ' '}  {duration(seconds):>9}")
    if result.wall >= LONG_SECONDS:
        lines.append(
            f"Estimate: this is long. The same comparisons in minutes: --configfile {SMALLER_STUDY} "
            "(see README.md); `python -m cifarlab status` shows progress at any time."
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
    gpu = on_gpu(str(metrics.get("device", "cpu")).split(":")[0])
    seconds = 0.0
    for kind, work in (
        ("train", train_seconds(sizes, run, on_gpu=gpu)),
        ("evaluate", run_image_seconds(run, tested, on_gpu=gpu, passes=FORWARD_ONLY)),
    ):
        seconds += JOB_START_SECONDS + factors.get(kind, factors.get("*", 1.0)) * work
    return seconds
