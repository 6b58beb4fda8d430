"""The training loop: one run's epochs, with resume, and the `train` step (model.pt, history.csv).

The parts it puts together are modules of their own, so that a step that shares one runs only
that one's code: which images a run sees (`sampling`), batches (`batching`) and augmentation
(`augment`), optimizers and schedules (`optim`), `lookahead`, the loss and accuracy passes with
test-time augmentation (`scoring`), a model's hooks (`hooks`) and stopping and resuming
(`checkpoints`). Parts of airbench94's recipe (cifarlab/models/airbench.py) are general features
there, each a run setting.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.core import progress
from cifarlab.core.device import (
    autocast,
    describe,
    gpu_id,
    gpu_slot,
    pick_device,
    place,
    resolve_precision,
    synchronize,
)
from cifarlab.core.files import atomic_path, load_torch, save_torch
from cifarlab.core.paths import job_label
from cifarlab.models import build_model, count_parameters, set_train_mode, trained_state
from cifarlab.models.build import HEAD, WHOLE
from cifarlab.study.results import HISTORY_COLUMNS  # history.csv's columns; cifarlab.study.results reads it
from cifarlab.training.augment import epoch_batches
from cifarlab.training.batching import to_device
from cifarlab.training.checkpoints import (
    TrainingInterrupted,
    load_checkpoint,
    resume_hint,
    rng_states,
    run_fingerprint,
    set_rng_states,
    stop_requests,
)
from cifarlab.training.hooks import start_epoch
from cifarlab.training.live_curves import EpochHook, live_curves
from cifarlab.training.lookahead import Lookahead
from cifarlab.training.optim import build_optimizer, build_scheduler
from cifarlab.training.sampling import TEST_SUBSET_SEED, stratified_subset, subset
from cifarlab.training.scoring import evaluation_pass
from cifarlab.training.settings import RunSettings
from cifarlab.training.setup import check_cached, trainable_and_data, training_split
from cifarlab.training.timing import StepClock

log = logging.getLogger(__name__)

# Steps between checks of the loss for NaN/inf: each check waits for the GPU, so not every step.
DIVERGENCE_CHECK_STEPS = 25

# Seconds of wall time at least between two resume checkpoints written after an epoch (a checkpoint
# of airbench is 24-57 MB, and its epochs take a fraction of a second on a GPU). The last epoch
# and a stop signal (SIGTERM, SIGINT) always write one.
CHECKPOINT_INTERVAL_S = 60.0
# A cluster whose jobs are preempted often, or a test that must stop a job after its first
# checkpoint, sets another interval in the environment (seconds; 0 = after every epoch). It is
# read by the job, not planned: it cannot change a result, so it reruns nothing.
CHECKPOINT_INTERVAL_ENV = "CIFARLAB_CHECKPOINT_INTERVAL_S"


def checkpoint_interval_s() -> float:
    """Seconds between two resume checkpoints: $CIFARLAB_CHECKPOINT_INTERVAL_S, else CHECKPOINT_INTERVAL_S."""
    value = os.environ.get(CHECKPOINT_INTERVAL_ENV)
    if value is None or value == "":
        return CHECKPOINT_INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise ValueError(
            f"{CHECKPOINT_INTERVAL_ENV}={value!r} is not a number of seconds >= 0: "
            f"set it to e.g. 0 (after every epoch) or 600, or unset it for {CHECKPOINT_INTERVAL_S:g}"
        )
    return seconds


# --- The epoch loop ---------------------------------------------------------------------


def new_running(device: torch.device) -> dict:
    """Sums over the current epoch; kept on the device so that a step never waits for the GPU."""
    return {
        "loss_sum": torch.zeros((), device=device),
        "correct": torch.zeros((), dtype=torch.long, device=device),
        "seen": 0,
        "step": 0,
        "seconds": 0.0,
        "lr": float("nan"),
    }


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    device: torch.device,
    running: dict,
    label_smoothing: float = 0.0,
    stop: list | None = None,
    precision: str = "fp32",
    lookahead: Lookahead | None = None,
    steps_before: int = 0,
    clock: StepClock | None = None,
) -> str:
    """Train on `batches`, adding to `running` (see new_running) in place.

    lookahead: updated after every step; `steps_before` is the number of steps of the earlier
    epochs (its schedule runs over the whole training). clock: told of each step (timing.StepClock).
    Returns "done", "stopped" (a stop signal arrived; the state is that after a whole step) or
    "diverged" (the loss is NaN or infinite).
    """
    set_train_mode(model)
    for x, y in batches:
        if clock is not None:
            clock.before_step(len(y))
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        group = optimizer.param_groups[0]
        running["lr"] = group["lr"] / group.get("lr_scale", 1.0)  # in the run's units (param_groups)
        optimizer.step()
        scheduler.step()
        if lookahead is not None:
            lookahead.update(model, steps_before + running["step"] + 1)
        running["loss_sum"] += loss.detach() * len(y)
        running["correct"] += (logits.argmax(1) == y).sum()
        running["seen"] += len(y)
        running["step"] += 1
        if running["step"] % DIVERGENCE_CHECK_STEPS == 0 and not torch.isfinite(running["loss_sum"]):
            return "diverged"
        if stop:
            return "stopped"
    return "done" if torch.isfinite(running["loss_sum"]) else "diverged"


def _history_row(
    epoch: int, running: dict, validation: tuple[float, float], test: tuple[float, float]
) -> dict:
    """One row of history.csv: `validation` and `test` are (loss, accuracy), NaN when not measured."""
    seen = max(running["seen"], 1)
    return {
        "epoch": epoch,
        "train_loss": float(running["loss_sum"]) / seen,
        "train_accuracy": 100.0 * float(running["correct"]) / seen,
        "val_loss": validation[0],
        "val_accuracy": validation[1],
        "test_loss": test[0],
        "test_accuracy": test[1],
        "lr": running["lr"],
        "seconds": running["seconds"],
        "images": running["seen"],  # not in history.csv: for images/s
    }


NOT_MEASURED = (math.nan, math.nan)  # (loss, accuracy) of a pass that did not run


def cpu_state(module: nn.Module) -> dict:
    """A copy of `module`'s state dict on the CPU (the weights of the chosen epoch, kept aside)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@dataclass
class Images:
    """Which images a run uses (indices into its split) and the data it trains and is scored on."""

    train_index: torch.Tensor
    validation_index: torch.Tensor
    test_index: torch.Tensor
    train: dict  # on the device: images, or the cached backbone features
    test: dict
    validation: dict | None  # the held-out images (or their features); None without a split


@dataclass
class TrainState:
    """What a checkpoint holds besides the weights: the epochs done, their history, the chosen
    epoch so far (its number, validation accuracy and trainable weights on the CPU) and the
    running sums of an epoch stopped half-way (None between epochs)."""

    trainable: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    lookahead: Lookahead | None
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    best: dict = field(default_factory=lambda: {"epoch": None, "accuracy": -math.inf, "state": None})
    running: dict | None = None
    # model.pt's `timing` so far: device seconds of whitening and of the timed training steps
    timing: dict = field(
        default_factory=lambda: {
            "warmup_excluded_steps": 0,
            "whitening_s": 0.0,
            "train_s": 0.0,
            "timed_images": 0,
        }
    )
    saved_at: float = field(default_factory=time.monotonic)  # when the last checkpoint was written

    def checkpoint_due(self, interval_s: float) -> bool:
        """Whether `interval_s` seconds have passed since the last checkpoint (or the start)."""
        return time.monotonic() - self.saved_at >= interval_s

    def save(self, checkpoint: str | Path | None, fingerprint: str, device: torch.device) -> None:
        """Write the resume checkpoint (nothing without a path)."""
        if checkpoint is None:
            return
        self.saved_at = time.monotonic()
        running = self.running
        save_torch(
            {
                "fingerprint": fingerprint,
                "epoch": self.epoch,  # epochs completed
                "running": None if running is None else {
                    k: v.cpu() if torch.is_tensor(v) else v for k, v in running.items()
                },
                "trainable": self.trainable.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "lookahead": None if self.lookahead is None else self.lookahead.state_dict(),
                "rng": rng_states(device),
                "history": self.history,
                "best": self.best,
                "timing": self.timing,
            },
            checkpoint,
        )  # fmt: skip

    def resume(self, saved: dict, device: torch.device) -> None:
        """Take up a checkpoint's state (checkpoints.load_checkpoint's dict) and its RNG states."""
        self.trainable.load_state_dict(saved["trainable"])
        # the kernels (fused, foreach) are this device's (optim.implementation), not the saver's
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(saved["optimizer"])
        for group, chosen in zip(self.optimizer.param_groups, kernels, strict=True):
            group.update(chosen)
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.lookahead is not None:
            self.lookahead.load_state_dict(saved["lookahead"])
        set_rng_states(saved["rng"], device)
        self.history, self.epoch, self.best = saved["history"], saved["epoch"], saved["best"]
        self.timing = saved.get("timing", self.timing)
        if saved["running"] is not None:
            self.running = {k: v.to(device) if torch.is_tensor(v) else v for k, v in saved["running"].items()}


def choose_images(
    settings: RunSettings,
    run: dict,
    model: nn.Module,
    train: dict,
    test: dict,
    cached_features: dict | None,
    device: torch.device,
    precision: str,
    timing: dict | None = None,
) -> tuple[nn.Module, Images]:
    """(the module that trains, on the device; the run's images): the validation split, the
    training and test subsets (capped at what there is, with a warning) and, with cached
    features, the head alone on them. timing: gets `whitening_s` (setup.trainable_and_data)."""
    train_index, validation_index = training_split(settings, train["labels"])
    test_index = stratified_subset(test["labels"], settings.test_subset, TEST_SUBSET_SEED)
    available = {
        "train_subset": len(train["labels"]) - len(validation_index),
        "test_subset": len(test["labels"]),
    }
    for key, index in (("train_subset", train_index), ("test_subset", test_index)):
        if (getattr(settings, key) or 0) > len(index):
            log.warning(
                "%s: %s %d is more than the %d images there are; using all %d (recorded as %s_images)",
                settings.name, key, getattr(settings, key), available[key], len(index), key.split("_")[0],
            )  # fmt: skip
    if cached_features is not None:
        for split, data in (("train", train), ("test", test)):
            check_cached(cached_features[split], data, split)
    trainable, train_data = trainable_and_data(
        model, settings, train, train_index, None if cached_features is None else cached_features["train"],
        device=device, timing=timing,
    )  # fmt: skip
    test_data = subset(test if cached_features is None else cached_features["test"], test_index)
    place(trainable, device, precision)
    validation = None
    if len(validation_index):
        held_out_from = train if cached_features is None else cached_features["train"]
        validation = to_device(subset(held_out_from, validation_index), device)
    images = Images(
        train_index, validation_index, test_index,
        train=to_device(train_data, device), test=to_device(test_data, device), validation=validation,
    )  # fmt: skip
    return trainable, images


def epoch_of_batches(
    state: TrainState,
    run: dict,
    settings: RunSettings,
    images: Images,
    *,
    epoch: int,
    steps_per_epoch: int,
    stop: list,
    device: torch.device,
    precision: str,
    clock: StepClock,
) -> str:
    """Train epoch `epoch` (from its first step, or where a stopped one left off), timing it into
    `state.running` (wall) and `state.timing` (device time of the steps after the warm-up, by
    `clock`); returns train_one_epoch's outcome."""
    running = state.running
    start_epoch(state.trainable, epoch)
    epoch_iter = epoch_batches(
        images.train, settings, epoch=epoch, device=device, start=running["step"], precision=precision
    )
    if sys.stderr.isatty():  # a progress bar for a person watching, never in a log file
        from tqdm import tqdm

        epoch_iter = tqdm(
            epoch_iter, total=steps_per_epoch, initial=running["step"], leave=False,
            desc=f"{job_label(run)} epoch {epoch + 1}/{settings.epochs}",
        )  # fmt: skip
    started = time.perf_counter()
    outcome = train_one_epoch(
        state.trainable, epoch_iter, state.optimizer, state.scheduler, device=device, running=running,
        label_smoothing=settings.label_smoothing, stop=stop, precision=precision,
        lookahead=state.lookahead, steps_before=epoch * steps_per_epoch, clock=clock,
    )  # fmt: skip
    clock.end_epoch()
    synchronize(device)
    running["seconds"] += time.perf_counter() - started
    for key, value in clock.take().items():
        state.timing[key] += value
    return outcome


def score_epoch(
    state: TrainState,
    run: dict,
    settings: RunSettings,
    images: Images,
    epoch: int,
    device: torch.device,
    precision: str,
) -> None:
    """After a whole epoch: the validation pass (keeping the best epoch's weights), the test pass
    (recorded for the per-epoch test curve only: nothing reads it to choose), the history row and
    the epoch's log lines."""
    validation = NOT_MEASURED
    if images.validation is not None:
        validation = evaluation_pass(state.trainable, images.validation, settings, device, precision)
        if validation[1] > state.best["accuracy"]:  # strictly: the first epoch of the best
            state.best = {"epoch": epoch + 1, "accuracy": validation[1], "state": cpu_state(state.trainable)}
    test_loss, test_accuracy = evaluation_pass(state.trainable, images.test, settings, device, precision)
    state.history.append(_history_row(epoch + 1, state.running, validation, (test_loss, test_accuracy)))
    row = state.history[-1]
    val_text = (
        "" if images.validation is None else f"val loss {validation[0]:.4f} acc {validation[1]:.2f}% | "
    )
    log.info(
        "%s epoch %d/%d: train loss %.4f acc %.2f%% | %stest loss %.4f acc %.2f%% | lr %.3g | %.1f s",
        settings.name, epoch + 1, settings.epochs, row["train_loss"], row["train_accuracy"], val_text,
        test_loss, test_accuracy, row["lr"], row["seconds"],
    )  # fmt: skip
    seconds_per_epoch = sum(r["seconds"] for r in state.history) / len(state.history)
    progress.log.info(
        progress.epoch_line(
            job_label(run), epoch + 1, settings.epochs, row["train_loss"], test_accuracy, seconds_per_epoch
        )
    )


def start_state(
    trainable: nn.Module,
    run: dict,
    settings: RunSettings,
    lr: float,
    steps_per_epoch: int,
    checkpoint: str | Path | None,
    fingerprint: str,
    device: torch.device,
) -> TrainState:
    """The optimizer, schedule and lookahead of a fresh run, seeded, or as `checkpoint` left them
    (when its fingerprint matches: the same settings, lr and data)."""
    optimizer = build_optimizer(trainable, settings, lr)
    scheduler = build_scheduler(optimizer, settings, steps_per_epoch)
    lookahead = None
    if settings.lookahead:
        lookahead = Lookahead(trainable, settings.lookahead, settings.epochs * steps_per_epoch)
    torch.manual_seed(settings.seed)  # dropout and other in-model randomness
    state = TrainState(trainable, optimizer, scheduler, lookahead)
    saved = load_checkpoint(checkpoint, fingerprint)
    if saved is not None:
        state.resume(saved, device)
        log.info(
            "resuming %s from %s: epoch %d, step %d",
            settings.name, checkpoint, state.epoch + 1, state.running["step"] if state.running else 0,
        )  # fmt: skip
    return state


def train_run(
    run: dict,
    train: dict,
    test: dict,
    *,
    device: torch.device,
    lr: float,
    lr_source: str = "config",
    cached_features: dict | None = None,
    checkpoint: str | Path | None = None,
    precision: str = "fp32",
    on_epoch: EpochHook | None = None,
) -> dict:
    """Train one run; returns its result (the `model.pt` fields of docs/architecture.md, plus
    `model` and `history`). precision: the job's resolved one (device.resolve_precision).
    on_epoch: called with each epoch's history row and the module being trained, once the epoch
    is checkpointed (the live curves; cifarlab.analysis.verify stops a retraining from it).

    train/test: prepared dicts (docs/architecture.md). cached_features: {"train", "test"}
    the cached features of the frozen backbone (the `features` step); then only the head trains, on them.
    checkpoint: where to save and resume from: after an epoch when checkpoint_interval_s() have
    passed since the last save, after the last epoch and on SIGTERM/SIGINT.
    Raises TrainingInterrupted after saving, when a stop signal arrives.

    The chosen epoch (`best_epoch`, whose weights `model` holds) never depends on the test set:
    with `validation` images held out (train_validation_split) it is the first epoch of the best
    validation accuracy, without them the last epoch; a diverged run has none (and keeps its
    last weights). The per-epoch test loss and accuracy are only recorded, for the curves.
    """
    interval_s = checkpoint_interval_s()  # first: a bad value stops the job before any work
    settings = RunSettings.from_dict(run)
    model = build_model(run, len(train["classes"]))
    whitening: dict = {}
    trainable, images = choose_images(
        settings, run, model, train, test, cached_features, device, precision, timing=whitening
    )
    fingerprint = run_fingerprint(run, lr, cached_features is not None, train, test)
    steps_per_epoch = math.ceil(len(images.train["labels"]) / settings.batch_size)
    state = start_state(trainable, run, settings, lr, steps_per_epoch, checkpoint, fingerprint, device)
    state.timing["whitening_s"] = whitening.get("whitening_s", 0.0)  # this process's (a resume redoes it)
    diverged, clock = None, StepClock(device)
    with stop_requests() as stop:
        for epoch in range(state.epoch, settings.epochs):
            state.running = state.running or new_running(device)
            outcome = epoch_of_batches(
                state, run, settings, images, epoch=epoch, steps_per_epoch=steps_per_epoch, stop=stop,
                device=device, precision=precision, clock=clock,
            )  # fmt: skip
            if outcome == "stopped":  # saved half-way through the epoch: resumed at the next step
                state.epoch = epoch
                state.save(checkpoint, fingerprint, device)
                step = state.running["step"]
                raise TrainingInterrupted(
                    f"{stop[0]} during epoch {epoch + 1}, step {step}: {resume_hint(checkpoint)}"
                )
            if outcome == "diverged":
                diverged = record_divergence(state, settings, epoch)
                if on_epoch is not None:
                    on_epoch(state.history[-1], trainable)
                break
            score_epoch(state, run, settings, images, epoch, device, precision)
            state.running, state.epoch = None, epoch + 1
            if epoch + 1 == settings.epochs or stop or state.checkpoint_due(interval_s):
                state.save(checkpoint, fingerprint, device)
            if on_epoch is not None:  # once the epoch is checkpointed (when one was due)
                on_epoch(state.history[-1], trainable)
            if stop:
                raise TrainingInterrupted(f"{stop[0]} after epoch {epoch + 1}: {resume_hint(checkpoint)}")
    return run_result(
        model, run, state, images, train, diverged, lr=lr, lr_source=lr_source, device=device,
        precision=precision,
    )  # fmt: skip


def record_divergence(state: TrainState, settings: RunSettings, epoch: int) -> dict:
    """The `diverged` record of a run whose loss went NaN or infinite in `epoch` (0-based); its
    history gets the epoch's training row, with nothing measured."""
    running = state.running
    diverged = {"epoch": epoch + 1, "lr": running["lr"], "loss": str(float(running["loss_sum"]))}
    state.history.append(_history_row(epoch + 1, running, NOT_MEASURED, NOT_MEASURED))
    log.error(
        "%s diverged in epoch %d at lr %.3g: the loss is %s; stopping (status: diverged)",
        settings.name, epoch + 1, running["lr"], diverged["loss"],
    )  # fmt: skip
    return diverged


def run_result(
    model: nn.Module,
    run: dict,
    state: TrainState,
    images: Images,
    train: dict,
    diverged: dict | None,
    *,
    lr: float,
    lr_source: str,
    device: torch.device,
    precision: str,
) -> dict:
    """train_run's result: the model with the chosen epoch's weights (on the CPU) and the record."""
    history, best = state.history, state.best
    status = "ok" if diverged is None else "diverged"
    total, trainable_count = count_parameters(model)
    seconds = sum(row["seconds"] for row in history)
    images_seen = sum(row["images"] for row in history)
    model.cpu()
    best_epoch = None  # a diverged run chose no epoch
    if status == "ok" and images.validation is not None:
        state.trainable.load_state_dict(best["state"])
        best_epoch = best["epoch"]
    elif status == "ok":
        best_epoch = len(history)
    return {
        "model": model,
        "history": history,
        "run": run,
        "classes": list(train["classes"]),
        "mean": train["mean"].cpu(),
        "std": train["std"].cpu(),
        "lr": lr,
        "lr_source": lr_source,
        "status": status,
        "diverged": diverged,
        "params_total": total,
        "params_trainable": trainable_count,
        "train_images": len(images.train_index),  # used: a train_subset above the split's size is capped
        "validation_images": len(images.validation_index),
        "test_images": len(images.test_index),
        "best_epoch": best_epoch,
        # the chosen epoch's validation accuracy (%); None without validation or an epoch chosen
        "best_validation_accuracy": best["accuracy"] if best["state"] is not None and best_epoch else None,
        "train_seconds": seconds,
        "images_per_second": images_seen / seconds if seconds > 0 else None,
        "device": describe(device),  # the kind ('cuda (NVIDIA H200)'), whichever GPU of it
        # which of this machine's GPUs it ran on (its id; None off CUDA) and the slot it held
        # (cifarlab.core.gpu_slots; None: no slot): records, never params
        "gpu_id": gpu_id(device),
        "gpu_slot": gpu_slot(),
        "precision": precision,
        # device seconds, warm-up excluded (training.timing): comparable with airbench94's figures
        "timing": dict(state.timing),
        "model_part": HEAD if "features" in images.train else WHOLE,  # what model.pt keeps
    }


# --- Files ------------------------------------------------------------------------------


def write_history(history: list[dict], path: str | Path) -> None:
    """history.csv: one row per epoch (HISTORY_COLUMNS; accuracies in %, seconds of training)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in HISTORY_COLUMNS} for row in history)


def save_model(result: dict, path: str | Path) -> None:
    """model.pt as docs/architecture.md describes it (weights on the CPU, portable across devices)."""
    saved = {k: v for k, v in result.items() if k not in ("model", "history")}
    saved["model_state"] = trained_state(result["model"], result["model_part"])
    save_torch(saved, path)


def resolve_lr(run: dict, lr_finder: str | Path | None, suggestion: str | None = None) -> tuple[float, str]:
    """(lr, lr_source): the run's number, or for `lr: auto` the `lr` of the LR finder's JSON."""
    if run["lr"] != "auto":
        return float(run["lr"]), "config"
    if lr_finder is None:
        raise ValueError(f"run {run['name']!r} has lr: auto but no LR-finder result was given")
    with open(lr_finder) as f:
        result = json.load(f)
    chosen = result.get("chosen")
    if suggestion is not None and chosen is not None and chosen != suggestion:
        raise ValueError(
            f"{lr_finder} holds the {chosen!r} suggestion but the config asks for {suggestion!r}; "
            "rerun lr_find (snakemake does so when its settings change)"
        )
    lr = result.get("lr")
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"{lr_finder}: key 'lr' must be a positive number, got {lr!r}")
    return float(lr), f"lr_finder:{chosen}"


def main(
    *,
    train_path: str | Path,
    test_path: str | Path,
    model_path: str | Path,
    history_path: str | Path,
    run: dict,
    device: str = "auto",
    checkpoint: str | Path | None = None,
    lr_finder: str | Path | None = None,
    lr_suggestion: str | None = None,
    cached_train: str | Path | None = None,
    cached_test: str | Path | None = None,
    threads: int | None = None,
    precision: str = "auto",
    tensorboard: str | Path | None = None,
    record: dict | None = None,
) -> dict:
    """The `train` step: read the prepared data, train (resuming), write model.pt and history.csv.

    tensorboard: the folder of the live curves' event files (cifarlab.training.live_curves; None:
    none written). record: facts about the job kept in model.pt for `python -m cifarlab verify`
    (the code digests, the input files); model.pt also records the torch threads it trained with.
    The checkpoint is removed once both outputs are written.
    """
    if threads:
        torch.set_num_threads(threads)
    torch_device = pick_device(device)
    chosen = resolve_precision(torch_device, precision)
    lr, lr_source = resolve_lr(run, lr_finder, lr_suggestion)
    train, test = load_torch(train_path), load_torch(test_path)
    cached = None
    if cached_train is not None:
        cached = {"train": load_torch(cached_train), "test": load_torch(cached_test)}
    log.info(
        "training %s (%s) on %s with lr %g (%s)%s",
        run["name"], run["model"], describe(torch_device), lr, lr_source,
        " on cached backbone features" if cached else "",
    )  # fmt: skip
    with live_curves(tensorboard) as on_epoch:
        result = train_run(
            run, train, test, device=torch_device, lr=lr, lr_source=lr_source, cached_features=cached,
            checkpoint=checkpoint, precision=chosen, on_epoch=on_epoch,
        )  # fmt: skip
    # threads: a CPU's sums may group otherwise with another count, so verify retrains with these
    result.update(record or {}, threads=torch.get_num_threads())
    save_model(result, model_path)
    write_history(result["history"], history_path)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    log.info(
        "%s finished: status %s, %.1f s of training, %s images/s",
        run["name"], result["status"], result["train_seconds"],
        f"{result['images_per_second']:.0f}" if result["images_per_second"] else "n/a",
    )  # fmt: skip
    return result
