"""The LR range test: its suggestion on a problem whose good lrs are known, divergence, restoring state."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from snakemake.utils import update_config

from cifarlab.analysis import lr_finder
from cifarlab.config.validate import validate_config
from cifarlab.plots import lr_finder as lr_finder_figure

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    """These problems are tiny: extra threads only add synchronisation on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- A convex problem: softmax regression on overlapping Gaussian classes ------------------------
# The classes overlap (not separable), so the loss has a finite optimum and large lrs overshoot it.
DIM, CLASSES, SAMPLES = 16, 4, 2048
BATCH, STEPS = 32, 200  # the sweep's budget, also the budget that defines a "good" lr


def blobs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x float32 SAMPLES x DIM, y int64 SAMPLES): class means 0.3 sd apart per dimension."""
    g = torch.Generator().manual_seed(seed)
    means = 0.3 * torch.randn(CLASSES, DIM, generator=g)
    y = torch.randint(CLASSES, (SAMPLES,), generator=g)
    return means[y] + torch.randn(SAMPLES, DIM, generator=g), y


def batch_stream(x: torch.Tensor, y: torch.Tensor, seed: int):
    """next_batch() over shuffled epochs, the order fixed by `seed`."""
    g = torch.Generator().manual_seed(seed)

    def epochs():
        while True:
            order = torch.randperm(len(y), generator=g)
            for i in range(0, len(y) - BATCH + 1, BATCH):
                yield x[order[i : i + BATCH]], y[order[i : i + BATCH]]

    stream = epochs()
    return lambda: next(stream)


def make_optimizer(name: str, model: torch.nn.Module, lr: float = 1.0) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr)
    return torch.optim.Adam(model.parameters(), lr=lr)


def good_lr_range(x, y, optimizer: str, seed: int) -> tuple[float, float]:
    """The lowest and highest lr on a grid (4 per decade) whose constant-lr training for STEPS
    mini-batches ends within 5% of the best final full-data loss of the grid.

    All grid points train at once, one param group each (same initial weights and batch order):
    the problems are independent, so the summed loss gives each its own gradient.
    """
    grid = 10 ** np.arange(-4, 1.01, 0.25)
    models = []
    for _ in grid:
        torch.manual_seed(seed)
        models.append(torch.nn.Linear(DIM, CLASSES))
    opt = make_optimizer(optimizer, models[0])
    opt.param_groups.clear()
    for model, lr in zip(models, grid, strict=True):
        opt.add_param_group({"params": list(model.parameters()), "lr": float(lr)})

    def losses(inputs, targets):
        weight = torch.stack([m.weight for m in models])  # G x CLASSES x DIM
        bias = torch.stack([m.bias for m in models])  # G x CLASSES
        logits = torch.einsum("nd,gcd->gnc", inputs, weight) + bias[:, None]
        return torch.stack([F.cross_entropy(z, targets) for z in logits])

    next_batch = batch_stream(x, y, 1000 + seed)
    for _ in range(STEPS):
        opt.zero_grad()
        losses(*next_batch()).sum().backward()
        opt.step()
    with torch.no_grad():
        final = losses(x, y).nan_to_num(nan=math.inf).numpy()
    good = grid[final <= 1.05 * final.min()]
    return float(good.min()), float(good.max())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_valley_falls_inside_the_good_range_on_every_seed(optimizer):
    for seed in range(3):
        x, y = blobs(seed)
        low, high = good_lr_range(x, y, optimizer, seed)
        # The good range is narrow enough (under 2 decades) that a suggestion a decade off fails.
        assert math.log10(high / low) <= 2.0, (low, high)
        torch.manual_seed(seed)
        model = torch.nn.Linear(DIM, CLASSES)
        result = lr_finder.repeated_range_test(
            model,
            make_optimizer(optimizer, model),
            lambda s, x=x, y=y: batch_stream(x, y, s),
            F.cross_entropy,
            {"num_iter": STEPS, "repeats": 3},
            seed=10 * seed,
        )
        valleys = result["suggestions"]["valley"]["lrs"]
        assert all(low <= lr <= high for lr in valleys), (seed, low, high, valleys)
        assert low <= result["lr"] <= high


# --- The sweep itself ----------------------------------------------------------------------------
def test_divergence_stops_the_sweep_early():
    x, y = blobs(0)
    torch.manual_seed(0)
    model = torch.nn.Linear(DIM, CLASSES)
    opt = make_optimizer("sgd", model)
    result = lr_finder.lr_range_test(
        model, opt, batch_stream(x, y, 0), F.cross_entropy, start_lr=1e-4, end_lr=1e4, num_iter=STEPS
    )
    assert result["diverged"] and result["steps"] < STEPS
    assert result["smoothed"][-1] > 4.0 * min(result["smoothed"])
    assert len(result["lrs"]) == len(result["losses"]) == result["steps"]
    # The same sweep stopped below the lrs that overshoot runs to the end.
    calm = lr_finder.lr_range_test(
        model, opt, batch_stream(x, y, 0), F.cross_entropy, start_lr=1e-4, end_lr=1e-1, num_iter=STEPS
    )
    assert not calm["diverged"] and calm["steps"] == STEPS


def test_a_non_finite_loss_stops_the_sweep_and_is_not_recorded():
    # Least squares with lrs far past 2 / curvature: the iterates overflow to inf within the sweep.
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)
    model = torch.nn.Linear(8, 1)
    result = lr_finder.lr_range_test(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        batch_stream(x, y, 0),
        F.mse_loss,
        start_lr=1e-3,
        end_lr=1e6,
        num_iter=300,
        diverge_factor=1e300,  # only the non-finite check can stop it
    )
    assert result["diverged"] and result["steps"] < 300
    assert all(math.isfinite(v) for v in result["losses"] + result["smoothed"])


class BatchNormDropoutNet(torch.nn.Module):
    """Buffers (BatchNorm running stats) and dropout: everything a sweep could leave changed."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.drop = torch.nn.Dropout(0.3)
        self.head = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.norm(self.conv(x)))).flatten(1))


def image_stream(seed: int, batch: int = 16):
    g = torch.Generator().manual_seed(seed)
    return lambda: (torch.randn(batch, 3, 8, 8, generator=g), torch.randint(10, (batch,), generator=g))


def assert_same_state(a, b):
    """Nested state dicts (tensors, numbers, lists, dicts) are exactly equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            assert_same_state(u, v)
    else:
        assert a == b


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weights_buffers_and_optimizer_state_are_restored(optimizer):
    torch.manual_seed(0)
    model = BatchNormDropoutNet()
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # An optimizer part-way through training has state (momentum, moments, step counts).
    inputs, targets = image_stream(1)()
    F.cross_entropy(model(inputs), targets).backward()
    opt.step()
    model.eval()
    model_before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = copy.deepcopy(opt.state_dict())

    result = lr_finder.lr_range_test(
        model, opt, image_stream(2), F.cross_entropy, start_lr=1e-5, end_lr=100.0, num_iter=60
    )
    assert result["steps"] > 10  # it did train

    assert_same_state(model.state_dict(), model_before)
    assert_same_state(opt.state_dict(), opt_before)
    assert not model.training
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt_before["param_groups"]]


def test_same_seed_gives_identical_repeats_and_seeds_differ():
    torch.manual_seed(0)
    model = BatchNormDropoutNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    settings = {"start_lr": 1e-5, "end_lr": 10.0, "num_iter": 60, "repeats": 3}
    rng_before = torch.get_rng_state()
    first = lr_finder.repeated_range_test(model, opt, image_stream, F.cross_entropy, settings, seed=7)
    second = lr_finder.repeated_range_test(model, opt, image_stream, F.cross_entropy, settings, seed=7)
    assert first == second
    assert torch.equal(torch.get_rng_state(), rng_before)  # training's random stream is untouched
    assert [r["seed"] for r in first["repeats"]] == [7, 8, 9]
    assert first["repeats"][0]["losses"] != first["repeats"][1]["losses"]


# --- Suggestions ---------------------------------------------------------------------------------
def sweep_curve(noise: float, seed: int = 0):
    """A sweep-shaped smoothed loss over 1e-7 .. 10 (200 points): a noisy plateau, a fall between
    1e-4 and 1e-1 (steepest at 10^-2.5), the lowest loss at 10^-0.8, then a blow-up."""
    log_lr = np.linspace(-7, 1, 200)
    rng = np.random.default_rng(seed)
    loss = 1.4 - 0.9 * np.tanh((log_lr + 2.5) / 0.7) + 4.0 * np.clip(log_lr + 0.8, 0, None) ** 2
    loss = loss + noise * rng.standard_normal(200).cumsum() / 10  # a smoothed curve wanders
    return list(10**log_lr), list(loss)


def test_suggestions_on_a_curve_of_known_shape():
    for seed in range(5):
        lrs, loss = sweep_curve(noise=0.01, seed=seed)
        s = lr_finder.suggest(lrs, loss, skip_start=20)
        # valley: the middle of the fall (10^-4 .. 10^-0.8), not dragged into the noisy plateau
        assert -3.2 <= math.log10(s["valley"]) <= -1.8, s
        assert abs(math.log10(s["steepest"]) + 2.5) <= 0.3, s
        assert abs(math.log10(s["minimum_div_10"]) + 1.8) <= 0.2, s


def test_suggestions_leave_out_the_distorted_ends():
    lrs, loss = sweep_curve(noise=0.0)
    loss[:5] = [0.1] * 5  # far below the rest, as a bias-corrected start can be
    loss[-3:] = [-1.0, -2.0, -3.0]  # a collapse in the last steps, as at divergence
    s = lr_finder.suggest(lrs, loss, skip_start=20, skip_end=5)
    assert abs(math.log10(s["minimum_div_10"]) + 1.8) <= 0.2, s


def test_a_sweep_that_diverges_at_once_says_what_to_change():
    lrs, loss = sweep_curve(noise=0.0)
    with pytest.raises(ValueError, match="start_lr"):
        lr_finder.suggest(lrs[:28], loss[:28], skip_start=20)


def test_summary_in_decades():
    summary = lr_finder.summarize([{"valley": 1e-3}, {"valley": 1e-2}, {"valley": 1e-1}])["valley"]
    assert summary["median"] == pytest.approx(1e-2)
    assert summary["spread_decades"] == pytest.approx(2.0)
    assert summary["iqr_decades"] == pytest.approx(1.0)  # quartiles at 10^-2.5 and 10^-1.5
    # An even count: the geometric mean of the middle two.
    assert lr_finder.summarize([{"v": 1e-3}, {"v": 1e-1}])["v"]["median"] == pytest.approx(1e-2)


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        lr_finder.lr_schedule(1.0, 1e-3, 100)
    with pytest.raises(ValueError, match="unknown lr_finder setting"):
        lr_finder.finder_settings({"num_iters": 100})
    with pytest.raises(ValueError, match="suggestion"):
        lr_finder.finder_settings({"suggestion": "minimum"})


# --- One run of the lab, end to end --------------------------------------------------------------
CPU = torch.device("cpu")


def lab_run(name: str, **overrides) -> dict:
    """A run of config/config.yaml, expanded as the workflow does, with `overrides`."""
    with open(ROOT / "config" / "config.yaml") as f:
        config = yaml.safe_load(f)
    return {**validate_config(config)[name], **overrides}


@pytest.mark.precision
def test_a_run_sweeps_from_its_training_start_and_writes_the_results_file(
    synthetic_data, synthetic_files, tmp_path
):
    from cifarlab.models import build_model, set_train_mode
    from cifarlab.training.augment import epoch_batches
    from cifarlab.training.sampling import stratified_subset, subset
    from cifarlab.training.settings import RunSettings

    # A train_subset of 8 batches: the 20-step sweep runs through several epochs of it.
    run = lab_run("simple_cnn-sgd", train_subset=500, batch_size=64)
    finder = {"start_lr": 1e-4, "end_lr": 1.0, "num_iter": 20, "repeats": 2, "suggestion": "steepest"}
    out = tmp_path / "lr_finder" / f"{run['name']}.json"
    # fp32 outright, not `auto`: the first loss is compared below to an fp32 forward pass to 1e-5,
    # which a bf16 sweep (auto on a CPU with native bf16) misses in the 4th digit.
    lr_finder.main(
        train_path=synthetic_files["train"], result_path=out, run=run, finder=finder, device="cpu",
        precision="fp32",
    )  # fmt: skip
    result = json.loads(out.read_text())

    assert result["run"] == run["name"] and result["chosen"] == "steepest"
    assert (result["loss_on"], result["held_out_images"]) == ("training", 0)  # validation: 0
    assert result["lr"] == result["suggestions"]["steepest"]["median"] > 0
    assert set(result["suggestions"]) == set(lr_finder.METHODS)
    for s in result["suggestions"].values():
        assert len(s["lrs"]) == 2 and s["spread_decades"] >= 0
    assert len(result["lrs"]) == 20 and result["seconds"] > 0
    assert [r["seed"] for r in result["repeats"]] == [run["seed"], run["seed"] + 1]

    # Repeat 0 starts from the weights and the first batch that training starts from.
    train = synthetic_data["train"]
    data = subset(train, stratified_subset(train["labels"], 500, run["seed"]))
    x, y = next(epoch_batches(data, RunSettings.from_dict(run), epoch=0, device=CPU))
    model = build_model(run, len(train["classes"]))
    set_train_mode(model)
    with torch.no_grad():
        first = F.cross_entropy(model(x), y).item()
    assert result["repeats"][0]["losses"][0] == pytest.approx(first, rel=1e-5)
    assert result["repeats"][1]["losses"][0] != pytest.approx(first, rel=1e-5)  # another batch order

    figure = tmp_path / "lr_finder.png"
    lr_finder_figure.plot_lr_finder(out, figure)
    assert figure.stat().st_size > 10_000


def test_with_validation_the_sweep_records_the_loss_of_held_out_images(synthetic_data):
    from cifarlab.models import build_model, set_train_mode
    from cifarlab.training.augment import epoch_batches
    from cifarlab.training.batching import to_float
    from cifarlab.training.optim import build_optimizer
    from cifarlab.training.sampling import (
        VALIDATION_SPLIT_SEED,
        stratified_subset,
        subset,
        train_validation_split,
    )
    from cifarlab.training.scoring import evaluation_pass
    from cifarlab.training.settings import RunSettings

    run = lab_run("simple_cnn-sgd", train_subset=500, batch_size=64, validation=300)
    finder = {"start_lr": 1e-4, "end_lr": 1.0, "num_iter": 20, "repeats": 1, "suggestion": "steepest"}
    train = synthetic_data["train"]
    result = lr_finder.run_lr_finder(run, train, finder, device=CPU)
    assert (result["loss_on"], result["held_out_images"]) == ("validation", lr_finder.HELD_OUT_IMAGES)

    # Step 0: one SGD step at start_lr on training's first batch (of the images not held out),
    # then the loss of the fixed held-out images, not that batch's loss.
    train_index, held_out = train_validation_split(
        train["labels"], validation=300, train_subset=500, seed=run["seed"]
    )
    fixed = held_out[
        stratified_subset(train["labels"][held_out], lr_finder.HELD_OUT_IMAGES, VALIDATION_SPLIT_SEED)
    ]
    settings = RunSettings.from_dict(run)
    x, y = next(epoch_batches(subset(train, train_index), settings, epoch=0, device=CPU))
    model = build_model(run, len(train["classes"]))
    set_train_mode(model)
    optimizer = build_optimizer(model, settings, finder["start_lr"])
    batch_loss = F.cross_entropy(model(x), y)
    batch_loss.backward()
    optimizer.step()
    held_out_loss, _ = evaluation_pass(model, subset(train, fixed), settings, CPU, "fp32")
    with torch.no_grad():  # the pass by hand: all held-out images at once, in eval mode
        images = to_float(train["images"][fixed], train["mean"], train["std"], settings.image_size)
        by_hand = F.cross_entropy(model.eval()(images), train["labels"][fixed]).item()
    assert held_out_loss == pytest.approx(by_hand, rel=1e-5)
    first = result["repeats"][0]["losses"][0]
    assert first == pytest.approx(held_out_loss, rel=1e-5)
    assert first != pytest.approx(batch_loss.item(), rel=1e-3)

    off = lr_finder.run_lr_finder({**run, "validation": 0}, train, finder, device=CPU)
    assert (off["loss_on"], off["held_out_images"]) == ("training", 0)


def test_a_frozen_head_sweeps_on_cached_features(synthetic_data):
    from cifarlab.models import build_model, head_of
    from cifarlab.training.augment import epoch_batches
    from cifarlab.training.settings import RunSettings

    train = synthetic_data["train"]
    run = lab_run("resnet18", pretrained=False, image_size=32)  # freeze: head, augment: none
    # Stand-in features of the frozen backbone (512 per image, as resnet18's): the sweep only
    # needs their shape and the labels to match.
    generator = torch.Generator().manual_seed(0)
    features = {
        "features": torch.randn(len(train["labels"]), 512, generator=generator),
        "labels": train["labels"],
    }
    finder = {"start_lr": 1e-4, "end_lr": 10.0, "num_iter": 20, "repeats": 1}
    result = lr_finder.run_lr_finder(run, train, finder, device=CPU, cached_train=features)
    x, y = next(
        epoch_batches(features, RunSettings.from_dict(run), epoch=0, device=CPU)
    )  # training's first batch
    head = head_of(build_model(run, len(train["classes"])))
    with torch.no_grad():
        assert result["repeats"][0]["losses"][0] == pytest.approx(
            F.cross_entropy(head(x), y).item(), rel=1e-5
        )

    wrong = {**features, "labels": train["labels"].roll(1)}
    with pytest.raises(ValueError, match="do not belong"):
        lr_finder.run_lr_finder(run, train, finder, device=CPU, cached_train=wrong)


def test_a_bad_finder_setting_fails_before_any_output(synthetic_files, tmp_path):
    out = tmp_path / "finder.json"
    with pytest.raises(ValueError, match="unknown lr_finder setting"):
        lr_finder.main(
            train_path=synthetic_files["train"], result_path=out, run=lab_run("simple_cnn-adam"),
            finder={"num_iterations": 50}, device="cpu",
        )  # fmt: skip
    assert not out.exists()


# --- The workflow: what a change of finder settings reruns ------------------------------------------
def snakemake_in(workdir: Path, *args: str, overlay: Path | None = None) -> str:
    """Snakemake's output for the demo study (config.yaml + demo.yaml [+ overlay]) in `workdir`."""
    configs = ["config/config.yaml", "config/demo.yaml"] + ([str(overlay)] if overlay else [])
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "report", *args, "--configfile", *configs],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def planned_jobs(dry_run: str) -> set[tuple[str, str]]:
    """(rule, run wildcard or "") of every job in a dry run's output."""
    jobs, rule = set(), None
    for line in dry_run.splitlines():
        if line.startswith("rule ") or line.startswith("localrule "):
            rule = line.split()[1].rstrip(":")
            jobs.add((rule, ""))
        elif line.strip().startswith("wildcards:") and rule:
            match = re.search(r"\brun=([^,\s]+)", line)
            if match:
                jobs.discard((rule, ""))
                jobs.add((rule, match.group(1)))
    return jobs


@pytest.mark.slow
def test_a_finder_setting_reruns_the_finder_and_the_auto_runs_only(tmp_path):
    # A copy of the workflow whose every output exists and is recorded as made by these rules and
    # params (--touch), so that a dry run tells exactly what a change would rerun.
    for name in ("Snakefile", "workflow", "config", "scripts", "environment.yaml"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    plan = snakemake_in(tmp_path, "-n")
    for line in plan.splitlines():
        key, _, value = line.strip().partition(": ")
        if key in ("output", "benchmark"):
            for path in value.split(", "):
                (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / path).touch()
    snakemake_in(tmp_path, "--touch", "--forceall", "--cores", "1")  # records params, code, ...
    assert "Nothing to be done" in snakemake_in(tmp_path, "-n")

    config = {}
    for name in ("config.yaml", "demo.yaml"):
        with open(ROOT / "config" / name) as f:
            update_config(config, yaml.safe_load(f))  # merged as Snakemake merges --configfile
    auto = {name for name, run in validate_config(config).items() if run["lr"] == "auto"}
    finder_runs = set(config["lr_finder"]["runs"]) | auto
    assert auto  # the study has an `lr: auto` run to check

    for change in ({"num_iter": 61}, {"suggestion": "steepest"}, {"smoothing": 0.1}):
        overlay = tmp_path / "change.yaml"
        overlay.write_text(yaml.safe_dump({"lr_finder": {**config["lr_finder"], **change}}))
        jobs = planned_jobs(snakemake_in(tmp_path, "-n", overlay=overlay))
        assert {run for rule, run in jobs if rule == "lr_find"} == finder_runs, change
        assert {run for rule, run in jobs if rule == "train"} == auto, change
