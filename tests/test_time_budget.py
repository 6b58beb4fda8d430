"""`time_budget`: parsing, the planner on made-up costs, the kept plan, the report's note, and
the demo study planned through Snakemake (a dry run; timing the real study is a benchmark:
benchmarks/time_budget.py)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cifarlab.config.budgets import apply_time_caps, parse_time_budget
from cifarlab.config.schema import ConfigError
from cifarlab.report.tables import time_budget_cuts
from cifarlab.study import estimate, time_plan
from cifarlab.study.plan import Study
from cifarlab.study.status import load_config

ROOT = Path(__file__).resolve().parent.parent
# made-up costs: seconds per 1,000 images at 32 px per family, and a job's start-up
COSTS = {
    "simple_cnn": 1.0,
    "dropout_cnn": 4.0,
    "vgg16": 30.0,
    "resnet18": 10.0,
    "vit": 30.0,
    "airbench": 4.0,
    estimate.START_KEY: 2.0,
}


def demo_config(*overrides: str) -> dict:
    return load_config(["config/demo.yaml"], list(overrides), ROOT)


def demo_cost(tmp_path: Path, parallel: int = 2) -> time_plan.StudyCost:
    """The demo study (pretrained off, CIFAR-10's sizes) costed with COSTS."""
    study = Study.from_config(demo_config(), tmp_path)
    sizes = {name: {"train": 50000, "test": 10000, "classes": 10} for name in study.datasets}
    return time_plan.StudyCost(study, sizes, False, dict(COSTS), {}, parallel)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), ("90s", 90.0), ("20m", 1200.0), ("1h", 3600.0), ("1.5h", 5400.0), (2.5, 2.5)],
)
def test_time_budget_forms(value, seconds):
    assert parse_time_budget(value) == seconds


@pytest.mark.parametrize("value", ["soon", "20d", "0", "-5m", "m", True, [20]])
def test_a_bad_time_budget_names_the_accepted_forms(value):
    with pytest.raises(ValueError, match=r"20m.*1h"):
        parse_time_budget(value)


@pytest.mark.parametrize("value", ["soon", "20d", "0", "-5m"])
def test_a_bad_time_budget_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"config error at time_budget: .*90s"):
        Study.from_config(demo_config(f"time_budget={value}"))


def test_no_time_budget_is_no_plan(tmp_path):
    config = demo_config()
    assert config.get("time_budget") is None
    study, plan = time_plan.plan_study(config, tmp_path, machine="m", parallel=1, measure=False)
    assert plan is None and not any("time_budget" in (r.get("budget") or {}) for r in study.runs.values())


def kept_plans(root: Path) -> list[Path]:
    """The plans kept under `root` (not the copies of those in use)."""
    return [p for p in (root / time_plan.PLANS_FOLDER).glob("*.json") if not p.name.startswith("current-")]


def shrunk_runs(cost: time_plan.StudyCost, plan: time_plan.Plan) -> dict[str, dict]:
    return cost.runs(plan.caps)


def never_raised(before: dict, after: dict) -> bool:
    """Every size of `after` at most `before`'s (a null subset is all images)."""
    big = 10**9
    for key in ("epochs", "image_size", "batch_size"):
        if after[key] > before[key]:
            return False
    for key in ("train_subset", "test_subset"):
        if (after[key] or big) > (before[key] or big):
            return False
    if len(after["seeds"]) > len(before["seeds"]) or after["seeds"] != before["seeds"][: len(after["seeds"])]:
        return False
    if after["model"] == "vit":
        if after["vit"]["patch_size"] < before["vit"]["patch_size"]:
            return False
        return all(after["vit"][k] <= before["vit"][k] for k in ("dim", "depth", "heads", "mlp_dim"))
    return True


@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.2])
def test_the_plan_fits_keeps_every_run_and_raises_nothing(tmp_path, fraction):
    cost = demo_cost(tmp_path)
    full = cost.wall({})
    plan = time_plan.choose_plan(cost, f"{full * fraction:.0f}s")
    assert plan.wall <= plan.seconds
    assert cost.wall(plan.caps) == pytest.approx(plan.wall)
    after = shrunk_runs(cost, plan)
    assert list(after) == list(cost.study.runs)  # every run, sweep values included
    for name, run in after.items():
        assert never_raised(cost.study.runs[name], run), name
        assert len(run["seeds"]) >= 1 and run["epochs"] >= 1
    # the LR finder and saliency jobs are all still there
    kinds = [job.kind for job in cost.jobs(plan.caps)]
    assert kinds.count("lr_find") == len(cost.study.lr_finder_pairs) and kinds.count("saliency") == len(
        cost.study.saliency_pairs
    )
    assert plan.cut_order, "a budget below the study's estimate cuts something"


def test_a_budget_above_the_estimate_cuts_nothing(tmp_path):
    cost = demo_cost(tmp_path)
    plan = time_plan.choose_plan(cost, f"{cost.wall({}) * 1.1:.0f}s")
    assert plan.cut_order == [] and shrunk_runs(cost, plan) == cost.study.runs


def test_the_costliest_dimension_is_cut_first(tmp_path):
    """Just under the study's estimate one notch is enough: the one that saves the most time
    for what it gives up (time_plan.notch_loss)."""
    cost = demo_cost(tmp_path)
    full = cost.wall({})
    notches, top = time_plan.ladders(cost), time_plan.largest(cost)
    savings = {
        name: (full - cost.wall(time_plan.caps_of(notches, {name: 1})))
        / time_plan.notch_loss(name, notches, top, 0)
        for name in notches
    }
    costliest = max(savings, key=savings.get)
    assert savings[costliest] > 0 and len(set(savings.values())) > 1
    plan = time_plan.choose_plan(cost, f"{full - 1:.0f}s")
    assert plan.cut_order == [costliest] and plan.state[costliest] == 1


def test_a_budget_too_small_names_the_smallest_that_fits(tmp_path):
    cost = demo_cost(tmp_path)
    with pytest.raises(time_plan.BudgetTooSmall, match=r"Give time_budget: (\d+)m or more") as error:
        time_plan.choose_plan(cost, "5s")
    enough = re.search(r"Give time_budget: (\w+) or more", str(error.value)).group(1)
    plan = time_plan.choose_plan(cost, enough)
    assert plan.wall <= plan.seconds


def test_more_cores_plan_a_larger_study(tmp_path):
    one, four = demo_cost(tmp_path, parallel=1), demo_cost(tmp_path, parallel=4)
    budget = f"{one.wall({}) * 0.3:.0f}s"
    small, large = time_plan.choose_plan(one, budget), time_plan.choose_plan(four, budget)
    assert sum(small.state.values()) > sum(large.state.values())


def test_time_caps_record_what_they_cut_and_keep_the_budgets_record():
    run = {
        "model": "simple_cnn",
        "epochs": 8,
        "warmup_epochs": 0,
        "seeds": [0, 1, 2],
        "seed": 0,
        "train_subset": None,
        "test_subset": 500,
        "image_size": 32,
        "batch_size": 64,
        "budget": {"epochs": 20},
    }
    caps = copy.deepcopy(time_plan.caps_of({}, {}))
    caps.update(max_epochs=3, max_seeds=1, max_train_images=1000, max_test_images=2000)
    cut = apply_time_caps(run, caps, "20m")
    assert cut == {"epochs": 8, "train_subset": None, "seeds": 3}
    assert (run["epochs"], run["train_subset"], run["test_subset"], run["seeds"]) == (3, 1000, 500, [0])
    # the lab's value stays the one before any budget; the time plan's record apart (evaluation's)
    assert run["budget"]["epochs"] == 20 and run["budget"]["train_subset"] is None
    assert "time_budget" not in run["budget"]
    assert run["time_budget"] == {"limit": "20m", "cut": cut, "seeds": 1}
    (note,) = time_budget_cuts(run, run["time_budget"])
    assert note == "cut by time_budget 20m: epochs 8 -> 3, train_subset all -> 1,000, seeds 3 -> 1"


def test_the_plan_is_kept_and_a_new_budget_replans(tmp_path):
    config = demo_config("time_budget=40m")
    first_study, first = time_plan.plan_study(
        copy.deepcopy(config), tmp_path, machine="m", parallel=1, measure=False
    )
    kept = kept_plans(tmp_path)
    assert len(kept) == 1
    # calibration moves after a run (factors remembered): the kept plan still wins
    estimate.remember_factors(tmp_path / estimate.CALIBRATION_FILE, "m", {"train": 2.0, "*": 2.0})
    again_study, again = time_plan.plan_study(
        copy.deepcopy(config), tmp_path, machine="m", parallel=1, measure=False
    )
    assert again.caps == first.caps and again_study.runs == first_study.runs
    # a cluster job's own Snakemake (other --cores, another node) and `status` read that plan
    _, remote = time_plan.plan_study(
        copy.deepcopy(config), tmp_path, machine="node7", parallel=8, measure=False, main=False
    )
    assert remote.caps == first.caps
    assert time_plan.kept_study(copy.deepcopy(config), tmp_path).runs == first_study.runs
    # a new budget is a new plan
    _, other = time_plan.plan_study(
        demo_config("time_budget=10h"), tmp_path, machine="m", parallel=1, measure=False
    )
    assert len(kept_plans(tmp_path)) == 2 and other.budget == "10h"


# a study's settings for its calibration key: device and precision auto, one thread per job
AUTO = {"device": "auto", "precision": "auto", "threads": 1}


def test_costs_measured_later_reset_the_factors_they_would_double(tmp_path):
    path = tmp_path / "calibration.json"
    estimate.remember_factors(path, "m", {"train": 0.2})
    key = estimate.calibration_key("m", "auto", "auto")
    assert estimate.machine_calibration(estimate.read_calibration(path), "m", AUTO, 1).factors_key == "m"
    estimate.remember_costs(path, key, {"simple_cnn": 0.3, estimate.START_KEY: 4.0})
    assert estimate.machine_calibration(estimate.read_calibration(path), "m", AUTO, 1).factors_key == key
    assert (
        estimate.remembered_factors(estimate.read_calibration(path), key) == {}
    )  # relative to the measured costs: none yet
    estimate.remember_factors(path, key, {"train": 0.9})
    assert estimate.remembered_factors(estimate.read_calibration(path), key) == {"train": 0.9}
    assert estimate.remembered_factors(estimate.read_calibration(path), "m") == {
        "train": 0.2
    }  # the specs' basis, kept apart
    assert estimate.job_start(estimate.remembered_costs(estimate.read_calibration(path), key)) == 4.0
    estimate.remember_costs(path, key, {"vit": 20.0})  # a new family: a new basis
    assert estimate.remembered_factors(estimate.read_calibration(path), key) == {}


def test_measuring_the_families_takes_seconds_and_names_each(tmp_path):
    """cifarlab.training.calibrate in its subprocess, on the demo's families (a tiny request)."""
    study = Study.from_config(demo_config("threads=1"), tmp_path)
    measured = time_plan.measure_costs(study, ["simple_cnn", "airbench"])
    assert set(measured) == {"simple_cnn", "airbench", estimate.START_KEY}
    assert all(0 < seconds < 1000 for seconds in measured.values())


def wall_seconds(text: str) -> float:
    """The seconds of an estimate's 'N s' / 'N min' / 'N h' (cifarlab.core.progress.duration)."""
    number, unit = text.split()
    return float(number) * {"s": 1, "min": 60, "h": 3600}[unit]


@pytest.mark.slow
def test_the_demo_planned_in_a_dry_run_fits_its_budget(tmp_path):
    """A dry run measures the families, names the smallest budget, then plans one that fits:
    the plan and Snakemake's estimate, both printed, at most the budget; a second call keeps it."""
    from test_workflow_e2e import copy_workflow

    workdir = copy_workflow(tmp_path)

    def dry(budget: str) -> str:
        args = ["-n", "--cores", "2", "--configfile", "config/demo.yaml", "--config", f"time_budget={budget}"]
        done = subprocess.run(
            [sys.executable, "-m", "snakemake", *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return done.stdout + done.stderr

    too_small = dry("5s")
    enough = re.search(r"Give time_budget: (\w+) or more", too_small).group(1)
    assert "rule train" not in too_small
    seconds = parse_time_budget(enough)
    out = dry(enough)
    planned = re.search(r"planned to ([\d.]+ (?:s|min|h)) wall time", out).group(1)
    printed = re.search(r"Estimate: ([\d.]+ (?:s|min|h)) wall time", out).group(1)
    assert wall_seconds(planned) <= seconds and wall_seconds(printed) <= seconds * 1.05, out[-3000:]
    assert "cut, costliest first" in out and "costs measured on this machine" in out
    assert dry(enough).count("Time budget") == out.count("Time budget")
    assert len(kept_plans(workdir)) == 1


def test_light_jobs_run_over_all_cores():
    """Plots and the report (no modelled work, one thread each) run --cores side by side."""
    jobs = [
        estimate.Job("train", "a", 100.0),
        estimate.Job("plot_*", "b", 0.0),
        estimate.Job("plot_*", "c", 0.0),
    ]
    costs = {estimate.START_KEY: 10.0}
    heavy_only = estimate.estimate(jobs, {}, 1, costs)
    light_spread = estimate.estimate(jobs, {}, 1, costs, light_parallel=2)
    assert heavy_only.wall == pytest.approx(130.0) and light_spread.wall == pytest.approx(110.0 + 20.0 / 2)
    assert light_spread.total == heavy_only.total == pytest.approx(130.0)


def test_the_not_comparable_note_says_what_the_time_budget_cut():
    from cifarlab.report.tables import budget_differences

    settings = {"epochs": 3, "train_subset": 5000, "image_size": 32, "batch_size": 32}
    settings["budget"] = {"epochs": 20, "train_subset": None}
    record = {"limit": "20m", "cut": {"epochs": 20, "train_subset": None, "seeds": 3}, "seeds": 1}
    metrics = {"epochs": 3, "train_images": 5000, "image_size": 32, "pretrained": False, "settings": settings}
    metrics["time_budget"] = record
    lab = {"epochs": 20, "train_images": 50000, "image_size": 32, "pretrained": False}
    assert budget_differences(metrics, lab) == [
        "3 of 20 epochs",
        "5,000 of 50,000 images",
        "cut by time_budget 20m: epochs 20 -> 3, train_subset all -> 5,000, seeds 3 -> 1",
    ]


def test_many_cores_never_plan_below_the_longest_chain_of_jobs(tmp_path):
    """With more cores than jobs, the wall time is the longest chain of dependent jobs (prepare,
    features, train, evaluate, a plot, the report), not the jobs' seconds spread over the cores."""
    cost = demo_cost(tmp_path, parallel=64)
    jobs = cost.jobs({})
    result = cost.estimate({})
    start = COSTS[estimate.START_KEY]
    longest_train = max(job.seconds for job in jobs if job.kind in ("train", "lr_find")) + start
    assert result.chain >= longest_train and result.wall >= result.chain and result.chain_bound
    assert result.wall > result.total / 64  # perfect spreading would promise less
    plan = time_plan.choose_plan(cost, f"{result.wall * 0.5:.0f}s")
    shrunk = time_plan.StudyCost(cost.study, cost.sizes, False, dict(COSTS), {}, 64).estimate(plan.caps)
    assert shrunk.wall <= plan.seconds and shrunk.chain <= plan.seconds
    # too small for the chain: the message does not ask for more cores
    with pytest.raises(time_plan.BudgetTooSmall) as error:
        time_plan.choose_plan(cost, "5s")
    assert "--cores" not in str(error.value) and "longest chain" in str(error.value)
    assert "more --cores would not shorten it" in estimate.format_estimate(result)


def test_the_printed_estimate_waits_for_the_longest_chain():
    jobs = [estimate.Job("train", str(i), 100.0) for i in range(4)] + [estimate.Job("train", "big", 1000.0)]
    jobs += [estimate.Job("evaluate", "big", 50.0), estimate.Job("report", "", 0.0)]
    result = estimate.estimate(jobs, {}, 32, {estimate.START_KEY: 1.0}, light_parallel=32)
    assert result.wall == pytest.approx(1001.0 + 51.0 + 1.0) and result.chain_bound


def test_cluster_jobs_and_status_read_the_plan_in_use_not_the_newest(tmp_path):
    """A dry run with other --cores writes a newer plan; the run's own (in use) stays the one
    that cluster jobs and `status` read; a cluster job with no plan in use stops, it never plans."""
    config = demo_config("time_budget=25m")
    with pytest.raises(ConfigError, match="no plan in use"):
        time_plan.plan_study(
            copy.deepcopy(config), tmp_path, machine="n", parallel=4, measure=False, main=False
        )
    assert not (tmp_path / time_plan.PLANS_FOLDER).exists()  # nothing planned
    used_study, used = time_plan.plan_study(
        copy.deepcopy(config), tmp_path, machine="m", parallel=4, cores=4, measure=False
    )
    # a later dry run (in_use=False, as the workflow plans before onstart) with one core
    _, newer = time_plan.plan_study(
        copy.deepcopy(config), tmp_path, machine="m", parallel=1, cores=1, measure=False, in_use=False
    )
    assert newer.caps != used.caps  # else the test shows nothing
    _, remote = time_plan.plan_study(
        copy.deepcopy(config), tmp_path, machine="n", parallel=8, measure=False, main=False
    )
    assert remote.caps == used.caps
    assert time_plan.kept_study(copy.deepcopy(config), tmp_path).runs == used_study.runs


def test_the_same_caps_and_fewer_seeds_retrain_nothing(tmp_path):
    """Training's params hold the capped settings alone: budgets whose plans have the same caps
    train the same models, and cutting seeds leaves the seeds kept as they were; the record of
    the time budget goes to the evaluate step (its params, metrics.json's `time_budget`)."""
    caps = copy.deepcopy(time_plan.caps_of({}, {}))
    caps.update(max_epochs=2, max_train_images=1000)
    fewer = {**copy.deepcopy(caps), "max_seeds": 2}
    config = demo_config()  # simple_cnn-sgd: 3 seeds
    studies = {}
    for limit, chosen in (("5m", caps), ("300", caps), ("5.1m", caps), ("4m", fewer)):
        studies[limit] = Study.from_config({**copy.deepcopy(config), "time_budget": limit}, tmp_path, chosen)
    job = {"dataset": "synthetic", "run": "simple_cnn-sgd", "seed": "0"}
    trained = {limit: study.run_settings(job) for limit, study in studies.items()}
    assert trained["5m"] == trained["300"] == trained["5.1m"] == trained["4m"]
    assert "time_budget" not in trained["5m"] and trained["5m"]["epochs"] == 2
    assert studies["4m"].seeds("synthetic", "simple_cnn-sgd") == [0, 1]
    finder = {limit: study.lr_finder_params(job) for limit, study in studies.items()}
    assert finder["5m"] == finder["4m"]
    evaluation = studies["4m"].evaluation_settings(job)
    assert evaluation["time_budget"]["limit"] == "4m" and evaluation["time_budget"]["seeds"] == 2
    assert evaluation["time_budget"]["cut"]["seeds"] == 3
    assert "time_budget" not in Study.from_config(copy.deepcopy(config), tmp_path).evaluation_settings(job)


def test_two_seeds_and_every_sweep_value_stay_unless_nothing_else_is_left(tmp_path):
    """Runs that asked for several seeds keep two (one only as the last resort, which the plan
    prints), and a setting a sweep varies is not capped in its runs (the others' are): they
    stay different runs."""
    config = demo_config()
    config["runs"]["subsets"] = {
        "model": "simple_cnn",
        "lr": 0.01,
        "sweep": {"train_subset": [2000, 10000, 40000]},
    }
    study = Study.from_config(config, tmp_path)
    sizes = {name: {"train": 50000, "test": 10000, "classes": 10} for name in study.datasets}
    cost = time_plan.StudyCost(study, sizes, False, dict(COSTS), {}, 2)
    notches = time_plan.ladders(cost)
    assert notches["seeds"] == [2, 1]
    smallest = cost.wall(time_plan.caps_of(notches, {n: len(v) for n, v in notches.items()}))
    seeds_too = None
    for fraction in (0.6, 0.3, 0.15):
        budget = max(smallest * 1.01, cost.wall({}) * fraction)
        plan = time_plan.choose_plan(cost, f"{budget:.0f}s")
        runs = cost.runs(plan.caps)
        assert [runs[n]["train_subset"] for n in runs if n.startswith("subsets")] == [2000, 10000, 40000]
        if plan.caps["max_train_images"] is not None:  # the other runs are capped
            assert runs["simple_cnn-sgd"]["train_subset"] == plan.caps["max_train_images"]
        if plan.caps["max_seeds"] == 1:  # only where 2 seeds fit with nothing else left to cut
            floors = {n: len(v) for n, v in notches.items()}
            assert cost.wall(time_plan.caps_of(notches, {**floors, "seeds": 1})) > plan.seconds
            seeds_too = plan
        else:
            assert len(runs["simple_cnn-sgd"]["seeds"]) >= 2
    last = time_plan.choose_plan(cost, f"{smallest * 1.001:.0f}s")
    assert last.caps["max_seeds"] == 1 or seeds_too is None
    if last.caps["max_seeds"] == 1:
        assert "last resort: seeds cut to 1" in time_plan.format_plan(last, study)


def test_a_plan_on_placeholder_sizes_or_a_failed_measurement_is_not_kept(tmp_path, monkeypatch, capsys):
    """Unknown dataset sizes (the source not fetched yet) or a failed measurement plan this call
    only: nothing kept, a note says so, and the next call, knowing better, plans and keeps."""
    config = demo_config("time_budget=40m")
    monkeypatch.setattr(time_plan, "known_sizes", lambda settings, cache=None: None)
    _, plan = time_plan.plan_study(copy.deepcopy(config), tmp_path, machine="m", parallel=1, measure=False)
    assert plan is not None and kept_plans(tmp_path) == []
    assert "not kept (the sizes of dataset 'synthetic' are not known yet" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(time_plan, "measure_costs", lambda study, models, cores=None: {})
    time_plan.plan_study(copy.deepcopy(config), tmp_path, machine="m", parallel=1, measure=True)
    assert kept_plans(tmp_path) == [] and "measuring the models failed" in capsys.readouterr().err
    time_plan.plan_study(copy.deepcopy(config), tmp_path, machine="m", parallel=1, measure=False)
    assert len(kept_plans(tmp_path)) == 1


def test_a_device_the_machine_lacks_is_a_config_error_when_planning(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    study = Study.from_config(demo_config("threads=1", "device=cuda"), tmp_path)
    with pytest.raises(ConfigError, match=r"config error at device: .*cuda"):
        time_plan.measure_costs(study, ["simple_cnn"])


def test_a_cut_is_reported_once_and_a_malformed_measurement_falls_back(tmp_path, monkeypatch):
    from cifarlab.report.tables import budget_differences

    settings = {"epochs": 3, "train_subset": 5000, "test_subset": 5000, "image_size": 32, "batch_size": 32}
    settings["budget"] = {"test_subset": None}
    metrics = {"epochs": 3, "train_images": 5000, "image_size": 32, "pretrained": False, "settings": settings}
    metrics["time_budget"] = {"limit": "15m", "cut": {"test_subset": None}, "seeds": 2}
    lab = {"epochs": 3, "train_images": 5000, "image_size": 32, "pretrained": False}
    assert budget_differences(metrics, lab) == ["cut by time_budget 15m: test_subset all -> 5,000"]
    # a calibration subprocess that answers nonsense, and a calibration file with a bad entry
    study = Study.from_config(demo_config("threads=1"), tmp_path)
    for answer in ("[1, 2]", '{"simple_cnn": 1.0}', '{"simple_cnn": null, "*work": 1}'):
        done = subprocess.CompletedProcess([], 0, stdout=answer, stderr="")
        monkeypatch.setattr(subprocess, "run", lambda *a, done=done, **k: done)
        assert time_plan.measure_costs(study, ["simple_cnn"]) == {}
    path = tmp_path / "calibration.json"
    path.write_text('{"m cpu auto 1t": {"costs": {"simple_cnn": [1]}}}')
    assert estimate.remembered_costs(estimate.read_calibration(path), "m cpu auto 1t") == {}
    estimate.remember_costs(path, "m cpu auto 1t", {"simple_cnn": 2.0})
    assert estimate.remembered_costs(estimate.read_calibration(path), "m cpu auto 1t") == {"simple_cnn": 2.0}


def test_a_kept_plan_validates_the_study_once_and_a_plan_reads_the_calibration_once(tmp_path, monkeypatch):
    """Planning repeats no work: a kept plan checks the config and expands the runs once (the
    capped study), and a new plan reads the calibration file once (measure=False)."""
    from cifarlab.config import validate

    counts: dict[str, int] = {}

    def counted(module, name):
        function = getattr(module, name)

        def wrapper(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return function(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for name in ("check_schema", "expand_runs"):
        counted(validate, name)
    counted(estimate, "read_calibration")
    config = demo_config("time_budget=40m")
    first_study, first = time_plan.plan_study(
        copy.deepcopy(config), tmp_path, machine="m", parallel=1, measure=False
    )
    # planned: checked once, the runs expanded without caps (their cost) and with the plan's
    assert counts == {"check_schema": 1, "expand_runs": 2, "read_calibration": 1}
    counts.clear()
    again_study, again = time_plan.plan_study(
        copy.deepcopy(config), tmp_path, machine="m", parallel=1, measure=False
    )
    assert counts == {"check_schema": 1, "expand_runs": 1}  # kept: the study validated once
    assert vars(again) == vars(first) and again_study.runs == first_study.runs
    counts.clear()
    assert time_plan.kept_study(copy.deepcopy(config), tmp_path).runs == first_study.runs
    assert counts == {"check_schema": 1, "expand_runs": 1}


def test_the_planner_and_the_estimate_share_one_calibration_key(tmp_path):
    """job_calibration_key: the config's threads, at most --cores; machine_calibration finds the
    costs under it and the factors beside them (else the machine's own)."""
    config = demo_config()  # threads: 2
    assert estimate.job_calibration_key("m", config, None) == estimate.calibration_key("m", "auto", "auto", 2)
    assert estimate.job_calibration_key("m", config, 1) == "m auto auto 1t"
    path = tmp_path / "calibration.json"
    estimate.remember_factors(path, "m", {"train": 0.2})
    found = estimate.machine_calibration(estimate.read_calibration(path), "m", config, 1)
    assert (found.costs, found.factors_key, found.factors) == ({}, "m", {"train": 0.2})
    known = estimate.remember_costs(path, "m auto auto 1t", {"simple_cnn": 0.3})
    assert known == estimate.read_calibration(path)
    estimate.remember_factors(path, "m auto auto 1t", {"train": 0.9})
    found = estimate.machine_calibration(estimate.read_calibration(path), "m", config, 1)
    assert (found.key, found.costs, found.factors) == ("m auto auto 1t", {"simple_cnn": 0.3}, {"train": 0.9})
    assert found.factors_key == "m auto auto 1t"  # beside the costs measured under its key
