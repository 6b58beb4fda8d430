"""The model to take away (cifarlab.training.export): model.pt2 loads in a fresh Python with torch alone and
predicts what the study's evaluation predicted, for a whole model and for a head on cached features."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from conftest import lab_run

from cifarlab.training import evaluate as evaluation
from cifarlab.training import features, sampling
from cifarlab.training import loop as training
from cifarlab.training.evaluate import confusion_matrix
from cifarlab.training.sampling import TEST_SUBSET_SEED, stratified_subset

# A fresh interpreter: isolated (-I: no PYTHONPATH, no current folder) and without site (-S: no
# .pth files, so not the project's editable install); torch's site-packages folder added by hand.
FRESH = [sys.executable, "-I", "-S", "-c"]
PREDICT = """
import importlib.util, json, sys
sys.path.append({site!r})
assert importlib.util.find_spec("cifarlab") is None, "cifarlab is importable: not a fresh Python"
import torch
extra = {{"classes.json": ""}}
program = torch.export.load({pt2!r}, extra_files=extra).module()
images = torch.load({images!r}, weights_only=True)
with torch.no_grad():
    scores = program(images)
torch.save(scores.argmax(1), {out!r})
print(json.dumps({{"classes": json.loads(extra["classes.json"]), "shape": list(scores.shape),
                  "dtype": str(scores.dtype)}}))
"""


def predict_fresh(pt2: Path, images: torch.Tensor, folder: Path) -> tuple[torch.Tensor, dict]:
    """Predictions of model.pt2 on uint8 `images`, computed in a fresh Python with torch only."""
    torch.save(images, folder / "images.pt")
    code = PREDICT.format(
        site=sysconfig.get_paths()["purelib"], pt2=str(pt2), images=str(folder / "images.pt"),
        out=str(folder / "predictions.pt"),
    )  # fmt: skip
    done = subprocess.run([*FRESH, code], capture_output=True, text=True, cwd=folder, timeout=300)
    assert done.returncode == 0, done.stderr
    return torch.load(folder / "predictions.pt", weights_only=True), json.loads(done.stdout)


def evaluated_test_images(test: dict, run: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, labels) of the test images the evaluation scored, in its order."""
    index = stratified_subset(test["labels"], run["test_subset"], TEST_SUBSET_SEED)
    return test["images"][index], test["labels"][index]


def check_same_predictions(folder: Path, run: dict, test: dict, metrics: dict) -> dict:
    images, labels = evaluated_test_images(test, run)
    predictions, info = predict_fresh(folder / "model.pt2", images, folder)
    assert info["classes"] == metrics["classes"]
    assert info["shape"] == [len(images), len(metrics["classes"])] and info["dtype"] == "torch.float32"
    confusion = confusion_matrix(labels, predictions, len(metrics["classes"]))
    assert confusion.tolist() == metrics["confusion_matrix"]  # the same predictions, class by class
    assert 100.0 * float((predictions == labels).double().mean()) == pytest.approx(metrics["test_accuracy"])
    return info


def test_a_trained_cnn_as_a_program_that_loads_with_torch_alone(tmp_path, synthetic_files, synthetic_data):
    # fp32 pinned for training and evaluation (precision is an argument of each step, not a run's
    # setting): the program runs in fp32, and an evaluation in bf16 (precision auto on a CPU with
    # native bf16) may flip a borderline image; the same predictions are promised in one precision
    run = lab_run(name="simple_cnn", epochs=3, batch_size=64, lr=3e-3, optimizer="adam",
                  train_subset=1000, test_subset=300)  # fmt: skip
    folder = tmp_path
    training.main(
        train_path=synthetic_files["train"], test_path=synthetic_files["test"], model_path=folder / "m.pt",
        history_path=folder / "history.csv", run=run, device="cpu", checkpoint=folder / "ckpt.pt",
        precision="fp32",
    )  # fmt: skip
    metrics = evaluation.main(
        model_path=folder / "m.pt", history_path=folder / "history.csv", test_path=synthetic_files["test"],
        metrics_path=folder / "metrics.json", dataset="synthetic", seed=run["seed"], device="cpu",
        exported_path=folder / "model.pt2", precision="fp32",
    )  # fmt: skip
    assert metrics["test_accuracy"] > 100 / len(metrics["classes"]) + 5  # learnt something to compare
    check_same_predictions(folder, run, synthetic_data["test"], metrics)


def test_a_head_on_cached_features_is_exported_with_its_backbone_and_resizes(tmp_path, synthetic_data):
    # a frozen resnet18 at 40 px on 32 px images: the program resizes, then runs backbone and head
    run = lab_run(
        name="resnet18_head",
        model="resnet18",
        freeze="head",
        epochs=2,
        batch_size=50,
        lr=0.05,
        schedule="onecycle",
        seed=3,
        train_subset=200,
        test_subset=60,
        image_size=40,
    )  # fmt: skip
    folder = tmp_path
    small = {"train": sampling.subset(synthetic_data["train"], torch.arange(300)),
             "test": sampling.subset(synthetic_data["test"], torch.arange(100))}  # fmt: skip
    for split, data in small.items():
        torch.save(data, folder / f"{split}.pt")
    backbone = {k: run[k] for k in ("model", "pretrained", "seed", "image_size")}
    features.main(
        train_path=folder / "train.pt", test_path=folder / "test.pt", out_train=folder / "f_train.pt",
        out_test=folder / "f_test.pt", backbone=backbone, device="cpu",
    )  # fmt: skip
    # fp32 pinned for training and evaluation, as above
    training.main(
        train_path=folder / "train.pt", test_path=folder / "test.pt", model_path=folder / "model.pt",
        history_path=folder / "history.csv", run=run, device="cpu", checkpoint=folder / "ckpt.pt",
        cached_train=folder / "f_train.pt", cached_test=folder / "f_test.pt", precision="fp32",
    )  # fmt: skip
    metrics = evaluation.main(
        model_path=folder / "model.pt", history_path=folder / "history.csv", test_path=folder / "test.pt",
        metrics_path=folder / "metrics.json", dataset="synthetic", seed=run["seed"], device="cpu",
        cached_test=folder / "f_test.pt", exported_path=folder / "model.pt2", precision="fp32",
    )  # fmt: skip
    # model.pt keeps the head alone: the backbone is rebuilt from the run's seed (models.load_trained)
    saved = torch.load(folder / "model.pt", weights_only=True)
    assert saved["model_part"] == "head" and set(saved["model_state"]) == {"fc.weight", "fc.bias"}
    # evaluated on the cached features (the head alone); the program takes the images
    check_same_predictions(folder, run, small["test"], metrics)
