"""Cached features of a frozen backbone: the head trained on them is the model trained end to end."""

from __future__ import annotations

import pytest
import torch
from conftest import lab_run

from cifarlab.models import build_model, head_of
from cifarlab.training.features import compute_features, main
from cifarlab.training.loop import train_run
from cifarlab.training.sampling import stratified_subset, subset
from cifarlab.training.scoring import evaluation_pass, split_logits
from cifarlab.training.settings import RunSettings

CPU = torch.device("cpu")


def frozen_run(**overrides) -> dict:
    """A resnet18 run that trains its head only (tests/conftest.py's `lab_run` + these settings)."""
    settings = {
        "name": "resnet18_head", "model": "resnet18", "freeze": "head", "epochs": 2, "batch_size": 50,
        "lr": 0.05, "schedule": "onecycle", "seed": 3, "train_subset": 200, "test_subset": 100,
    }  # fmt: skip
    return lab_run(**{**settings, **overrides})


@pytest.fixture(scope="module")
def small_data(synthetic_data) -> dict[str, dict]:
    """300 training and 100 test images: resnet18 on the CPU is the slow part here."""
    return {
        "train": subset(synthetic_data["train"], torch.arange(300)),
        "test": subset(synthetic_data["test"], torch.arange(100)),
    }


@pytest.fixture(scope="module")
def cached(small_data, tmp_path_factory) -> dict[str, dict]:
    """The `features` step's files for the run's backbone, read back, computed in fp32.

    fp32 outright, not the config's `auto` (bf16 on a CPU with native bf16): the tests below check
    that the features ARE the head's inputs, against fp32 forward passes of the whole model, to
    1e-4 or exactly. bf16 features match fp32 only to bf16's ~3 digits (test_device.py checks that).
    """
    folder = tmp_path_factory.mktemp("features")
    for split, data in small_data.items():
        torch.save(data, folder / f"{split}.pt")
    run = frozen_run()
    backbone = {k: run[k] for k in ("model", "pretrained", "seed", "image_size")}
    main(
        train_path=folder / "train.pt", test_path=folder / "test.pt", out_train=folder / "f_train.pt",
        out_test=folder / "f_test.pt", backbone=backbone, device="cpu", precision="fp32",
    )  # fmt: skip
    return {split: torch.load(folder / f"f_{split}.pt", weights_only=True) for split in ("train", "test")}


@pytest.mark.precision
def test_features_file_holds_the_head_inputs(cached, small_data):
    assert cached["train"]["features"].shape == (300, 512)  # resnet18's pooled width
    assert cached["train"]["features"].dtype == torch.float32
    assert torch.equal(cached["test"]["labels"], small_data["test"]["labels"])
    assert cached["train"]["classes"] == small_data["train"]["classes"]
    # The same randomly initialised backbone as `train` builds: seeded by the run.
    model = build_model(frozen_run(), 10)
    again = compute_features(model, small_data["test"], image_size=32, device=CPU, batch_size=7)
    torch.testing.assert_close(again, cached["test"]["features"], atol=1e-5, rtol=1e-5)
    other_seed = build_model(frozen_run(seed=4), 10)
    different = compute_features(other_seed, small_data["test"], image_size=32, device=CPU)
    assert not torch.allclose(different, cached["test"]["features"])


@pytest.mark.precision
def test_head_on_cached_features_predicts_like_the_whole_model(cached, small_data):
    model = build_model(frozen_run(), 10).eval()
    on_images, _ = split_logits(model, small_data["test"], image_size=32, device=CPU)
    on_features, _ = split_logits(head_of(model), cached["test"], image_size=32, device=CPU)
    assert torch.equal(on_images.argmax(1), on_features.argmax(1))
    torch.testing.assert_close(on_features, on_images, atol=1e-4, rtol=1e-4)


@pytest.mark.precision
def test_training_the_head_on_features_equals_running_the_backbone_every_step(cached, small_data):
    """Same head initialisation, batch order and optimizer: the same trained model, 10x cheaper."""
    run = frozen_run()
    every_step = train_run(run, small_data["train"], small_data["test"], device=CPU, lr=run["lr"])
    on_features = train_run(
        run, small_data["train"], small_data["test"], device=CPU, lr=run["lr"], cached_features=cached
    )
    for a, b in zip(every_step["history"], on_features["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1.0)  # at most one image of 100
    head_a, head_b = head_of(every_step["model"]), head_of(on_features["model"])
    torch.testing.assert_close(head_a.weight, head_b.weight, atol=1e-4, rtol=1e-3)
    # Only the head trained: the backbone of the saved model is the untouched initialisation.
    initial = build_model(run, 10)
    assert torch.equal(on_features["model"].conv1.weight, initial.conv1.weight)
    assert torch.equal(every_step["model"].layer1[0].bn1.running_mean, initial.layer1[0].bn1.running_mean)
    assert on_features["params_trainable"] == 5130
    # The whole saved model on the images predicts what the head predicts on the features.
    test = subset(small_data["test"], stratified_subset(small_data["test"]["labels"], 100, 0))
    _, accuracy = evaluation_pass(on_features["model"], test, RunSettings.from_dict(run), CPU, "fp32")
    assert accuracy == pytest.approx(on_features["history"][-1]["test_accuracy"])


def test_stale_features_are_refused(cached, small_data):
    wrong = {split: dict(data, labels=data["labels"].roll(1)) for split, data in cached.items()}
    with pytest.raises(ValueError, match="do not belong to this train.pt"):
        train_run(
            frozen_run(), small_data["train"], small_data["test"], device=CPU, lr=0.01, cached_features=wrong
        )


def test_features_of_the_runs_subsets_only(cached, small_data, tmp_path):
    """With subsets, only the images the runs use are embedded; training on them is unchanged."""
    for split, data in small_data.items():
        torch.save(data, tmp_path / f"{split}.pt")
    run = frozen_run(train_subset=120, test_subset=50)
    backbone = {k: run[k] for k in ("model", "pretrained", "seed", "image_size")}
    backbone["subsets"] = {"train": [[120, 3], [60, 9]], "test": [50]}
    # fp32 as `cached`: bf16 features differ with the batch they are computed in
    main(
        train_path=tmp_path / "train.pt", test_path=tmp_path / "test.pt", out_train=tmp_path / "f_train.pt",
        out_test=tmp_path / "f_test.pt", backbone=backbone, device="cpu", precision="fp32",
    )  # fmt: skip
    partial = {
        split: torch.load(tmp_path / f"f_{split}.pt", weights_only=True) for split in ("train", "test")
    }
    wanted = torch.cat([stratified_subset(small_data["train"]["labels"], 120, 3),
                        stratified_subset(small_data["train"]["labels"], 60, 9)]).unique()  # fmt: skip
    assert torch.equal(partial["train"]["indices"], wanted) and len(wanted) < 300
    assert partial["train"]["features"].shape == (len(wanted), 512)
    assert len(partial["test"]["indices"]) == 50 and len(partial["test"]["labels"]) == 100
    torch.testing.assert_close(
        partial["train"]["features"], cached["train"]["features"][wanted], atol=1e-5, rtol=1e-5
    )

    on_partial = train_run(
        run, small_data["train"], small_data["test"], device=CPU, lr=0.05, cached_features=partial
    )
    on_all = train_run(
        run, small_data["train"], small_data["test"], device=CPU, lr=0.05, cached_features=cached
    )
    for a, b in zip(on_partial["history"], on_all["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"])
    with pytest.raises(ValueError, match="cached features lack"):
        train_run(frozen_run(train_subset=250), small_data["train"], small_data["test"], device=CPU, lr=0.05,
                  cached_features=partial)  # fmt: skip
