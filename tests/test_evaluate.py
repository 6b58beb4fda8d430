"""The train and evaluate steps end to end on files: model.pt, history.csv, metrics.json, figures."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import lab_run

import cifarlab
from cifarlab.models import build_model, load_trained
from cifarlab.plots import confusion as confusion_figure
from cifarlab.plots import curves as curves_figure
from cifarlab.study.results import read_history, status_text
from cifarlab.training import batching, scoring
from cifarlab.training import evaluate as evaluation
from cifarlab.training import loop as training
from cifarlab.training.settings import RunSettings

ROOT = Path(__file__).resolve().parent.parent
# docs/architecture.md: the keys of metrics.json and of model.pt
METRICS_KEYS = {
    "environment", "dataset", "run", "seed", "model", "status", "diverged", "test_accuracy", "test_loss",
    "per_class_accuracy", "classes_without_test_images", "confusion_matrix", "classes", "best_epoch",
    "best_validation_accuracy",
    "final_train_accuracy", "params_total", "params_trainable", "epochs", "batch_size", "optimizer", "lr",
    "lr_source", "dropout", "pretrained", "freeze", "image_size", "train_images", "validation_images",
    "train_seconds", "images_per_second", "device", "settings", "tta", "tta_test_accuracy", "tta_test_loss",
    "precision", "eval_precision", "code_version", "gpu_id", "gpu_slot", "timing",
}  # fmt: skip
MODEL_KEYS = {
    "model_state", "run", "classes", "mean", "std", "lr", "lr_source", "status", "diverged",
    "params_total", "params_trainable", "train_images", "validation_images", "test_images", "best_epoch",
    "best_validation_accuracy", "train_seconds", "images_per_second", "device", "gpu_id", "gpu_slot",
    "precision", "threads", "model_part",
}  # fmt: skip


def run_settings(**overrides) -> dict:
    """The simple CNN with Adam (tests/conftest.py's `lab_run`), 3 epochs on 1,000 images."""
    settings = {
        "name": "simple_cnn-adam", "entry": "simple_cnn", "sweep": {"optimizer": "adam"}, "epochs": 3,
        "batch_size": 64, "optimizer": "adam", "lr": 3e-3, "train_subset": 1000, "test_subset": 300,
    }  # fmt: skip
    return lab_run(**{**settings, **overrides})


def train_and_evaluate(folder, files, run) -> dict:
    paths = {name: folder / name for name in ("model.pt", "history.csv", "metrics.json")}
    training.main(
        train_path=files["train"], test_path=files["test"], model_path=paths["model.pt"],
        history_path=paths["history.csv"], run=run, device="cpu", checkpoint=folder / "ckpt" / "run.pt",
    )  # fmt: skip
    evaluation.main(
        model_path=paths["model.pt"], history_path=paths["history.csv"], test_path=files["test"],
        metrics_path=paths["metrics.json"], dataset="synthetic", seed=run["seed"], device="cpu",
        tta=run.get("tta", "none"),
    )  # fmt: skip
    return paths


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synthetic_files) -> dict:
    return train_and_evaluate(tmp_path_factory.mktemp("run_ok"), synthetic_files, run_settings())


@pytest.fixture(scope="module")
def diverged(tmp_path_factory, synthetic_files) -> dict:
    run = run_settings(name="simple_cnn-sgd", optimizer="sgd", lr=1e6, epochs=2)
    return train_and_evaluate(tmp_path_factory.mktemp("run_diverged"), synthetic_files, run)


@pytest.fixture(scope="module")
def validated(tmp_path_factory, synthetic_files) -> dict:
    """300 training images held out (30 a class), the run trains on 700 of the other 1,700."""
    run = run_settings(validation=300, train_subset=700, seed=5)
    return train_and_evaluate(tmp_path_factory.mktemp("run_validated"), synthetic_files, run)


def test_train_writes_model_and_history_and_removes_its_checkpoint(finished):
    saved = torch.load(finished["model.pt"], weights_only=True)
    assert MODEL_KEYS <= set(saved)
    assert saved["status"] == "ok" and saved["diverged"] is None
    assert (saved["lr"], saved["lr_source"]) == (3e-3, "config")
    with open(finished["history.csv"]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(training.HISTORY_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert not (finished["model.pt"].parent / "ckpt" / "run.pt").exists()


def test_metrics_follow_the_contract_and_agree_with_training(finished):
    metrics = json.loads(finished["metrics.json"].read_text())
    assert set(metrics) == METRICS_KEYS
    history = read_history(finished["history.csv"])
    # Same model, same test images: evaluate reproduces the last epoch's test accuracy.
    assert metrics["test_accuracy"] == pytest.approx(history[-1]["test_accuracy"])
    assert metrics["test_loss"] == pytest.approx(history[-1]["test_loss"], rel=1e-5)
    assert metrics["test_accuracy"] > 15  # above chance (10 %); how well it learns: test_train.py
    confusion = torch.tensor(metrics["confusion_matrix"])
    assert confusion.shape == (10, 10) and int(confusion.sum()) == 300  # the test subset
    assert confusion.sum(1).tolist() == [30] * 10  # stratified
    assert 100 * confusion.diag().sum().item() / 300 == pytest.approx(metrics["test_accuracy"])
    for i, name in enumerate(metrics["classes"]):
        assert metrics["per_class_accuracy"][name] == pytest.approx(100 * confusion[i, i].item() / 30)
    # No validation split: the model is the last epoch's, and that is the epoch reported as chosen.
    assert (metrics["best_epoch"], metrics["best_validation_accuracy"]) == (3, None)
    assert (metrics["dataset"], metrics["seed"]) == ("synthetic", 0)
    assert (metrics["train_images"], metrics["validation_images"]) == (1000, 0)
    assert all(math.isnan(row["val_loss"]) and math.isnan(row["val_accuracy"]) for row in history)
    assert metrics["final_train_accuracy"] == pytest.approx(history[-1]["train_accuracy"])
    assert (metrics["params_total"], metrics["params_trainable"]) == (62_006, 62_006)
    assert metrics["status"] == "ok" and metrics["settings"]["name"] == "simple_cnn-adam"
    assert metrics["images_per_second"] > 0 and metrics["train_seconds"] > 0
    # The commit of this checkout (the tests run the package from it), or null outside git.
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = head.stdout.strip() if head.returncode == 0 else None
    assert metrics["code_version"]["commit"] == commit
    assert metrics["code_version"]["package_version"] == cifarlab.__version__
    assert isinstance(metrics["code_version"]["dirty"], bool) or commit is None


def test_load_trained_gives_back_the_trained_model(finished, synthetic_data):
    model, saved = load_trained(finished["model.pt"], "cpu")
    assert not model.training
    x = batching.to_float(synthetic_data["test"]["images"][:8], saved["mean"], saved["std"], 32)
    with torch.no_grad():
        out = model(x)
    fresh = build_model(saved["run"], 10).eval()
    with torch.no_grad():
        assert not torch.allclose(out, fresh(x))  # trained weights, not the initialisation


def test_a_diverged_run_is_reported_as_such(diverged):
    saved = torch.load(diverged["model.pt"], weights_only=True)
    assert saved["status"] == "diverged" and saved["diverged"]["epoch"] == 1
    metrics = json.loads(diverged["metrics.json"].read_text())  # strict JSON: no NaN
    assert set(metrics) == METRICS_KEYS
    assert metrics["status"] == "diverged"
    assert metrics["test_accuracy"] is None and metrics["test_loss"] is None
    assert metrics["confusion_matrix"] is None and metrics["best_epoch"] is None
    assert metrics["diverged"]["lr"] == 1e6


def test_confusion_matrix_counts():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 2, 0, 2])
    assert evaluation.confusion_matrix(labels, predictions, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_a_validated_run_reports_its_best_validation_epoch_evaluated_on_the_test_set(validated):
    saved = torch.load(validated["model.pt"], weights_only=True)
    metrics = json.loads(validated["metrics.json"].read_text())
    history = read_history(validated["history.csv"])
    assert set(metrics) == METRICS_KEYS
    assert (metrics["train_images"], metrics["validation_images"], metrics["seed"]) == (700, 300, 5)
    best = max(history, key=lambda row: row["val_accuracy"])  # max() keeps the first of the best
    assert metrics["best_epoch"] == saved["best_epoch"] == best["epoch"]
    assert metrics["best_validation_accuracy"] == pytest.approx(best["val_accuracy"])
    # The model evaluated is that epoch's: its test accuracy is the one recorded in that epoch.
    assert metrics["test_accuracy"] == pytest.approx(history[best["epoch"] - 1]["test_accuracy"])
    assert all(0 <= row["val_accuracy"] <= 100 and row["val_loss"] > 0 for row in history)


def test_evaluate_refuses_a_model_of_another_seed(validated, synthetic_files, tmp_path):
    with pytest.raises(ValueError, match="trained with seed 5 .* evaluated as seed 6"):
        evaluation.main(
            model_path=validated["model.pt"], history_path=validated["history.csv"],
            test_path=synthetic_files["test"], metrics_path=tmp_path / "metrics.json", dataset="synthetic",
            seed=6, device="cpu",
        )  # fmt: skip


@pytest.mark.parametrize("which", ["finished", "diverged", "validated"])
def test_figures_are_drawn_for_every_run(which, request, tmp_path):
    paths = request.getfixturevalue(which)
    curves, confusion = tmp_path / "curves.png", tmp_path / "confusion.png"
    curves_figure.plot_curves(paths["history.csv"], paths["metrics.json"], curves)
    confusion_figure.plot_confusion(paths["metrics.json"], confusion)
    for png in (curves, confusion):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_status_text_names_epoch_and_lr(diverged):
    metrics = json.loads(diverged["metrics.json"].read_text())
    assert status_text(metrics) == "diverged at epoch 1 (lr 1e+06)"


def test_a_split_is_scored_in_batches_sized_for_the_device(synthetic_data):
    """A GPU takes INFERENCE_PIXELS per pass (1,024 images at 32 px, 20 at 224); the CPU, whose
    caches large batches leave, CPU_INFERENCE_PIXELS but at least CPU_MIN_INFERENCE_BATCH;
    cached features go FEATURE_BATCH rows at a time on either."""
    data, cpu, gpu = synthetic_data["test"], torch.device("cpu"), torch.device("cuda:1")
    assert batching.inference_batch(data, 32, gpu) == 1024 and batching.inference_batch(data, 224, gpu) == 20
    assert batching.inference_batch(data, 32, cpu) == 128 and batching.inference_batch(data, 224, cpu) == 16
    assert batching.inference_batch(data, 32, torch.device("mps")) == 1024
    features = {"features": torch.zeros(3, 8), "labels": torch.zeros(3, dtype=torch.long)}
    assert batching.inference_batch(features, 224, cpu) == 1024
    assert batching.inference_batch(features, 224, gpu) == 1024


@pytest.mark.parametrize("tta", ["none", "flip", "flip_translate"])
def test_one_large_pass_scores_each_image_as_on_its_own(tta, synthetic_data):
    # A net with batch norm (running statistics set away from 0/1) and an image size that makes
    # to_float resize: the pass at batching.inference_batch images (scoring.split_logits, which
    # training's per-epoch pass, the LR finder and evaluate share) against batches of a run's
    # size and of one image each, fp32 on the CPU.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 10),
    )  # fmt: skip
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    data, cpu = synthetic_data["test"], torch.device("cpu")
    on_gpu = batching.inference_batch(data, 28, torch.device("cuda"))  # a number: no GPU is used
    assert on_gpu > len(data["labels"]) > batching.inference_batch(data, 28, cpu) > 37
    passes = {
        size: scoring.split_logits(model, data, image_size=28, device=cpu, tta=tta, batch_size=size)
        for size in (on_gpu, None, 37, 1)
    }
    plain, augmented = passes[None]
    assert plain.shape == (len(data["labels"]), 10) and (augmented is None) == (tta == "none")

    def scored(logits: tuple) -> tuple[float, float]:  # evaluate's loss and accuracy: TTA's where asked
        return scoring.loss_accuracy(logits[0] if logits[1] is None else logits[1], data["labels"])

    loss, accuracy = scored(passes[None])
    assert 0 < accuracy < 100
    for size in (on_gpu, 37, 1):
        for large, small in zip(passes[None], passes[size], strict=True):
            if large is not None:
                assert torch.equal(large.argmax(1), small.argmax(1)), size
                torch.testing.assert_close(large, small, rtol=1e-6, atol=1e-6)
        small_loss, small_accuracy = scored(passes[size])
        assert small_accuracy == accuracy
        assert small_loss == pytest.approx(loss, rel=1e-6, abs=1e-6)
    # training's per-epoch pass is this pass, whatever the run's batch size
    settings = RunSettings.from_dict(run_settings(batch_size=37, image_size=28))
    assert scoring.evaluation_pass(model, data, settings, cpu, "fp32") == scoring.loss_accuracy(
        plain, data["labels"]
    )
    # by hand: the model on each image alone, unbatched
    with torch.no_grad():
        x = batching.to_float(data["images"][:5], data["mean"], data["std"], 28)
        one_by_one = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(plain[:5], one_by_one, rtol=1e-6, atol=1e-6)
