"""`time_budget`: a wall time that becomes the study's plan (docs/budgets.md, "Time budget").

The planner chooses caps of the `budget:` kind (epochs, train and test images, image size, seeds,
ViT size, LR-finder steps, saliency images) so that the study's estimated wall time fits the
budget. Every run, sweep value (a setting a sweep varies is not capped in its runs:
apply_time_caps's `swept`), LR-finder run and saliency run stays, and two seeds where a run
asked for more (one only as a last resort, printed); the caps apply after the study's own
settings and `budget:` (cifarlab.config.budgets.apply_time_caps), so nothing is raised.

How: each dimension has a ladder of coarse caps (images in multiples of 500, whole epochs). From
no caps, the planner takes, one notch at a time, the dimension whose next notch saves the most
estimated wall time (ties: the order of DIMENSIONS) until the estimate fits; then it gives back
notches (that order) while the estimate still fits. The estimate is the one printed before the
work (cifarlab.study.estimate: the same seconds per job, JOB_START_SECONDS, jobs side by side),
with the costs measured on this machine (cifarlab.training.calibrate) and the remembered factors.

A plan is kept (PLANS_FOLDER, one file per config, budget, machine, device and parallelism), so
that a later call, after calibration has moved, plans the same study and reruns nothing; the main
Snakemake process names the plan it uses (in_use_pointer), the one cluster jobs and `status` read.
No torch here: the workflow layer imports this.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cifarlab.config.budgets import apply_study_budget, apply_time_caps, parse_time_budget
from cifarlab.config.schema import ConfigError, schema_defaults
from cifarlab.config.validate import check_config, job_settings, uses_cached_features
from cifarlab.core import paths
from cifarlab.core.files import write_json
from cifarlab.core.hashing import settings_hash
from cifarlab.core.progress import duration
from cifarlab.data.catalog import UNKNOWN_SIZES, known_sizes
from cifarlab.models.specs import model_spec
from cifarlab.study import estimate
from cifarlab.study.plan import Study, features_subsets, features_wildcards

PLANS_FOLDER = ".snakemake/cifarlab/plans"

# The ladders: caps from high to low (only those below the study's own largest value are used).
IMAGE_SIZES = (192, 160, 128, 96, 64, 48, 32)
TRAIN_IMAGES = (
    40000,
    30000,
    25000,
    20000,
    15000,
    12000,
    10000,
    8000,
    6000,
    5000,
    4000,
    3000,
    2000,
    1500,
    1000,
    500,
)
# Down to 1, but 1 epoch or 1 seed only when nothing else is left to cut (LAST_RESORT; the plan
# says so when it does): curves need two points (the optimizers' and learning-curve figures
# draw lines), and intervals and Welch tests need two seeds.
EPOCHS = (16, 12, 10, 8, 6, 5, 4, 3, 2, 1)
LAST_RESORT = {"epochs": 1, "seeds": 1}
LAST_RESORT_COST = {
    "epochs": "curves have one point (a larger time_budget keeps two)",
    "seeds": "no intervals or Welch tests between runs (a larger time_budget keeps two)",
}
TEST_IMAGES = (5000, 2000, 1000, 500)
SEEDS = (2, 1)
# ViT sizes (budget.vit caps), each a step smaller; patches of 8 px: a quarter of the tokens.
VIT_STEPS = (
    {"min_patch_size": 8},
    {"min_patch_size": 8, "max_dim": 128, "max_heads": 4, "max_mlp_dim": 256},
    {"min_patch_size": 8, "max_dim": 64, "max_heads": 4, "max_mlp_dim": 128, "max_depth": 3},
    {"min_patch_size": 8, "max_dim": 64, "max_heads": 2, "max_mlp_dim": 128, "max_depth": 2},
)
LR_FINDER_STEPS = (100, 50)
SALIENCY_IMAGES = (2, 1)
# Dimensions in the order that breaks ties (and gives notches back): what a comparison misses
# least first.
DIMENSIONS = ("seeds", "image_size", "train_images", "epochs", "vit", "test_images", "lr_finder", "saliency")
LABELS = {
    "seeds": "seeds",
    "image_size": "image size (px)",
    "train_images": "train images",
    "epochs": "epochs",
    "vit": "ViT size",
    "test_images": "test images",
    "lr_finder": "LR-finder steps",
    "saliency": "saliency images per class",
}


@dataclass
class StudyCost:
    """What the estimate of a study under caps needs: the study planned without them (its runs
    as the config and `budget:` make them), its datasets' sizes, the calibration and how many
    jobs run side by side. `costs`: cifarlab.study.estimate.Costs measured here ({}: the specs')."""

    study: Study
    sizes: dict[str, dict[str, int]]
    on_gpu: bool
    costs: dict[str, float]
    factors: dict[str, float]
    parallel: int
    cores: int | None = None
    cheap_jobs: int = 0
    # why a plan on this cost is not kept (placeholder sizes, a failed measurement): [] keeps it
    provisional: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # jobs the planner does not model one by one (download, plots, report, all): start-up only
        self.cheap_jobs = self.study.job_count() - len(self.jobs({}))

    def runs(self, caps: Mapping) -> dict[str, dict]:
        """The study's runs shrunk by `caps` (a whole `budget` mapping; {}: as they are)."""
        if not caps:
            return self.study.runs
        shrunk = {}
        for name, run in self.study.runs.items():
            # a shallow copy: apply_time_caps replaces what it shrinks (the top-level values and a
            # ViT's sizes) instead of editing them, so the study's run is never changed, and the
            # planner's inner loop copies no nested settings it leaves alone
            shrunk[name] = dict(run)
            apply_time_caps(shrunk[name], caps, "plan", swept=list(run.get("sweep") or {}))
        return shrunk

    def jobs(self, caps: Mapping) -> list[estimate.Job]:
        """The heavy jobs of the whole study under `caps`, with their seconds of work (as
        workflow/rules/resources.smk's JOB_SECONDS computes them for the printed estimate)."""
        runs = self.runs(caps)
        finder, saliency = _study_caps(self.study.config, caps)
        gpu, costs = self.on_gpu, self.costs
        jobs = [
            estimate.Job("prepare", d, estimate.prepare_seconds(self.sizes[d])) for d in self.study.datasets
        ]
        users: dict[str, list[dict]] = {}  # features job -> the job settings that read it
        for name, run in runs.items():
            for dataset in run["datasets"]:
                sizes = self.sizes[dataset]
                for seed in run["seeds"]:
                    settings = job_settings(run, dataset, seed)
                    jobs.append(
                        estimate.Job(
                            "train", name, estimate.train_seconds(sizes, settings, on_gpu=gpu, costs=costs)
                        )
                    )
                    jobs.append(
                        estimate.Job(
                            "evaluate",
                            name,
                            estimate.evaluate_seconds(sizes, settings, on_gpu=gpu, costs=costs),
                        )
                    )
                    if uses_cached_features(settings):
                        users.setdefault(settings_hash(features_wildcards(settings)), []).append(settings)
        for pair in self.study.lr_finder_pairs:
            settings = job_settings(runs[pair["run"]], pair["dataset"])
            if uses_cached_features(settings):
                users.setdefault(settings_hash(features_wildcards(settings)), []).append(settings)
            jobs.append(
                estimate.Job(
                    "lr_find",
                    pair["run"],
                    estimate.lr_find_seconds(settings, finder, on_gpu=gpu, costs=costs),
                )
            )
        for pair in self.study.saliency_pairs:
            settings = job_settings(runs[pair["run"]], pair["dataset"])
            sizes = self.sizes[pair["dataset"]]
            jobs.append(
                estimate.Job(
                    "saliency",
                    pair["run"],
                    estimate.saliency_seconds(sizes, settings, saliency, on_gpu=gpu, costs=costs),
                )
            )
        for key, readers in sorted(users.items()):
            first = readers[0]
            seconds = estimate.features_seconds(
                self.sizes[first["dataset"]],
                first["model"],
                first["image_size"],
                on_gpu=gpu,
                costs=costs,
                subsets=features_subsets(readers),
            )
            jobs.append(estimate.Job("features", key, seconds))
        return jobs

    def estimate(self, caps: Mapping) -> estimate.Estimate:
        """The estimate (cifarlab.study.estimate.estimate) of the whole study under `caps`: the
        cheap jobs as a download per dataset, the report and plots (the longest chain's kinds)."""
        kinds = ["download"] * len(self.study.datasets) + ["report"]
        kinds += ["plot_*"] * max(0, self.cheap_jobs - len(kinds))
        cheap = [estimate.Job(kind, str(i), 0.0) for i, kind in enumerate(kinds[: self.cheap_jobs])]
        return estimate.estimate(self.jobs(caps) + cheap, self.factors, self.parallel, self.costs, self.cores)

    def wall(self, caps: Mapping) -> float:
        return self.estimate(caps).wall


def _study_caps(config: dict, caps: Mapping) -> tuple[dict, dict]:
    """The LR finder's and saliency's settings under `caps` (a whole budget mapping, caps_of; the
    config's own when none), capped as the study's `budget:` caps them."""
    study = {"lr_finder": dict(config["lr_finder"]), "saliency": dict(config["saliency"])}
    if caps:
        apply_study_budget(study, caps)
    return study["lr_finder"], study["saliency"]


def largest(cost: StudyCost) -> dict[str, float]:
    """Per dimension, the study's own largest value (seeds, px, train and test images, epochs,
    LR-finder steps, saliency images per class; the ViT: 1), the top of its ladder."""
    runs = list(cost.study.runs.values())

    def images(split: str) -> int:
        return max(estimate.split_images(cost.sizes[d], split, r) for r in runs for d in r["datasets"])

    return {
        "seeds": max(len(r["seeds"]) for r in runs),
        "image_size": max(r["image_size"] for r in runs),
        "train_images": images("train"),
        "epochs": max(r["epochs"] for r in runs),
        "vit": 1,
        "test_images": images("test"),
        "lr_finder": cost.study.config["lr_finder"]["num_iter"],
        "saliency": cost.study.config["saliency"]["images_per_class"],
    }


def ladders(cost: StudyCost) -> dict[str, list]:
    """Per dimension (DIMENSIONS), its notches: cap values below the study's own largest value,
    high to low (a dimension with none is not planned). Floors: 1 seed, 1 epoch, 500 images (and
    10 per class), the largest `min_image_size` of the study's models (at least 32 px)."""
    study, runs, top = cost.study, list(cost.study.runs.values()), largest(cost)

    def below(values: tuple, name: str, floor: float = 0) -> list:
        return [v for v in values if floor <= v < top[name]]

    classes = max(s["classes"] for s in cost.sizes.values())
    image_floor = max([32] + [model_spec(r["model"]).min_image_size for r in runs])
    validation = max(r["validation"] for r in runs)
    found = {
        "seeds": below(SEEDS, "seeds"),
        "image_size": below(IMAGE_SIZES, "image_size", image_floor),
        "train_images": below(TRAIN_IMAGES, "train_images", max(500, validation + 10 * classes)),
        "epochs": below(EPOCHS, "epochs"),
        "vit": list(VIT_STEPS) if any(r["model"] == "vit" for r in runs) else [],
        "test_images": below(TEST_IMAGES, "test_images", max(500, 10 * classes)),
        "lr_finder": below(LR_FINDER_STEPS, "lr_finder") if study.lr_finder_pairs else [],
        "saliency": below(SALIENCY_IMAGES, "saliency") if study.saliency_pairs else [],
    }
    return {name: values for name, values in found.items() if values}


def notch_loss(name: str, notches: Mapping[str, list], top: Mapping[str, float], taken: int) -> float:
    """What taking the next notch of a dimension gives up: the log of its value before over after
    (a ViT step: log 2, about a halving of its cost). Cost grows with each dimension's value, so
    saving per loss shrinks the dimensions evenly (epochs and images both, not one to its floor)."""
    if name == "vit":
        return math.log(2)
    before = top[name] if taken == 0 else notches[name][taken - 1]
    return math.log(before / notches[name][taken])


@functools.cache
def _no_caps() -> dict:
    """The schema's `budget` (no caps), filled once per process (a schema validation: the
    planner asks for caps per trial); never edited (caps_of copies it)."""
    return schema_defaults("budget")


def caps_of(notches: Mapping[str, list], state: Mapping[str, int]) -> dict:
    """A whole `budget` mapping (the schema's, no caps) with each dimension's cap at its notch
    (state: dimension -> notches taken; 0: no cap)."""
    caps = copy.deepcopy(_no_caps())
    keys = {
        "seeds": "max_seeds",
        "image_size": "max_image_size",
        "train_images": "max_train_images",
        "epochs": "max_epochs",
        "test_images": "max_test_images",
    }
    for name, taken in state.items():
        if not taken:
            continue
        value = notches[name][taken - 1]
        if name in keys:
            caps[keys[name]] = value
        elif name == "vit":
            caps["vit"].update(value)
        elif name == "lr_finder":
            caps["lr_finder"]["max_num_iter"] = value
        elif name == "saliency":
            caps["saliency"]["max_images_per_class"] = value
    return caps


class BudgetTooSmall(ConfigError):
    """Not even the smallest plan fits: `minimum` is its estimated wall time (seconds)."""

    def __init__(self, message: str, minimum: float) -> None:
        super().__init__(message)
        self.minimum = minimum


@dataclass
class Plan:
    """A chosen plan: the time budget (as written, and seconds), the notches per dimension, the
    caps they make (a `budget` mapping), the order in which dimensions were first cut, the
    estimated wall time and how many jobs it assumed side by side."""

    budget: str
    seconds: float
    state: dict[str, int]
    caps: dict
    cut_order: list[str]
    wall: float
    parallel: int
    calibrated: bool
    notches: dict[str, list] = field(default_factory=dict)
    config_key: str = ""  # a hash of the config alone (plan_in_use finds the plan by it)


def choose_plan(cost: StudyCost, budget: str) -> Plan:
    """The plan for `budget` (a `time_budget` value): see the module's docstring. Raises
    BudgetTooSmall (a ConfigError naming the smallest budget that fits) before any job."""
    seconds = parse_time_budget(budget)
    notches = ladders(cost)
    state = dict.fromkeys(notches, 0)
    least = cost.estimate(caps_of(notches, {n: len(v) for n, v in notches.items()}))
    smallest = least.wall
    if smallest > seconds:
        enough = _round_up(smallest)
        # a chain of jobs one after another that no number of cores shortens: no "more --cores"
        other = "fewer runs" if least.chain_bound else "fewer runs, or more --cores"
        why = "; its longest chain of jobs, one after another, sets it" if least.chain_bound else ""
        raise BudgetTooSmall(
            f"config error at time_budget: {budget} is too small for this study: its smallest plan "
            f"({smallest_plan_text(notches)}, every run, sweep value, LR-finder and saliency run kept) is "
            f"estimated at {duration(smallest)} wall time here ({cost.parallel} job(s) side by side{why}). "
            f"Give time_budget: {enough} or more (or {other}).",
            smallest,
        )
    cut_order: list[str] = []
    top = largest(cost)
    wall = cost.wall(caps_of(notches, state))
    while wall > seconds:
        trials = []
        for n in notches:
            if state[n] < len(notches[n]):
                trial = cost.wall(caps_of(notches, {**state, n: state[n] + 1}))
                score = (wall - trial) / notch_loss(n, notches, top, state[n])
                last = LAST_RESORT.get(n) == notches[n][state[n]]
                trials.append((last, -score, DIMENSIONS.index(n), n, trial))
        *_, chosen, wall = min(trials)
        state[chosen] += 1
        if chosen not in cut_order:
            cut_order.append(chosen)
    # give back what still fits: the notch that gives back the most per second first
    while True:
        undo = []
        for n in notches:
            if state[n]:
                trial = cost.wall(caps_of(notches, {**state, n: state[n] - 1}))
                if trial <= seconds:
                    gain = notch_loss(n, notches, top, state[n] - 1) / max(trial - wall, 1e-9)
                    last = LAST_RESORT.get(n) == notches[n][state[n] - 1]  # given back first
                    undo.append((not last, -gain, DIMENSIONS.index(n), n, trial))
        if not undo:
            break
        *_, chosen, wall = min(undo)
        state[chosen] -= 1
    cut_order = [n for n in cut_order if state[n]]
    calibrated = bool(cost.costs or cost.factors)
    return Plan(
        budget, seconds, state, caps_of(notches, state), cut_order, wall, cost.parallel, calibrated, notches
    )


def _round_up(seconds: float) -> str:
    """A time_budget value at or above `seconds`: whole minutes (whole seconds below a minute)."""
    if seconds < 60:
        return f"{math.ceil(seconds)}s"
    return f"{math.ceil(seconds / 60)}m"


def smallest_plan_text(notches: Mapping[str, list]) -> str:
    """'1 epochs, 500 train images, ...': the last notch of each dimension, in words."""
    words = []
    for name, values in notches.items():
        value = values[-1]
        if name == "vit":
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        words.append(f"{LABELS[name]} {value}")
    return "; ".join(words)


# --- measuring the model families (first time on a machine and device) -------------------------

# How long the measurement may take before the plan goes on with the specs' figures.
MEASURE_TIMEOUT_SECONDS = 300


def families(study: Study) -> dict[str, dict]:
    """The model families the study trains, each with the settings of its first run: what
    cifarlab.training.calibrate measures (a head on cached features costs what a small CNN does,
    and its backbone is measured for the `features` job)."""
    found: dict[str, dict] = {}
    for run in study.runs.values():
        if uses_cached_features(run):
            found.setdefault("simple_cnn", {**run, "model": "simple_cnn", "model_args": None})
        found.setdefault(run["model"], run)
    return found


def measure_costs(study: Study, models: list[str], cores: int | None = None) -> dict[str, float]:
    """Seconds per 1,000 training images at 32 px of each of `models` on this machine, measured by
    cifarlab.training.calibrate in a subprocess (the workflow layer stays torch-free) with the
    study's device, precision and threads (at most `cores`: Snakemake gives a job no more), and a
    job's start-up seconds (estimate.START_KEY); {} with a warning on stderr if it fails. Raises
    ConfigError when the config's device (cuda, mps) is not on this machine."""
    import subprocess
    import time

    config = study.config
    request = {
        "device": config["device"],
        "precision": config["precision"],
        "threads": estimate.job_threads(config["threads"], cores),
        "runs": {name: settings for name, settings in families(study).items() if name in models},
    }
    try:
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "cifarlab.training.calibrate"],
            input=json.dumps(request, default=str),
            capture_output=True,
            text=True,
            timeout=MEASURE_TIMEOUT_SECONDS,
        )
        if done.returncode == estimate.DEVICE_MISSING_EXIT:
            raise ConfigError(f"config error at device: {done.stderr.strip().splitlines()[-1]}.")
        if done.returncode != 0:
            raise RuntimeError(
                done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode
            )
        measured = {k: float(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
        # a job's start-up: the process less its work, plus Snakemake's own for a job
        measured[estimate.START_KEY] = (
            time.perf_counter() - began - measured.pop("*work") + estimate.SNAKEMAKE_JOB_SECONDS
        )
        return measured
    except ConfigError:
        raise
    except (
        OSError,
        RuntimeError,
        ValueError,
        IndexError,
        KeyError,  # a malformed answer (no "*work"), or not a mapping of numbers
        TypeError,
        AttributeError,
        subprocess.TimeoutExpired,
    ) as error:
        print(
            f"time_budget: measuring the models failed ({error}); planning with the cost model's figures.",
            file=sys.stderr,
        )
        return {}


def study_cost(
    study: Study, root: str | Path, *, machine: str, parallel: int, measure: bool, cores: int | None = None
) -> StudyCost:
    """The StudyCost of a study on this machine: the costs measured here (measured now, for the
    families without one, when `measure`), the factors remembered beside them."""
    config = study.config
    calibration = Path(root) / estimate.CALIBRATION_FILE
    found = estimate.machine_calibration(estimate.read_calibration(calibration), machine, config, cores)
    missing = sorted(set(families(study)) - set(found.costs))
    provisional = []
    if measure and missing:
        measured = measure_costs(study, missing, cores)
        if measured:
            # merged into the file as it is after the measurement (seconds: another study may
            # have written it meanwhile), which remember_costs reads and gives back
            known = estimate.remember_costs(calibration, found.key, measured)
            found = estimate.machine_calibration(known, machine, config, cores)
        else:
            provisional.append("measuring the models failed: planned with the specs' figures")
    costs, factors = found.costs, found.factors
    sizes = {}
    for name, settings in study.datasets.items():
        cache = str(Path(root) / paths.fill(paths.SIZES_CACHE, dataset=name))
        sizes[name] = known_sizes(settings, cache=cache)
        if sizes[name] is None:
            sizes[name] = dict(UNKNOWN_SIZES)
            provisional.append(f"the sizes of dataset {name!r} are not known yet (its source is not fetched)")
    gpu = estimate.on_gpu(config["device"])
    return StudyCost(study, sizes, gpu, costs, factors, parallel, cores, provisional=provisional)


# --- the plan of a study, kept ------------------------------------------------------------------


def plan_study(
    config: dict,
    root: str | Path = ".",
    *,
    machine: str,
    parallel: int,
    measure: bool = True,
    cores: int | None = None,
    main: bool = True,
    in_use: bool = True,
) -> tuple[Study, Plan | None]:
    """The study of `config` (Study.from_config), planned to fit its `time_budget` (None: no plan).

    The plan is kept in PLANS_FOLDER under a hash of the validated config (time_budget included),
    the machine, `parallel` and `cores` (estimate.estimate's parallel and light_parallel): a
    later call reads it back and plans the same study (calibration moves after every run; a
    replanned study would rerun). measure: whether models without a
    cost measured here are measured now (cifarlab.training.calibrate; not on a cluster).
    main: the main Snakemake process (it plans); False: a cluster job's own Snakemake, which
    parses the workflow again on its node with other --cores: it reads the plan in use
    (plan_in_use) and never plans (no plan in use: a ConfigError). in_use: whether the plan
    becomes the one in use now (use_plan; the workflow does so when the run starts, in its
    `onstart`, so that a dry run with other --cores does not).
    """
    check_config(config)  # the config the plans are kept by (the study is validated once below)
    if config["time_budget"] is None:
        return Study.from_config(config, root, checked=True), None
    config_key = settings_hash({"config": config})
    if not main:
        plan = plan_in_use(root, config_key)
        if plan is None:
            raise ConfigError(
                f"config error at time_budget: no plan in use for this config in {Path(root) / PLANS_FOLDER} "
                "(a cluster job reads the plan its main Snakemake made). Run the workflow from this "
                "folder (not a job alone), with the same config."
            )
        return Study.from_config(config, root, time_caps=plan.caps, checked=True), plan
    key = settings_hash({"config": config, "machine": machine, "parallel": parallel, "cores": cores})
    path = Path(root) / PLANS_FOLDER / f"{key}.json"
    plan = load_plan(path)
    if plan is None:
        study = Study.from_config(config, root, checked=True)  # as planned without caps: their cost
        cost = study_cost(study, root, machine=machine, parallel=parallel, measure=measure, cores=cores)
        plan = choose_plan(cost, str(config["time_budget"]))
        plan.config_key = config_key
        if cost.provisional:  # planned again next time, when it knows better
            print(
                f"time_budget: this plan is not kept ({'; '.join(cost.provisional)}); the next call "
                "plans again.",
                file=sys.stderr,
            )
        else:
            write_json(vars(plan), path, indent=1)
    if in_use:
        use_plan(root, plan)
    return Study.from_config(config, root, time_caps=plan.caps, checked=True), plan


def in_use_pointer(root: str | Path, config_key: str) -> Path:
    """The copy of the plan of a config (its Plan.config_key) that a run of the main Snakemake
    process uses now (use_plan): cluster jobs and `status` read this one, not the newest."""
    return Path(root) / PLANS_FOLDER / f"current-{config_key}.json"


def use_plan(root: str | Path, plan: Plan) -> None:
    """Make `plan` the one in use for its config (in_use_pointer), written atomically."""
    write_json(vars(plan), in_use_pointer(root, plan.config_key), indent=1)


def plan_in_use(root: str | Path, config_key: str) -> Plan | None:
    """The plan of a config that the main process uses (use_plan), None if there is none."""
    plan = load_plan(in_use_pointer(root, config_key))
    return plan if plan is not None and plan.config_key == config_key else None


def kept_study(config: dict, root: str | Path) -> Study:
    """The study of `config` as the workflow plans it (the plan in use: the one the main
    Snakemake process last loaded or made, whatever --cores a dry run had since): `python -m
    cifarlab status` sees the runs that train. Without a time budget, or before any plan:
    Study.from_config."""
    check_config(config)  # the config the plan in use is found by (the study is validated once)
    plan = None if config["time_budget"] is None else plan_in_use(root, settings_hash({"config": config}))
    return Study.from_config(config, root, time_caps=None if plan is None else plan.caps, checked=True)


def load_plan(path: str | Path) -> Plan | None:
    """The plan kept at `path`, None if there is none (or it is unreadable: planned again)."""
    try:
        with open(path) as f:
            return Plan(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def format_plan(plan: Plan, study: Study) -> str:
    """The lines printed before the first job: the budget against the estimate, what was cut
    (costliest first) and each run as planned."""
    source = "calibrated on this machine" if plan.calibrated else "uncalibrated cost model"
    lines = [
        f"Time budget {plan.budget} ({duration(plan.seconds)}): planned to {duration(plan.wall)} wall time "
        f"({plan.parallel} job(s) side by side; {source})."
    ]
    if plan.cut_order:
        cuts = []
        for name in plan.cut_order:
            value = plan.notches[name][plan.state[name] - 1]
            if name == "vit":
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            cuts.append(f"{LABELS[name]} <= {value}" if name != "vit" else f"ViT ({value})")
        lines.append("Time budget: cut, costliest first: " + "; ".join(cuts) + ".")
        for name, value in LAST_RESORT.items():
            if plan.state.get(name) and plan.notches[name][plan.state[name] - 1] == value:
                lines.append(
                    f"Time budget: last resort: {LABELS[name]} cut to {value}; {LAST_RESORT_COST[name]}."
                )
    else:
        lines.append("Time budget: the study fits as it is; nothing cut.")
    head = (
        "run",
        "epochs",
        "train images",
        "px",
        "seeds",
        "ViT (dim/depth/patch)",
        "cut by the budget (before)",
    )
    lines.append("  {:<28} {:>6} {:>12} {:>4} {:>5}  {:<21}  {}".format(*head))
    for name, run in study.runs.items():
        trained = "all" if run["train_subset"] is None else f"{run['train_subset']:,}"
        cut = (run.get("time_budget") or {}).get("cut", {})
        vit = run.get("vit") if run["model"] == "vit" else None
        size = f"{vit['dim']}/{vit['depth']}/{vit['patch_size']}" if vit else "-"
        shown = ", ".join(f"{k} {_short(v)}" for k, v in cut.items()) or "-"
        row = (name, run["epochs"], trained, run["image_size"], len(run["seeds"]), size, shown)
        lines.append("  {:<28} {:>6} {:>12} {:>4} {:>5}  {:<21}  {}".format(*row))
    return "\n".join(lines)


def _short(value: object) -> str:
    if value is None:
        return "all"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {v}" for k, v in value.items()) + "}"
    return f"{value:,}" if isinstance(value, int) else str(value)
