"""A validation split on cached features: a frozen-backbone run holds out the same images as on images.

The split itself, the chosen epoch and resuming are tested in tests/test_train.py; metrics.json's
keys in tests/test_evaluate.py; the LR finder's held-out loss in tests/test_lr_finder.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import lab_run

from cifarlab.training.features import main, needed_indices
from cifarlab.training.loop import train_run
from cifarlab.training.sampling import stratified_subset, subset, train_validation_split

CPU = torch.device("cpu")


def frozen_run(**overrides) -> dict:
    """A resnet18 run that trains its head only, 60 training images held out, 120 trained on."""
    settings = {
        "name": "resnet18_head", "model": "resnet18", "freeze": "head", "epochs": 2, "batch_size": 40,
        "lr": 0.05, "schedule": "onecycle", "seed": 3, "train_subset": 120, "validation": 60,
        "test_subset": 50,
    }  # fmt: skip
    return lab_run(**{**settings, **overrides})


@pytest.fixture(scope="module")
def small_files(synthetic_data, tmp_path_factory) -> dict:
    """300 training and 100 test images as train.pt/test.pt (resnet18 on the CPU is the slow part)."""
    folder = tmp_path_factory.mktemp("validation_features")
    data = {
        "train": subset(synthetic_data["train"], torch.arange(300)),
        "test": subset(synthetic_data["test"], torch.arange(100)),
    }
    for split, split_data in data.items():
        torch.save(split_data, folder / f"{split}.pt")
    return {"folder": folder, **data}


def features_for(files: dict, run: dict, train_entries: list) -> dict:
    """The `features` step's files of the run's backbone for these train subsets, read back."""
    folder = files["folder"]
    backbone = {k: run[k] for k in ("model", "pretrained", "seed", "image_size")}
    backbone["subsets"] = {"train": train_entries, "test": [run["test_subset"]]}
    main(
        train_path=folder / "train.pt", test_path=folder / "test.pt", out_train=folder / "f_train.pt",
        out_test=folder / "f_test.pt", backbone=backbone, device="cpu",
    )  # fmt: skip
    return {split: torch.load(folder / f"f_{split}.pt", weights_only=True) for split in ("train", "test")}


def test_needed_indices_include_the_held_out_images(synthetic_data):
    labels = synthetic_data["train"]["labels"]
    train_index, held_out = train_validation_split(labels, validation=100, train_subset=200, seed=4)
    wanted = needed_indices(labels, "train", {"train": [[200, 4, 100]], "test": None})
    assert torch.equal(wanted, torch.cat([train_index, held_out]).sort().values)
    # An entry without a validation size is a run without a split, as before there were splits.
    assert torch.equal(
        needed_indices(labels, "train", {"train": [[200, 4]]}), stratified_subset(labels, 200, 4)
    )


def test_a_frozen_head_on_cached_features_validates_on_the_same_images(small_files):
    run = frozen_run()
    cached = features_for(small_files, run, [[run["train_subset"], run["seed"], run["validation"]]])
    train, test = small_files["train"], small_files["test"]
    on_features = train_run(run, train, test, device=CPU, lr=run["lr"], cached_features=cached)
    on_images = train_run(run, train, test, device=CPU, lr=run["lr"])
    assert (on_features["train_images"], on_features["validation_images"]) == (120, 60)
    for a, b in zip(on_features["history"], on_images["history"], strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=100 / 60)  # at most one image
    assert on_features["best_epoch"] == on_images["best_epoch"]

    # Features made without the held-out images cannot serve a run that holds them out.
    without = features_for(small_files, run, [[run["train_subset"], run["seed"]]])
    with pytest.raises(ValueError, match="cached features lack"):
        train_run(run, train, test, device=CPU, lr=run["lr"], cached_features=without)
