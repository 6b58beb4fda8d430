"""Progress lines, `python -m cifarlab status` and the time estimate (cifarlab.core.progress,
cifarlab.study.status, cifarlab.study.estimate).

The status test builds a study on disk with the real training code: one run finished and
evaluated, one interrupted by SIGTERM after its first epoch (its checkpoint on disk), one failed
(an unusable LR-finder file), one asked about while it trains; the rest wait.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import lab_run
from test_train import sigterm_at

from cifarlab.config.validate import job_settings, validate_config
from cifarlab.core import paths, progress
from cifarlab.core.logs import log_to
from cifarlab.study import estimate, status
from cifarlab.training import evaluate as evaluating
from cifarlab.training import loop as training

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = {
    "device": "cpu",
    "threads": 1,
    "defaults": {"epochs": 2, "train_subset": 256, "test_subset": 64, "seeds": 1},
}


def job_of(name: str) -> dict:
    """The wildcards of a run's one trained model in the tiny study (config.yaml's cifar10, seed 0)."""
    return {"dataset": "cifar10", "run": name, "seed": 0}


def label(name: str) -> str:
    """How status names the run's model."""
    return f"cifar10/{name}/seed0"


# --- progress -----------------------------------------------------------------------------


def test_epoch_line_round_trips_and_says_time_left():
    line = progress.epoch_line("vit_recipe", 3, 20, 1.23456, 54.3, 90.0)
    assert (
        line == "train vit_recipe epoch 3/20 | loss 1.2346 | test acc 54.30 % | 90.0 s/epoch | ~25.5 min left"
    )
    logged = f"2026-12-01 11:00:00,123 INFO cifarlab.core.progress: {line}"
    assert progress.parse_epoch_line(logged) == {
        "run": "vit_recipe", "epoch": 3, "epochs": 20, "loss": 1.2346, "accuracy": 54.3,
        "seconds_per_epoch": 90.0,
    }  # fmt: skip
    assert (
        progress.parse_epoch_line("INFO cifarlab.training.loop: vit_recipe epoch 3/20: train loss 1.2")
        is None
    )


def test_log_to_sends_progress_lines_to_the_terminal_and_the_rest_to_the_log_only(tmp_path, capfd):
    path = tmp_path / "job.log"
    with log_to(path):
        progress.log.info("train r epoch 1/2 | the concise line")
        logging.getLogger("cifarlab.training.loop").info("the full detail")
        print("printed output")
    terminal = capfd.readouterr().err
    assert terminal == "train r epoch 1/2 | the concise line\n"  # whole lines, no carriage returns
    text = path.read_text()
    assert "the concise line" in text and "the full detail" in text and "printed output" in text


def test_steps_prints_at_most_every_interval_and_always_at_the_end(caplog):
    steps = progress.Steps("features vgg16 train", total=100, unit="images", every=3600)
    with caplog.at_level(logging.INFO, logger="cifarlab.core.progress"):
        for done in range(10, 101, 10):
            steps.update(done)
    assert [r.getMessage().split(" |")[0] for r in caplog.records] == ["features vgg16 train 100/100 images"]


# --- the estimate's arithmetic, on a made-up cost table -----------------------------------


# measured costs (seconds per 1,000 images at 32 px) are of the device they were measured on
COSTS = {"small": 2.0, "big": 40.0}


def test_image_seconds_scales_with_images_pixels_and_passes():
    assert estimate.image_seconds("small", 32, 5000, on_gpu=False, costs=COSTS) == pytest.approx(10.0)
    assert estimate.image_seconds("small", 32, 5000, on_gpu=True, costs=COSTS) == pytest.approx(10.0)
    # without a measurement: the spec's GPU or CPU figure (simple_cnn: 0.2 / 1.0 s per 1,000)
    assert estimate.image_seconds("simple_cnn", 32, 5000, on_gpu=True, costs=COSTS) == pytest.approx(1.0)
    assert estimate.image_seconds("simple_cnn", 32, 5000, on_gpu=False) == pytest.approx(5.0)
    # 64 px: 4x the pixels; a forward pass alone: a third
    assert estimate.image_seconds("big", 64, 1000, on_gpu=False, passes=1 / 3, costs=COSTS) == pytest.approx(
        40 * 4 / 3
    )
    assert estimate.image_seconds("big", 16, 1000, on_gpu=False, costs=COSTS) == pytest.approx(
        40.0
    )  # no discount


def write_benchmark(path: Path, seconds: float) -> str:
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:{seconds:.0f}\t100\n")
    return str(path)


def test_calibration_is_the_median_ratio_of_work_per_kind_with_an_overall_fallback(tmp_path):
    start = estimate.JOB_START_SECONDS
    done = [
        estimate.Job("train", "a", 90.0, write_benchmark(tmp_path / "a.tsv", start + 90 * 0.5)),
        estimate.Job("train", "b", 190.0, write_benchmark(tmp_path / "b.tsv", start + 190 * 0.3)),
        estimate.Job("train", "c", 40.0, write_benchmark(tmp_path / "c.tsv", start + 40 * 0.4)),
        estimate.Job("saliency", "a", 30.0, write_benchmark(tmp_path / "s.tsv", start + 30 * 2.0)),
        estimate.Job("saliency", "b", 20.0, write_benchmark(tmp_path / "s2.tsv", start / 2)),  # all start-up
        estimate.Job("lr_find", "a", 10.0, str(tmp_path / "missing.tsv")),  # no file: ignored
        estimate.Job(
            "plot_*", "a", 0.0, write_benchmark(tmp_path / "p.tsv", 30.0)
        ),  # no modelled work: ignored
    ]
    factors = estimate.calibration(done)
    assert factors == pytest.approx({"train": 0.4, "saliency": 1.0, "*": 0.4})
    assert estimate.calibration([]) == {}


def test_every_modelled_step_but_prepare_runs_a_model():
    """The kinds the workflow models (JOB_SECONDS in resources.smk) are MODEL_KINDS and prepare:
    a new step kind must be placed on one side, or its jobs would never stand in for others."""
    smk = (ROOT / "workflow" / "rules" / "resources.smk").read_text()
    block = re.search(r"^JOB_SECONDS = \{\n((?:    .*\n)+)\}", smk, re.M).group(1)
    modelled = set(re.findall(r'^    "(\w+)":', block, re.M))
    assert modelled == set(estimate.MODEL_KINDS) | {"prepare"}


def test_a_step_that_runs_no_model_calibrates_only_itself(tmp_path):
    """A prepare job far faster than its model (decoding images) gives no overall factor: the
    training jobs of a study with only its data prepared keep the model's figures."""
    start = estimate.JOB_START_SECONDS
    prepare = estimate.Job("prepare", "d", 64.0, write_benchmark(tmp_path / "p.tsv", start + 6.4))
    assert estimate.calibration([prepare]) == pytest.approx({"prepare": 0.1})
    train = estimate.Job("train", "a", 100.0, write_benchmark(tmp_path / "t.tsv", start + 150.0))
    assert estimate.calibration([prepare, train]) == pytest.approx({"prepare": 0.1, "train": 1.5, "*": 1.5})
    planned = [estimate.Job("train", "b", 1000.0, None)]
    result = estimate.estimate(planned, estimate.calibration([prepare]), parallel=1)
    assert result.kinds["train"][1] == pytest.approx(start + 1000.0)


def test_estimate_sums_per_kind_applies_factors_to_the_work_and_divides_the_wall_time():
    start = estimate.JOB_START_SECONDS
    planned = [
        estimate.Job("train", "a", 100.0),
        estimate.Job("train", "b", 300.0),
        estimate.Job("lr_find", "a", 50.0),
        estimate.Job("plot_*", "a", 0.0),
    ]
    result = estimate.estimate(planned, {"train": 0.5, "*": 2.0}, parallel=2)
    assert result.kinds["train"] == (2, pytest.approx(2 * start + 0.5 * 400))
    assert result.kinds["lr_find"] == (1, pytest.approx(start + 2.0 * 50))  # the overall factor
    assert result.kinds["plot_*"] == (1, pytest.approx(start))
    assert result.total == pytest.approx(sum(s for _, s in result.kinds.values()))
    assert result.wall == pytest.approx(result.total / 2)
    assert result.calibrated == ("train",)
    uncalibrated = estimate.estimate(planned, {}, parallel=0)  # nothing measured, at least one job at a time
    assert uncalibrated.total == pytest.approx(450 + 4 * start) and uncalibrated.wall == uncalibrated.total


def test_calibration_is_remembered_per_machine_and_merged(tmp_path):
    path = tmp_path / "cache" / "calibration.json"
    assert estimate.remembered_factors(estimate.read_calibration(path), "laptop") == {}
    estimate.remember_factors(path, "laptop", {"train": 0.25, "*": 0.3})
    estimate.remember_factors(path, "laptop", {"evaluate": 0.5, "*": 0.4})
    estimate.remember_factors(path, "cluster", {})  # nothing measured: nothing written
    assert estimate.remembered_factors(estimate.read_calibration(path), "laptop") == {
        "train": 0.25,
        "evaluate": 0.5,
        "*": 0.4,
    }
    assert estimate.remembered_factors(estimate.read_calibration(path), "cluster") == {}
    path.write_text("not json")
    assert estimate.remembered_factors(estimate.read_calibration(path), "laptop") == {}


def test_format_estimate_names_the_smaller_study_only_when_long():
    short = estimate.format_estimate(estimate.estimate([estimate.Job("train", "a", 600.0)], {}, 1))
    assert short.startswith("Estimate: 10.2 min wall time for 1 job ")
    assert "uncalibrated" in short and "quick.yaml" not in short
    long = estimate.format_estimate(
        estimate.estimate([estimate.Job("train", "a", 7200.0)] * 3, {"train": 1.0}, 2)
    )
    assert long.splitlines()[0].startswith(
        "Estimate: 3.0 h wall time for 3 jobs (6.0 h of jobs, 2 side by side)"
    )
    assert "calibrated by jobs measured on this machine (train)" in long
    assert "--configfile config/quick.yaml" in long.splitlines()[-1]
    assert estimate.format_estimate(estimate.estimate([], {}, 1)) == "Estimate: nothing to do."


# --- status -------------------------------------------------------------------------------


def train_in(study: Path, run: dict, data: dict, **options) -> None:
    """The train step of `run` as its Snakemake job runs it, in the study's folders and log."""
    job = job_of(run["name"])
    folder = study / paths.fill(paths.RUN, **job)
    with log_to(study / "logs/train" / f"{label(run['name'])}.log"):
        training.main(
            train_path=data["train"], test_path=data["test"], model_path=folder / "model.pt",
            history_path=folder / "history.csv", run=job_settings(run, "cifar10", 0), device="cpu",
            checkpoint=study / paths.fill(paths.CHECKPOINT, **job), **options,
        )  # fmt: skip


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def study(tmp_path):
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config/config.yaml", tmp_path / "config")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(OVERLAY))
    return tmp_path


def test_status_of_a_finished_an_interrupted_a_failed_and_a_running_run(
    study, synthetic_files, monkeypatch, capsys
):
    config = status.load_config(["tiny.yaml"], [], study)
    runs = validate_config(config)
    data = {"train": synthetic_files["train"], "test": synthetic_files["test"]}

    # finished: trained and evaluated
    train_in(study, runs["simple_cnn-sgd"], data)
    folder = study / paths.fill(paths.RUN, **job_of("simple_cnn-sgd"))
    metrics = evaluating.main(
        model_path=folder / "model.pt", history_path=folder / "history.csv", test_path=data["test"],
        metrics_path=folder / "metrics.json", dataset="cifar10", seed=0,
        device="cpu",
    )  # fmt: skip
    # interrupted: SIGTERM in epoch 2 of 2, the checkpoint of epoch 1 on disk
    with monkeypatch.context() as patch:
        patch.setattr(training, "epoch_batches", sigterm_at(epoch=1, step=1))
        with pytest.raises(training.TrainingInterrupted):
            train_in(study, runs["simple_cnn-adam"], data)
    assert (study / "results/checkpoints/cifar10/simple_cnn-adam/seed0.pt").exists()
    # failed: its LR-finder file has no usable lr
    bad = study / paths.fill(paths.LR_FINDER, **job_of("simple_cnn-yogi"))
    bad.parent.mkdir(parents=True)
    bad.write_text('{"lr": "high", "chosen": "valley"}')
    with pytest.raises(ValueError):
        train_in(study, {**runs["simple_cnn-yogi"], "lr": "auto"}, data, lr_finder=bad)

    before = tree(study)
    assert status.main(["--directory", str(study), "--configfile", "tiny.yaml"]) == 0
    table = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert tree(study) == before  # it only reads
    assert f"done         test acc {metrics['test_accuracy']:.2f} %" in table[label("simple_cnn-sgd")]
    assert "interrupted  epoch 1/2" in table[label("simple_cnn-adam")]
    assert (
        "results/checkpoints/cifar10/simple_cnn-adam/seed0.pt; rerun to resume"
        in table[label("simple_cnn-adam")]
    )
    assert "failed       ValueError" in table[label("simple_cnn-yogi")]
    assert "key 'lr' must be a positive number" in table[label("simple_cnn-yogi")]
    assert "logs/train/cifar10/simple_cnn-yogi/seed0.log" in table[label("simple_cnn-yogi")]
    assert "waiting" in table[label("vit")] and "of training (cost model)" in table[label("vit")]
    assert "Snakemake is not running here" in table["1"]  # "1 done, 1 interrupted, ..."
    assert table["Time"].startswith("Time left: ~")

    # running: asked mid-way through epoch 2 while a Snakemake holds the directory
    (study / ".snakemake/locks").mkdir(parents=True)
    (study / ".snakemake/locks/0.input.lock").write_text("")
    seen = {}
    real_batches = training.epoch_batches

    def ask_status(data, settings, *, epoch, **options):
        for i, batch in enumerate(real_batches(data, settings, epoch=epoch, **options)):
            if epoch == 1 and i == 1:
                seen.update({s.run: s for s in status.study_status(config, study)})
            yield batch

    monkeypatch.setattr(training, "epoch_batches", ask_status)
    train_in(study, runs["dropout_cnn-dropout0.1"], data)
    running = seen[label("dropout_cnn-dropout0.1")]
    assert running.state == "running" and running.detail.startswith("epoch 1/2,")
    assert 0 <= running.seconds_left < 600
    assert seen[label("simple_cnn-adam")].state == "interrupted"  # its log ends with the interruption


def test_status_imports_no_torch_and_explains_a_bad_configfile(study):
    probe = "import sys, cifarlab.study.status, cifarlab.study.estimate; "
    probe += "assert 'torch' not in sys.modules, 'torch imported'"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", probe], check=True, env=env)
    result = subprocess.run(
        [sys.executable, "-m", "cifarlab", "status", "-d", str(study), "--configfile", "nope.yaml"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--configfile nope.yaml: no such file" in result.stderr


def test_a_diverged_run_is_done_with_the_status_the_report_shows(tmp_path):
    metrics = {
        "status": "diverged",
        "diverged": {"epoch": 3, "lr": 0.5, "loss": "nan"},
        "test_accuracy": None,
    }
    job = {"dataset": "synthetic", "run": "cnn", "seed": 2}
    (tmp_path / paths.fill(paths.RUN, **job)).mkdir(parents=True)
    (tmp_path / paths.fill(paths.METRICS, **job)).write_text(json.dumps(metrics))
    state = status.run_status(job, {}, tmp_path, active=False, waiting_seconds=0.0)
    assert state.run == "synthetic/cnn/seed2"
    assert (state.state, state.detail) == ("done", "diverged at epoch 3 (lr 0.5)")


def test_the_cost_model_counts_the_validation_split():
    """Held-out images are not trained on but evaluated every epoch (forward passes only)."""
    sizes = {"train": 50_000, "test": 10_000, "classes": 10}
    run = lab_run()
    seconds = {v: estimate.train_seconds(sizes, {**run, "validation": v}, on_gpu=False) for v in (0, 5000)}
    assert seconds[5000] < seconds[0]  # 45,000 trained, 5,000 only evaluated
    subset = {**run, "train_subset": 10_000}
    with_split = estimate.train_seconds(sizes, {**subset, "validation": 5000}, on_gpu=False)
    assert with_split > estimate.train_seconds(sizes, {**subset, "validation": 0}, on_gpu=False)
