"""Training: batches, optimizers, schedules, learning, determinism, checkpoints, signals, divergence."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import lab_run

from cifarlab.training import loop as training
from cifarlab.training import scoring
from cifarlab.training.augment import batches, crop_flip, crop_flip_draws
from cifarlab.training.checkpoints import TrainingInterrupted
from cifarlab.training.loop import resolve_lr, train_run
from cifarlab.training.optim import build_optimizer, build_scheduler
from cifarlab.training.sampling import stratified_subset, subset, train_validation_split
from cifarlab.training.settings import RunSettings

CPU = torch.device("cpu")


def make_run(**overrides) -> dict:
    """A complete simple-CNN run (tests/conftest.py's `lab_run`): 3 epochs of Adam at 3e-3, batch 64."""
    return lab_run(**{"epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 3e-3, **overrides})


def make_settings(**overrides) -> RunSettings:
    """make_run's run as the optimizers and schedules take it (training.settings.RunSettings)."""
    return RunSettings.from_dict(make_run(**overrides))


def comparable(history: list[dict]) -> list[dict]:
    """History without the wall-clock column, NaN (not measured: no validation split) as None, which
    compares equal after a checkpoint's round trip (a NaN is not equal to itself)."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items() if k != "seconds"}
        for row in history
    ]


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


# --- batches ----------------------------------------------------------------------------


def test_batches_cover_the_data_once_normalised(synthetic_data):
    data = synthetic_data["train"]
    xs, ys = [], []
    for x, y in batches(data, 300, shuffle=False, generator=None, device=CPU, augment="none", image_size=32):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(y, data["labels"])
    # Normalised with the training set's own mean/std: zero mean, unit std per channel.
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    expected = (data["images"][5].float() / 255 - data["mean"].view(3, 1, 1)) / data["std"].view(3, 1, 1)
    torch.testing.assert_close(x[5], expected)


def test_shuffled_batches_are_a_permutation_and_resized(synthetic_data):
    data = synthetic_data["test"]
    g = torch.Generator().manual_seed(0)
    parts = list(batches(data, 64, shuffle=True, generator=g, device=CPU, augment="crop_flip", image_size=48))
    assert [len(y) for _, y in parts] == [64] * 7 + [500 - 7 * 64]
    assert parts[0][0].shape == (64, 3, 48, 48)
    labels = torch.cat([y for _, y in parts])
    assert not torch.equal(labels, data["labels"])
    assert torch.equal(labels.sort().values, data["labels"].sort().values)


def test_crop_flip_matches_a_per_image_reference():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    out = crop_flip(images, torch.Generator().manual_seed(3))
    dy, dx, flip = crop_flip_draws(6, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(6):  # the slow, obvious way: crop, then flip
        expected = padded[i, :, dy[i, 0] : dy[i, 0] + 8, dx[i, 0] : dx[i, 0] + 8]
        expected = expected.flip(-1) if flip[i] else expected
        assert torch.equal(out[i], expected)
    assert flip.any() and not flip.all()


def test_resuming_mid_epoch_yields_the_remaining_batches(synthetic_data):
    kwargs = dict(shuffle=True, device=CPU, augment="crop_flip", image_size=32)
    full = list(batches(synthetic_data["test"], 64, generator=torch.Generator().manual_seed(5), **kwargs))
    rest = list(
        batches(synthetic_data["test"], 64, generator=torch.Generator().manual_seed(5), start=3, **kwargs)
    )
    assert len(rest) == len(full) - 3
    for (a, ya), (b, yb) in zip(full[3:], rest, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_stratified_subset_keeps_class_shares(synthetic_data):
    labels = synthetic_data["train"]["labels"]  # 200 per class
    index = stratified_subset(labels, 105, seed=1)
    assert len(index) == 105 == len(set(index.tolist()))
    counts = labels[index].bincount(minlength=10)
    assert counts.min() >= 10 and counts.max() <= 11
    assert torch.equal(index, stratified_subset(labels, 105, seed=1))
    assert not torch.equal(index, stratified_subset(labels, 105, seed=2))
    assert torch.equal(stratified_subset(labels, None, seed=0), torch.arange(len(labels)))


# --- optimizers and schedules -----------------------------------------------------------


def test_optimizers_and_their_defaults():
    params = torch.nn.Linear(3, 1)
    yogi = build_optimizer(params, make_settings(optimizer="yogi", eps=None), 0.01)
    assert type(yogi).__name__ == "Yogi" and yogi.defaults["eps"] == 1e-3  # its own default, not adam's
    assert build_optimizer(params, make_settings(optimizer="yogi", eps=1e-8), 0.01).defaults["eps"] == 1e-8
    assert build_optimizer(params, make_settings(optimizer="adam"), 0.01).defaults["eps"] == 1e-8
    sgd = build_optimizer(params, make_settings(optimizer="sgd", nesterov=True, weight_decay=5e-4), 0.1)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert [g["weight_decay"] for g in sgd.param_groups] == [5e-4]  # set per group (optim.param_groups)
    adamw = build_optimizer(params, make_settings(optimizer="adamw", weight_decay=0.05), 1e-3)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(params, make_settings(optimizer="lion"), 0.1)


def lrs(schedule: str, **overrides) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(
        optimizer, make_settings(epochs=4, schedule=schedule, **overrides), steps_per_epoch=10
    )
    seen = []
    for _ in range(40):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_schedules():
    assert lrs("constant") == [0.1] * 40
    onecycle = lrs("onecycle")
    assert max(onecycle) == pytest.approx(0.1) and onecycle[0] < 0.01 and onecycle[-1] < 1e-4
    cosine = lrs("cosine", warmup_epochs=1)
    assert cosine[:10] == pytest.approx([0.01 * (i + 1) for i in range(10)])  # linear warmup
    assert all(a >= b for a, b in zip(cosine[9:], cosine[10:], strict=False))  # then decays
    assert cosine[-1] < 0.001
    assert lrs("cosine")[0] == pytest.approx(0.1)


# --- the training loop ------------------------------------------------------------------


def test_a_small_model_learns(synthetic_data):
    run = make_run(epochs=3)
    result = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])
    assert result["status"] == "ok"
    assert result["history"][-1]["test_accuracy"] > 30  # chance is 10 %
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    assert result["params_total"] == result["params_trainable"] == 62_006
    assert result["images_per_second"] > 0 and result["device"].startswith("cpu")


def test_same_seed_and_settings_give_identical_runs(synthetic_data):
    run = make_run(
        model="dropout_cnn", dropout=0.5, augment="crop_flip", epochs=2, train_subset=256, test_subset=100
    )
    a = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])
    b = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])
    assert comparable(a["history"]) == comparable(b["history"])
    assert same_state(a["model"], b["model"])


def test_recipe_settings_train(synthetic_data):
    """Augmentation, label smoothing, weight decay, a warmup+cosine schedule and a subset together."""
    run = make_run(
        model="dropout_cnn", dropout=0.2, optimizer="sgd", lr=0.02, nesterov=True, schedule="cosine",
        warmup_epochs=1, label_smoothing=0.1, augment="crop_flip", weight_decay=5e-4, epochs=2,
        train_subset=400, test_subset=100,
    )  # fmt: skip
    result = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])
    assert result["status"] == "ok" and len(result["history"]) == 2
    assert result["history"][0]["lr"] == pytest.approx(0.02)  # the end of the warmup epoch
    assert result["history"][1]["lr"] < 0.002  # cosine down to ~0


def test_a_crashed_run_resumes_from_its_last_epoch(synthetic_data, tmp_path, monkeypatch):
    run = make_run(epochs=3, augment="crop_flip", train_subset=400, test_subset=100)
    data = (run, synthetic_data["train"], synthetic_data["test"])
    reference = train_run(*data, device=CPU, lr=run["lr"])

    checkpoint = tmp_path / "ckpt.pt"
    real_pass, calls = scoring.split_logits, []

    def crash_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash (node lost)")
        return real_pass(*args, **kwargs)

    monkeypatch.setattr(scoring, "split_logits", crash_in_epoch_two)
    monkeypatch.setattr(training, "CHECKPOINT_INTERVAL_S", 0.0)  # a checkpoint after every epoch
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(*data, device=CPU, lr=run["lr"], checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    monkeypatch.setattr(scoring, "split_logits", real_pass)

    resumed = train_run(*data, device=CPU, lr=run["lr"], checkpoint=checkpoint)
    assert comparable(resumed["history"]) == comparable(reference["history"])
    assert same_state(resumed["model"], reference["model"])


@pytest.mark.parametrize(("interval", "expected"), [(3600.0, [None, None, 3]), (0.0, [1, 2, 3])])
def test_checkpoints_wait_their_interval_but_the_last_epoch_always_writes_one(
    synthetic_data, tmp_path, monkeypatch, interval, expected
):
    """Epochs faster than CHECKPOINT_INTERVAL_S write no checkpoint until the last one."""
    run = make_run(epochs=3, train_subset=200, test_subset=50)
    checkpoint, saved_after = tmp_path / "ckpt.pt", []
    monkeypatch.setattr(training, "CHECKPOINT_INTERVAL_S", interval)

    def on_epoch(row: dict, _model) -> None:
        saved_after.append(
            torch.load(checkpoint, weights_only=True)["epoch"] if checkpoint.exists() else None
        )

    train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"],
              checkpoint=checkpoint, on_epoch=on_epoch)  # fmt: skip
    assert saved_after == expected


def test_the_environment_sets_the_checkpoint_interval_and_a_bad_one_stops_before_training(
    synthetic_data, tmp_path, monkeypatch
):
    """CIFARLAB_CHECKPOINT_INTERVAL_S overrides the hour set here: a checkpoint after every epoch.
    A value that is not seconds >= 0 is an error naming the variable, raised before any epoch."""
    run = make_run(epochs=2, train_subset=200, test_subset=50)
    checkpoint, saved_after = tmp_path / "ckpt.pt", []
    monkeypatch.setattr(training, "CHECKPOINT_INTERVAL_S", 3600.0)
    monkeypatch.setenv(training.CHECKPOINT_INTERVAL_ENV, "0")

    def on_epoch(row: dict, _model) -> None:
        saved_after.append(
            torch.load(checkpoint, weights_only=True)["epoch"] if checkpoint.exists() else None
        )

    train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"],
              checkpoint=checkpoint, on_epoch=on_epoch)  # fmt: skip
    assert saved_after == [1, 2]

    def epoch_ran(*_) -> None:
        pytest.fail("an epoch ran before the bad interval was named")

    for bad in ("soon", "-5", "nan"):
        monkeypatch.setenv(training.CHECKPOINT_INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match="CIFARLAB_CHECKPOINT_INTERVAL_S=.*seconds >= 0"):
            train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"],
                      checkpoint=tmp_path / "other.pt", on_epoch=epoch_ran)  # fmt: skip


def sigterm_at(epoch: int, step: int):
    """An `epoch_batches` that sends this process SIGTERM before batch `step` of `epoch` (0-based)."""
    real_batches, at_epoch = training.epoch_batches, epoch

    def epoch_batches(data, settings, *, epoch, **options):
        for i, batch in enumerate(real_batches(data, settings, epoch=epoch, **options)):
            if epoch == at_epoch and i == step:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    return epoch_batches


def stop_and_resume(data: tuple, lr: float, checkpoint, monkeypatch, *, epoch: int, step: int) -> dict:
    """Train until SIGTERM before batch `step` of `epoch` (0-based), then resume from the checkpoint.

    {"saved": the checkpoint dict, "handler": SIGTERM's handler after the stop, "resumed": the result}.
    """
    real_batches = training.epoch_batches
    monkeypatch.setattr(training, "epoch_batches", sigterm_at(epoch=epoch, step=step))
    with pytest.raises(TrainingInterrupted, match=f"SIGTERM during epoch {epoch + 1}, step {step + 1}"):
        train_run(*data, device=CPU, lr=lr, checkpoint=checkpoint)
    stopped = {
        "saved": torch.load(checkpoint, weights_only=True),
        "handler": signal.getsignal(signal.SIGTERM),
    }
    monkeypatch.setattr(training, "epoch_batches", real_batches)
    return {**stopped, "resumed": train_run(*data, device=CPU, lr=lr, checkpoint=checkpoint)}


def test_sigterm_mid_epoch_saves_and_resumes_exactly(synthetic_data, tmp_path, monkeypatch):
    """A stop signal mid-epoch saves the step and the RNG; the resumed run matches, dropout included."""
    run = make_run(
        model="dropout_cnn", dropout=0.3, epochs=2, augment="crop_flip", train_subset=384, test_subset=64
    )
    data = (run, synthetic_data["train"], synthetic_data["test"])
    reference = train_run(*data, device=CPU, lr=run["lr"])
    stopped = stop_and_resume(data, run["lr"], tmp_path / "ckpt.pt", monkeypatch, epoch=1, step=3)
    saved, resumed = stopped["saved"], stopped["resumed"]
    assert (saved["epoch"], saved["running"]["step"]) == (1, 4)
    assert stopped["handler"] is signal.SIG_DFL  # the handler is removed again
    assert comparable(resumed["history"]) == comparable(reference["history"])
    assert same_state(resumed["model"], reference["model"])


def test_sigterm_without_a_checkpoint_path_says_nothing_was_saved(synthetic_data, monkeypatch):
    run = make_run(epochs=1, train_subset=256, test_subset=64)
    monkeypatch.setattr(training, "epoch_batches", sigterm_at(epoch=0, step=2))
    with pytest.raises(TrainingInterrupted, match="no checkpoint path was given, so nothing was saved"):
        train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])


def test_a_changed_run_never_resumes_a_stale_checkpoint(synthetic_data, tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    old = make_run(epochs=1, train_subset=300, test_subset=100)
    train_run(
        old, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=old["lr"], checkpoint=checkpoint
    )
    new = make_run(epochs=1, lr=1e-3, train_subset=300, test_subset=100)
    fresh = train_run(new, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=new["lr"])
    after = train_run(
        new, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=new["lr"], checkpoint=checkpoint
    )
    assert comparable(after["history"]) == comparable(fresh["history"])


def test_an_absurd_lr_stops_the_run_as_diverged(synthetic_data):
    run = make_run(optimizer="sgd", lr=1e6, epochs=3, test_subset=100)
    result = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])
    assert result["status"] == "diverged"
    assert result["diverged"]["epoch"] == 1 and result["diverged"]["lr"] == 1e6
    assert result["diverged"]["loss"] in ("nan", "inf")
    assert len(result["history"]) == 1 and math.isnan(result["history"][0]["test_accuracy"])


# --- the validation split and the chosen epoch ------------------------------------------


def test_the_validation_split_is_stratified_disjoint_and_the_same_for_every_seed(synthetic_data):
    labels = synthetic_data["train"]["labels"]  # 200 images of each of 10 classes
    splits = {s: train_validation_split(labels, validation=500, train_subset=300, seed=s) for s in (1, 2)}
    assert torch.equal(splits[1][1], splits[2][1])  # one held-out set, whatever the run's seed
    assert not torch.equal(splits[1][0], splits[2][0])  # while train_subset is drawn with the seed
    for train_index, held_out in splits.values():
        assert not set(train_index.tolist()) & set(held_out.tolist())
        assert torch.bincount(labels[held_out], minlength=10).tolist() == [50] * 10
        assert torch.bincount(labels[train_index], minlength=10).tolist() == [30] * 10
    rest, held_out = train_validation_split(labels, validation=500, train_subset=None, seed=1)
    assert torch.equal(torch.cat([rest, held_out]).sort().values, torch.arange(2000))  # all the rest
    # Class shares are kept when the classes are uneven (3:1 here).
    uneven = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    train_index, held_out = train_validation_split(uneven, validation=40, train_subset=200, seed=0)
    assert torch.bincount(uneven[held_out]).tolist() == [30, 10]
    assert torch.bincount(uneven[train_index]).tolist() == [150, 50]
    # Off (0): nothing held out, and exactly the subset a run drew before there was a split.
    train_index, held_out = train_validation_split(labels, validation=0, train_subset=300, seed=1)
    assert torch.equal(train_index, stratified_subset(labels, 300, seed=1)) and len(held_out) == 0
    with pytest.raises(ValueError, match="validation: 2000 .* fewer than 2000"):
        train_validation_split(labels, validation=2000, train_subset=None, seed=0)


def wrecked_last_epoch(**overrides) -> dict:
    """3 epochs on 1,600 images, 400 held out: two epochs of Adam at 3e-3 that learn, then a third
    whose lr ramps up to 300 x (the linear schedule), which sends accuracy back to chance."""
    settings = {
        "validation": 400, "test_subset": 100, "epochs": 3, "schedule": "linear", "warmup_epochs": 2,
        "lr_start_factor": 1.0, "lr_end_factor": 300.0,
    }  # fmt: skip
    return make_run(**{**settings, **overrides})


def accuracy_on(model: torch.nn.Module, data: dict, run: dict) -> tuple[float, float]:
    return scoring.evaluation_pass(model, data, RunSettings.from_dict(run), CPU, "fp32")


def test_the_best_validation_epoch_is_chosen_and_its_weights_returned(synthetic_data):
    run = wrecked_last_epoch()
    train, test = synthetic_data["train"], synthetic_data["test"]
    result = train_run(run, train, test, device=CPU, lr=run["lr"])
    history = result["history"]
    best = max(history, key=lambda row: row["val_accuracy"])
    assert result["best_epoch"] == best["epoch"] < 3  # the wrecked last epoch is not the one kept
    assert result["best_validation_accuracy"] == best["val_accuracy"]
    assert (result["train_images"], result["validation_images"]) == (1600, 400)
    # The model returned is the chosen epoch's: its held-out and test figures are those recorded then.
    _, held_out = train_validation_split(train["labels"], validation=400, train_subset=None, seed=run["seed"])
    loss, accuracy = accuracy_on(result["model"], subset(train, held_out), run)
    assert (loss, accuracy) == (
        pytest.approx(best["val_loss"], rel=1e-5),
        pytest.approx(best["val_accuracy"]),
    )
    test_subset = subset(test, stratified_subset(test["labels"], 100, training.TEST_SUBSET_SEED))
    assert accuracy_on(result["model"], test_subset, run)[1] == pytest.approx(best["test_accuracy"])


@pytest.mark.parametrize("validation", [400, 0])
def test_the_chosen_epoch_and_weights_never_depend_on_the_test_set(synthetic_data, validation):
    """Two trainings that differ only in their test set (noise images, shuffled labels) choose the
    same epoch and return identical weights; only the test columns of their histories differ."""
    run = wrecked_last_epoch(validation=validation)
    train, test = synthetic_data["train"], synthetic_data["test"]
    generator = torch.Generator().manual_seed(0)
    other = {
        **test,
        "images": torch.randint(0, 256, test["images"].shape, dtype=torch.uint8, generator=generator),
        "labels": test["labels"][torch.randperm(len(test["labels"]), generator=generator)],
    }
    a = train_run(run, train, test, device=CPU, lr=run["lr"])
    b = train_run(run, train, other, device=CPU, lr=run["lr"])
    assert a["best_epoch"] == b["best_epoch"] and same_state(a["model"], b["model"])
    untested = [{k: v for k, v in row.items() if not k.startswith("test_")} for row in a["history"]]
    assert comparable(untested) == comparable(
        [{k: v for k, v in row.items() if not k.startswith("test_")} for row in b["history"]]
    )
    assert [row["test_accuracy"] for row in a["history"]] != [row["test_accuracy"] for row in b["history"]]


def test_without_validation_the_model_is_the_last_epoch(synthetic_data):
    run = wrecked_last_epoch(validation=0)
    train, test = synthetic_data["train"], synthetic_data["test"]
    result = train_run(run, train, test, device=CPU, lr=run["lr"])
    history = result["history"]
    # The last epoch, even though an earlier one did better on the test set (that is not looked at).
    assert max(row["test_accuracy"] for row in history) > history[-1]["test_accuracy"]
    assert (result["best_epoch"], result["best_validation_accuracy"]) == (3, None)
    assert (result["train_images"], result["validation_images"]) == (2000, 0)
    assert all(math.isnan(row["val_loss"]) and math.isnan(row["val_accuracy"]) for row in history)
    test_subset = subset(test, stratified_subset(test["labels"], 100, training.TEST_SUBSET_SEED))
    assert accuracy_on(result["model"], test_subset, run)[1] == pytest.approx(history[-1]["test_accuracy"])


def test_a_resumed_validated_run_chooses_the_same_epoch_and_weights(synthetic_data, tmp_path, monkeypatch):
    run = wrecked_last_epoch()
    data = (run, synthetic_data["train"], synthetic_data["test"])
    reference = train_run(*data, device=CPU, lr=run["lr"])
    # Stopped in the wrecked third epoch: the chosen epoch and its weights come from the checkpoint.
    stopped = stop_and_resume(data, run["lr"], tmp_path / "ckpt.pt", monkeypatch, epoch=2, step=3)
    assert stopped["saved"]["best"]["epoch"] == reference["best_epoch"] < 3
    resumed = stopped["resumed"]
    assert resumed["best_epoch"] == reference["best_epoch"]
    assert comparable(resumed["history"]) == comparable(reference["history"])
    assert same_state(resumed["model"], reference["model"])


def test_lr_auto_reads_the_lr_finder_result(tmp_path):
    path = tmp_path / "finder.json"
    path.write_text(json.dumps({"lr": 0.0123, "chosen": "valley"}))
    assert resolve_lr(make_run(lr="auto"), path, "valley") == (0.0123, "lr_finder:valley")
    assert resolve_lr(make_run(lr=0.5), None) == (0.5, "config")
    with pytest.raises(ValueError, match="config asks for 'steepest'"):
        resolve_lr(make_run(lr="auto"), path, "steepest")
    path.write_text(json.dumps({"lr": None, "chosen": "valley"}))
    with pytest.raises(ValueError, match="must be a positive number"):
        resolve_lr(make_run(lr="auto"), path, "valley")


SUBPROCESS = """
import sys, json, torch
from cifarlab.training import loop
from cifarlab.training.loop import main
torch.set_num_threads({threads})
loop.CHECKPOINT_INTERVAL_S = 0.0  # a checkpoint after every epoch: the test waits for the first
main(train_path={train!r}, test_path={test!r}, model_path={model!r}, history_path={history!r},
     run=json.loads({run!r}), device="cpu", checkpoint={checkpoint!r}, precision={precision!r})
"""


@pytest.mark.slow
@pytest.mark.precision
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sigterm_to_a_training_process_exits_nonzero_then_resumes(synthetic_files, tmp_path, precision):
    """Resumed equals uninterrupted bit for bit in each precision. Both runs are given the precision
    outright: with `auto`, a CPU with native bf16 trained the stopped run in bf16 and the reference
    (train_run's fp32 default) in fp32, and the two differed in the 4th digit of the loss."""
    run = make_run(epochs=3, train_subset=640, test_subset=100)
    paths = {
        "train": str(synthetic_files["train"]),
        "test": str(synthetic_files["test"]),
        "model": str(tmp_path / "model.pt"),
        "history": str(tmp_path / "history.csv"),
        "checkpoint": str(tmp_path / "checkpoints" / "run.pt"),
    }
    code = SUBPROCESS.format(
        threads=torch.get_num_threads(), run=json.dumps(run), precision=precision, **paths
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(paths["checkpoint"]):  # the first epoch's checkpoint
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0, "a stopped run must fail so that Snakemake reruns it"
    assert "TrainingInterrupted: SIGTERM" in stderr and "rerun to resume" in stderr
    assert not os.path.exists(paths["model"]) and not os.path.exists(paths["history"])
    assert os.path.exists(paths["checkpoint"])

    resumed = training.main(
        train_path=paths["train"], test_path=paths["test"], model_path=paths["model"],
        history_path=paths["history"], run=run, device="cpu", checkpoint=paths["checkpoint"],
        precision=precision,
    )  # fmt: skip
    assert os.path.exists(paths["model"]) and not os.path.exists(paths["checkpoint"])
    data = {split: torch.load(path, weights_only=True) for split, path in synthetic_files.items()}
    reference = train_run(run, data["train"], data["test"], device=CPU, lr=run["lr"], precision=precision)
    assert resumed["precision"] == reference["precision"] == precision
    assert comparable(resumed["history"]) == comparable(reference["history"])
    assert same_state(resumed["model"], reference["model"])


def test_oversized_subset_is_recorded_as_what_was_used(synthetic_data, caplog):
    """train_subset above the split's size trains on all images, says so, and records that number."""
    run = make_run(epochs=1, train_subset=100_000, test_subset=50_000)
    with caplog.at_level("WARNING", logger="cifarlab.training.loop"):
        result = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])
    assert result["train_images"] == 2000 and result["test_images"] == 500
    assert any("train_subset 100000" in r.message and "2000" in r.message for r in caplog.records)


ORPHAN_PARENT = r"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(child.pid, flush=True)
time.sleep(600)
"""

ORPHAN_CHILD = r"""
import sys, torch
from cifarlab.data import synthetic
from cifarlab.training import checkpoints
from cifarlab.training.loop import train_run
torch.set_num_threads(1)
checkpoints.PARENT_CHECK_S = 0.2
splits = synthetic.make_dataset(train_per_class=100, test_per_class=10, size=32, seed=0)
def prepared(images, labels):
    pixels = images.float() / 255
    return {"images": images, "labels": labels, "classes": list(synthetic.CLASSES),
            "mean": pixels.mean(dim=(0, 2, 3)), "std": pixels.std(dim=(0, 2, 3))}
run = RUN  # a complete run, written in by the test
train_run(run, prepared(*splits["train"]), prepared(*splits["test"]), device=torch.device("cpu"),
          lr=0.01, checkpoint=sys.argv[1])
"""


ORPHAN_RUN = make_run(name="orphan", epochs=1000, batch_size=16, optimizer="sgd", lr=0.01)


@pytest.mark.slow
def test_training_child_stops_when_its_parent_is_killed(tmp_path):
    """kill -9 of Snakemake leaves the training process an orphan: it saves and exits by itself."""
    checkpoint = tmp_path / "orphan.pt"
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_PARENT, ORPHAN_CHILD.replace("RUN", repr(ORPHAN_RUN)), str(checkpoint)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, training.CHECKPOINT_INTERVAL_ENV: "0"},  # the first epoch's checkpoint
    )
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:  # an epoch done: training runs
        time.sleep(0.2)
    assert checkpoint.exists()
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}") and not _zombie(child):
        time.sleep(0.2)
    alive = os.path.exists(f"/proc/{child}") and not _zombie(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the orphaned training process kept running"
    assert torch.load(checkpoint, weights_only=True)["running"] is not None  # saved mid-epoch


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
