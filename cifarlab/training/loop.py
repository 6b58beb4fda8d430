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
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.core import progress
from cifarlab.core.device import (
    autocast,
    describe,
    pick_device,
    resolve_precision,
    synchronize,
    use_channels_last,
)
from cifarlab.core.files import atomic_path, load_torch, save_torch
from cifarlab.core.paths import job_label
from cifarlab.models import build_model, count_parameters, head_of, set_train_mode
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
from cifarlab.training.hooks import init_from_data, start_epoch
from cifarlab.training.live_curves import EpochHook, live_curves
from cifarlab.training.lookahead import Lookahead
from cifarlab.training.optim import build_optimizer, build_scheduler
from cifarlab.training.sampling import (
    TEST_SUBSET_SEED,
    stratified_subset,
    subset,
    train_validation_split,
)
from cifarlab.training.scoring import evaluation_pass

log = logging.getLogger(__name__)

# Steps between checks of the loss for NaN/inf: each check waits for the GPU, so not every step.
DIVERGENCE_CHECK_STEPS = 25


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
) -> str:
    """Train on `batches`, adding to `running` (see new_running) in place.

    lookahead: updated after every step; `steps_before` is the number of steps of the earlier
    epochs (its schedule runs over the whole training). Returns "done", "stopped" (a stop signal
    arrived; the state is that after a whole step) or "diverged" (the loss is NaN or infinite).
    """
    set_train_mode(model)
    for x, y in batches:
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
    checkpoint: where to save after every epoch (and on SIGTERM/SIGINT) and resume from.
    Raises TrainingInterrupted after saving, when a stop signal arrives.

    The chosen epoch (`best_epoch`, whose weights `model` holds) never depends on the test set:
    with `validation` images held out (train_validation_split) it is the first epoch of the best
    validation accuracy, without them the last epoch; a diverged run has none (and keeps its
    last weights). The per-epoch test loss and accuracy are only recorded, for the curves.
    """
    classes = train["classes"]
    model = build_model(run, len(classes))
    train_index, validation_index = train_validation_split(
        train["labels"], validation=run["validation"], train_subset=run["train_subset"], seed=run["seed"]
    )
    test_index = stratified_subset(test["labels"], run["test_subset"], TEST_SUBSET_SEED)
    available = {
        "train_subset": len(train["labels"]) - len(validation_index),
        "test_subset": len(test["labels"]),
    }
    for key, index in (("train_subset", train_index), ("test_subset", test_index)):
        if (run[key] or 0) > len(index):
            log.warning(
                "%s: %s %d is more than the %d images there are; using all %d (recorded as %s_images)",
                run["name"], key, run[key], available[key], len(index), key.split("_")[0],
            )  # fmt: skip
    if cached_features is None:
        trainable, train_data, test_data = model, subset(train, train_index), subset(test, test_index)
        init_from_data(model, train_data, run)
    else:
        for split, data in (("train", train), ("test", test)):
            if not torch.equal(cached_features[split]["labels"], data["labels"]):
                raise ValueError(
                    f"the cached {split} features do not belong to this {split}.pt (labels differ); "
                    "delete results/features/ and rerun"
                )
        trainable = head_of(model)
        train_data, test_data = (
            subset(cached_features["train"], train_index),
            subset(cached_features["test"], test_index),
        )
    fingerprint = run_fingerprint(run, lr, cached_features is not None, train, test)
    memory_format = torch.channels_last if use_channels_last(device, precision) else torch.preserve_format
    trainable.to(device, memory_format=memory_format)
    train_data, test_data = to_device(train_data, device), to_device(test_data, device)
    validation_data = None  # the held-out images (or their cached features), when the run has some
    if len(validation_index):
        held_out_from = train if cached_features is None else cached_features["train"]
        validation_data = to_device(subset(held_out_from, validation_index), device)

    steps_per_epoch = math.ceil(len(train_data["labels"]) / run["batch_size"])
    optimizer = build_optimizer(trainable, run, lr)
    scheduler = build_scheduler(optimizer, run, steps_per_epoch)
    lookahead = (
        Lookahead(trainable, run["lookahead"], run["epochs"] * steps_per_epoch) if run["lookahead"] else None
    )
    torch.manual_seed(run["seed"])  # dropout and other in-model randomness

    history: list[dict] = []
    first_epoch, running = 0, None
    # The chosen epoch so far (validation on): its number, accuracy and trainable weights (CPU).
    best: dict = {"epoch": None, "accuracy": -math.inf, "state": None}
    state = load_checkpoint(checkpoint, fingerprint)
    if state is not None:
        trainable.load_state_dict(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if lookahead is not None:
            lookahead.load_state_dict(state["lookahead"])
        set_rng_states(state["rng"], device)
        history, first_epoch, best = state["history"], state["epoch"], state["best"]
        if state["running"] is not None:
            running = {k: v.to(device) if torch.is_tensor(v) else v for k, v in state["running"].items()}
        log.info(
            "resuming %s from %s: epoch %d, step %d",
            run["name"], checkpoint, first_epoch + 1, running["step"] if running else 0,
        )  # fmt: skip

    def save(epoch: int, running: dict | None) -> None:
        if checkpoint is None:
            return
        save_torch(
            {
                "fingerprint": fingerprint,
                "epoch": epoch,  # epochs completed
                "running": None if running is None else {
                    k: v.cpu() if torch.is_tensor(v) else v for k, v in running.items()
                },
                "trainable": trainable.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "lookahead": None if lookahead is None else lookahead.state_dict(),
                "rng": rng_states(device),
                "history": history,
                "best": best,
            },
            checkpoint,
        )  # fmt: skip

    status, diverged = "ok", None
    show_bar = sys.stderr.isatty()
    with stop_requests() as stop:
        for epoch in range(first_epoch, run["epochs"]):
            running = running or new_running(device)
            start_epoch(trainable, epoch)
            epoch_iter = epoch_batches(
                train_data, run, epoch=epoch, device=device, start=running["step"], precision=precision
            )
            if show_bar:
                from tqdm import tqdm

                epoch_iter = tqdm(
                    epoch_iter, total=steps_per_epoch, initial=running["step"], leave=False,
                    desc=f"{job_label(run)} epoch {epoch + 1}/{run['epochs']}",
                )  # fmt: skip
            started = time.perf_counter()
            outcome = train_one_epoch(
                trainable, epoch_iter, optimizer, scheduler, device=device, running=running,
                label_smoothing=run["label_smoothing"], stop=stop, precision=precision,
                lookahead=lookahead, steps_before=epoch * steps_per_epoch,
            )  # fmt: skip
            synchronize(device)
            running["seconds"] += time.perf_counter() - started
            if outcome == "stopped":
                save(epoch, running)
                raise TrainingInterrupted(
                    f"{stop[0]} during epoch {epoch + 1}, step {running['step']}: {resume_hint(checkpoint)}"
                )
            if outcome == "diverged":
                status = "diverged"
                diverged = {"epoch": epoch + 1, "lr": running["lr"], "loss": str(float(running["loss_sum"]))}
                history.append(_history_row(epoch + 1, running, NOT_MEASURED, NOT_MEASURED))
                if on_epoch is not None:
                    on_epoch(history[-1], trainable)
                log.error(
                    "%s diverged in epoch %d at lr %.3g: the loss is %s; stopping (status: diverged)",
                    run["name"], epoch + 1, running["lr"], diverged["loss"],
                )  # fmt: skip
                break
            validation = NOT_MEASURED
            if validation_data is not None:
                validation = evaluation_pass(trainable, validation_data, run, device, precision)
                if validation[1] > best["accuracy"]:  # strictly: the first epoch of the best
                    best = {"epoch": epoch + 1, "accuracy": validation[1], "state": cpu_state(trainable)}
            # Recorded for the per-epoch test curve only: nothing above or below reads it.
            test_loss, test_accuracy = evaluation_pass(trainable, test_data, run, device, precision)
            history.append(_history_row(epoch + 1, running, validation, (test_loss, test_accuracy)))
            row = history[-1]
            val_text = (
                "" if validation_data is None else f"val loss {validation[0]:.4f} acc {validation[1]:.2f}% | "
            )
            log.info(
                "%s epoch %d/%d: train loss %.4f acc %.2f%% | %stest loss %.4f acc %.2f%% | lr %.3g | %.1f s",
                run["name"], epoch + 1, run["epochs"], row["train_loss"], row["train_accuracy"], val_text,
                test_loss, test_accuracy, row["lr"], row["seconds"],
            )  # fmt: skip
            seconds_per_epoch = sum(r["seconds"] for r in history) / len(history)
            progress.log.info(
                progress.epoch_line(
                    job_label(run),
                    epoch + 1,
                    run["epochs"],
                    row["train_loss"],
                    test_accuracy,
                    seconds_per_epoch,
                )
            )
            running = None
            save(epoch + 1, None)
            if on_epoch is not None:
                on_epoch(row, trainable)
            if stop:
                raise TrainingInterrupted(f"{stop[0]} after epoch {epoch + 1}: {resume_hint(checkpoint)}")

    total, trainable_count = count_parameters(model)
    seconds = sum(row["seconds"] for row in history)
    images = sum(row["images"] for row in history)
    model.cpu()
    best_epoch = None  # a diverged run chose no epoch
    if status == "ok" and validation_data is not None:
        trainable.load_state_dict(best["state"])
        best_epoch = best["epoch"]
    elif status == "ok":
        best_epoch = len(history)
    return {
        "model": model,
        "history": history,
        "run": run,
        "classes": list(classes),
        "mean": train["mean"].cpu(),
        "std": train["std"].cpu(),
        "lr": lr,
        "lr_source": lr_source,
        "status": status,
        "diverged": diverged,
        "params_total": total,
        "params_trainable": trainable_count,
        "train_images": len(train_index),  # what was used: a train_subset above the split's size is capped
        "validation_images": len(validation_index),
        "test_images": len(test_index),
        "best_epoch": best_epoch,
        # the chosen epoch's validation accuracy (%); None without validation or an epoch chosen
        "best_validation_accuracy": best["accuracy"] if best["state"] is not None and best_epoch else None,
        "train_seconds": seconds,
        "images_per_second": images / seconds if seconds > 0 else None,
        "device": describe(device),
        "precision": precision,
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
    saved["model_state"] = {k: v.detach().cpu() for k, v in result["model"].state_dict().items()}
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
