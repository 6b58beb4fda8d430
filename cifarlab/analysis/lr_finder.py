"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks").

One sweep trains the model for `num_iter` mini-batches while raising the lr exponentially from
`start_lr` to `end_lr`, records the loss of every step and smooths it with a bias-corrected
exponential moving average; it stops early once the smoothed loss passes `diverge_factor` times
its best. Three suggestions are read off the smoothed curve (`valley`, `steepest`,
`minimum_div_10`). A single sweep is noisy, which is why the lab found it "too unstable": the
sweep is repeated with other batch orders and seeds, and every suggestion is reported as a
median with its spread across repeats in decades of lr (log10 of max / min).

The generic core (`lr_range_test`, `suggest`, `summarize`) knows nothing about the lab: it takes
a model, an optimizer, a `next_batch()` callable and a loss function. `run_lr_finder` is the glue
for one run of the config, and `cifarlab.plots.lr_finder.plot_lr_finder` draws the figure from the
results JSON.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from cifarlab.config.schema import schema_defaults
from cifarlab.core import progress
from cifarlab.core.files import load_torch, write_json
from cifarlab.core.paths import job_label

if TYPE_CHECKING:  # training's modules are imported where they run (plots read this module too)
    from cifarlab.training.settings import RunSettings

log = logging.getLogger(__name__)

METHODS = ("valley", "steepest", "minimum_div_10")

# The finder's settings (config key `lr_finder`, less `runs`) default to the schema's
# (cifarlab/config/config.schema.yaml, `lr_finder`): read there, never restated here.
SCHEMA_DEFAULTS = {k: v for k, v in schema_defaults("lr_finder").items() if k != "runs"}

# Points left out of the suggestions (as fastai does): the first tenth of the planned sweep,
# where the bias-corrected average rests on a handful of losses, and the last few recorded
# steps, where the loss blows up and the stop condition fired.
SKIP_END = 5
MIN_POINTS = 5  # fewer usable points than this and no suggestion is meaningful
# With a validation split, the loss recorded after every step is that of a fixed set of at most
# this many of the run's held-out images (docs/lr_finder.md says why a fixed set, and this size).
HELD_OUT_IMAGES = 256


def lr_schedule(start_lr: float, end_lr: float, num_iter: int) -> np.ndarray:
    """The lr of each step: `num_iter` values from start_lr to end_lr, evenly spaced in log lr."""
    if not 0 < start_lr < end_lr:
        raise ValueError(f"the LR finder needs 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_iter < 2:
        raise ValueError(f"the LR finder needs num_iter >= 2 mini-batches, got {num_iter}")
    return np.geomspace(start_lr, end_lr, num_iter)


@contextlib.contextmanager
def _restored(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Put the model's and the optimizer's state (and the model's mode) back as they came."""
    # Deep copies: state_dict() returns references to tensors that the sweep updates in place.
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    try:
        yield
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        model.train(was_training)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every param group's lr: `lr` (in the run's units) times the group's `lr_scale`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        if "decay_per_step" in group:  # decoupled weight decay: the same decay at every lr
            group["weight_decay"] = group["decay_per_step"] / group["lr"]


def lr_range_test(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    start_lr: float = SCHEMA_DEFAULTS["start_lr"],
    end_lr: float = SCHEMA_DEFAULTS["end_lr"],
    num_iter: int = SCHEMA_DEFAULTS["num_iter"],
    smoothing: float = SCHEMA_DEFAULTS["smoothing"],
    diverge_factor: float = SCHEMA_DEFAULTS["diverge_factor"],
    train_mode: Callable[[torch.nn.Module], Any] = torch.nn.Module.train,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    held_out_loss: Callable[[torch.nn.Module], float] | None = None,
) -> dict[str, Any]:
    """One sweep of the range test; the model and optimizer are left exactly as they came.

    `next_batch()` returns one (inputs, targets) mini-batch on the model's device; `loss_fn`
    maps (model output, targets) to a scalar loss. Every param group's lr is overwritten at
    each step (times the group's `lr_scale`, when it has one). `smoothing` is the weight of
    the newest loss in the moving average.
    `train_mode(model)` puts the model in training mode (training's own, e.g. one that keeps a
    frozen backbone in eval mode) and `autocast()` wraps the forward pass (bf16 on CUDA).
    held_out_loss: when given, the loss recorded at each step is `held_out_loss(model)` after
    the step (the model's loss on held-out images; it may change the model's mode, which is reset
    to `train_mode` before the next step), not the training batch's loss before it.

    Returns {"lrs", "losses", "smoothed"} (one float per completed step, the lr being the one
    that step trained with), "diverged" (True when the sweep stopped early: smoothed loss above
    diverge_factor x its best, or a non-finite loss) and "steps" (completed steps).
    """
    if not 0 < smoothing <= 1:
        raise ValueError(f"smoothing is the weight of the newest loss, in (0, 1]; got {smoothing}")
    if diverge_factor <= 1:
        raise ValueError(f"diverge_factor must be > 1 (a multiple of the best loss), got {diverge_factor}")
    lrs = lr_schedule(start_lr, end_lr, num_iter)

    losses: list[float] = []
    smoothed: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    with _restored(model, optimizer):
        train_mode(model)
        for step, lr in enumerate(lrs):
            _set_lr(optimizer, float(lr))
            inputs, targets = next_batch()
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                outputs = model(inputs)
            loss = loss_fn(outputs.float(), targets)
            value = loss.item()  # a sync per step, needed anyway to stop on divergence
            if not math.isfinite(value):
                diverged = True
                break
            loss.backward()
            optimizer.step()
            if held_out_loss is not None:
                value = held_out_loss(model)
                train_mode(model)
                if not math.isfinite(value):
                    diverged = True
                    break
            # Bias correction: without it the first averages are pulled towards the zero start.
            average = (1 - smoothing) * average + smoothing * value
            smooth = average / (1 - (1 - smoothing) ** (step + 1))
            losses.append(value)
            smoothed.append(smooth)
            best = min(best, smooth)
            if smooth > diverge_factor * best:
                diverged = True
                break
    steps = len(losses)
    return {
        "lrs": [float(lr) for lr in lrs[:steps]],
        "losses": losses,
        "smoothed": smoothed,
        "diverged": diverged,
        "steps": steps,
    }


def _longest_fall(loss: np.ndarray) -> tuple[int, int]:
    """(first, last) index of the longest stretch where `loss` falls, as fastai's `valley` finds it.

    The length is that of the longest strictly decreasing subsequence ending at `last`, which
    tolerates the small bumps a contiguous run would break at; the stretch is then taken to be
    the `length` points before `last`. Not the subsequence's own first element: on the flat,
    noisy start of a sweep a decreasing subsequence threads a few points far back into the
    plateau, and its middle would land a decade low (measured on the logistic-regression test
    problem). O(n^2), n <= a few 100.
    """
    n = len(loss)
    length = np.ones(n, dtype=int)
    for i in range(1, n):
        for j in range(i):
            if loss[i] < loss[j] and length[j] + 1 > length[i]:
                length[i] = length[j] + 1
    last = int(np.argmax(length))  # the first of the longest: the lowest lrs
    return last - int(length[last]) + 1, last


def _slopes(loss: np.ndarray, x: np.ndarray, half: int) -> np.ndarray:
    """d loss / d x by central differences `half` points either side (one-sided at the ends)."""
    i = np.arange(len(loss))
    lo, hi = np.clip(i - half, 0, len(loss) - 1), np.clip(i + half, 0, len(loss) - 1)
    return (loss[hi] - loss[lo]) / (x[hi] - x[lo])


def suggest(
    lrs: list[float], smoothed: list[float], *, skip_start: int, skip_end: int = SKIP_END, slope_half: int = 1
) -> dict:
    """The three suggestions from one sweep's smoothed curve, in lr units.

    - valley: the middle (in log lr) of the longest stretch where the loss falls (fastai's).
    - steepest: where the loss falls fastest against log10(lr), the slope taken over
      `slope_half` points either side. Neighbouring points of a moving average differ by noise
      that a one-step difference turns into spurious steep drops; `repeated_range_test` spans
      the average's own window (1 / smoothing steps).
    - minimum_div_10: a tenth of the lr at the lowest loss.

    The first `skip_start` and last `skip_end` points are left out (see SKIP_END).
    """
    n = len(smoothed)
    if len(lrs) != n:
        raise ValueError(f"lrs and smoothed losses differ in length: {len(lrs)} vs {n}")
    end = n - skip_end
    if end - skip_start < MIN_POINTS:
        raise ValueError(
            f"the LR sweep has {n} usable steps, too few for a suggestion after leaving out the first "
            f"{skip_start} and last {skip_end}: it diverged almost at once. Lower lr_finder.start_lr "
            f"or raise lr_finder.num_iter / diverge_factor."
        )
    log_lr = np.log10(np.asarray(lrs[skip_start:end], dtype=float))
    loss = np.asarray(smoothed[skip_start:end], dtype=float)
    first, last = _longest_fall(loss)
    return {
        "valley": float(10 ** log_lr[(first + last) // 2]),
        "steepest": float(10 ** log_lr[int(np.argmin(_slopes(loss, log_lr, slope_half)))]),
        "minimum_div_10": float(10 ** log_lr[int(np.argmin(loss))] / 10),
    }


def summarize(per_repeat: list[dict[str, float]]) -> dict[str, dict]:
    """Each method's suggestions across repeats: the lrs, their median and their spread.

    Medians and quartiles are taken in log lr (an lr scale is multiplicative): with an even
    number of repeats the median is the geometric mean of the middle two. Spreads are in
    decades: `spread_decades` = log10(max / min), `iqr_decades` = log10(q75 / q25).
    """
    summary = {}
    for method in per_repeat[0]:
        lrs = [r[method] for r in per_repeat]
        logs = np.log10(lrs)
        q25, q75 = np.percentile(logs, [25, 75])
        summary[method] = {
            "lrs": lrs,
            "median": float(10 ** np.median(logs)),
            "spread_decades": float(logs.max() - logs.min()),
            "iqr_decades": float(q75 - q25),
        }
    return summary


def finder_settings(finder: dict) -> dict:
    """The config's `lr_finder` section (less `runs`) with the schema's defaults filled in, checked."""
    unknown = sorted(set(finder) - set(SCHEMA_DEFAULTS) - {"runs"})
    if unknown:
        raise ValueError(f"unknown lr_finder setting(s) {unknown}; allowed: {sorted(SCHEMA_DEFAULTS)}")
    settings = {**SCHEMA_DEFAULTS, **{k: v for k, v in finder.items() if k != "runs"}}
    if settings["suggestion"] not in METHODS:
        raise ValueError(f"lr_finder.suggestion is {settings['suggestion']!r}; allowed: {list(METHODS)}")
    if int(settings["repeats"]) < 1:
        raise ValueError(f"lr_finder.repeats must be >= 1, got {settings['repeats']}")
    return settings


def repeated_range_test(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    make_batches: Callable[[int], Callable[[], tuple[torch.Tensor, torch.Tensor]]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    settings: dict,
    seed: int = 0,
    name: str = "lr_find",
    **options: Any,
) -> dict[str, Any]:
    """`settings["repeats"]` sweeps from the same starting weights, each with its own seed.

    Repeat r uses seed `seed + r` for its batch order (`make_batches(seed + r)` returns that
    repeat's next_batch) and for everything drawn from torch's global generator during the sweep
    (dropout, augmentation). The caller's RNG state is restored afterwards, as are the model and
    the optimizer, so the same seed gives identical repeats and training is not disturbed.
    `options` (train_mode, autocast) go to `lr_range_test`. After each repeat a progress line
    (`name repeat r/n | ~time left`) goes to the terminal (cifarlab.core.progress).

    Returns the results dict of docs/architecture.md, less the run's name and timing:
    "lrs" (the planned schedule), "repeats" (per repeat: seed, losses, smoothed, diverged,
    steps, suggestions), "suggestions" (see `summarize`), "chosen" and "lr".
    """
    settings = finder_settings(settings)
    sweep = {k: settings[k] for k in ("start_lr", "end_lr", "num_iter", "smoothing", "diverge_factor")}
    skip_start = int(settings["num_iter"]) // 10
    slope_half = max(1, round(0.5 / settings["smoothing"]))
    device = next(model.parameters()).device
    # Fork the accelerator's generator too (dropout draws from it there); on CPU there is none.
    accelerator = device.type in ("cuda", "mps")
    fork = {
        "devices": [device.index or 0] if accelerator else [],
        "device_type": device.type if accelerator else None,
    }
    repeats = []
    steps = progress.Steps(name, int(settings["repeats"]), "repeats", every=0)
    for r in range(int(settings["repeats"])):
        with torch.random.fork_rng(**fork):
            torch.manual_seed(seed + r)
            result = lr_range_test(model, optimizer, make_batches(seed + r), loss_fn, **sweep, **options)
        result["seed"] = seed + r
        result["suggestions"] = suggest(
            result["lrs"], result["smoothed"], skip_start=skip_start, slope_half=slope_half
        )
        log.info(
            "repeat %d (seed %d): %d steps%s; %s",
            r,
            seed + r,
            result["steps"],
            ", diverged" if result["diverged"] else "",
            ", ".join(f"{m} {lr:.2e}" for m, lr in result["suggestions"].items()),
        )
        repeats.append(result)
        steps.update(r + 1)
    summary = summarize([r["suggestions"] for r in repeats])
    chosen = settings["suggestion"]
    return {
        "lrs": [
            float(lr) for lr in lr_schedule(settings["start_lr"], settings["end_lr"], settings["num_iter"])
        ],
        "repeats": repeats,
        "suggestions": summary,
        "chosen": chosen,
        "lr": summary[chosen]["median"],
        "skip_start": skip_start,
        "skip_end": SKIP_END,
        "settings": settings,
    }


def _cycle(epoch_batches: Callable[[int], Iterator]) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """next_batch() over epochs 0, 1, 2, ... (a small train_subset may need more than one)."""
    epoch = 0
    iterator = epoch_batches(epoch)

    def next_batch():
        nonlocal epoch, iterator
        try:
            return next(iterator)
        except StopIteration:
            epoch += 1
            iterator = epoch_batches(epoch)
            return next(iterator)

    return next_batch


def run_lr_finder(
    run: dict,
    train: dict,
    finder: dict,
    *,
    device: torch.device,
    cached_train: dict | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The repeated range test of one run, set up exactly as its training starts.

    The run's model with its initial weights (`build_model` seeds them from run["seed"]), its
    optimizer (momentum, weight decay, ...), batch size, augmentation, train_subset and loss
    (cross-entropy with its label smoothing); its lr schedule is replaced by the sweep. Repeat r
    draws batches and dropout from seed run["seed"] + r, so repeat 0 sees training's first batches.
    With `validation` on, it trains on training's images (not the held-out ones) and records
    the loss of up to HELD_OUT_IMAGES fixed held-out images after each step (`loss_on`:
    "validation"); off, the training batch's loss (`loss_on`: "training").

    train: the prepared training dict (docs/architecture.md). cached_train: the cached backbone
    features of the training set for a frozen-backbone run (then only the head sweeps, on them,
    as in training). precision: the job's resolved one. The swept lr is in the run's units: each
    param group gets it times its `lr_scale` (train.param_groups). Returns the contents of
    `results/<dataset>/lr_finder/<run>.json`.
    """
    from cifarlab.core.device import autocast, describe
    from cifarlab.models import set_train_mode
    from cifarlab.training.optim import build_optimizer
    from cifarlab.training.settings import RunSettings

    started = time.perf_counter()
    settings = RunSettings.from_dict(run)
    finder = finder_settings(finder)
    trainable, data, held_out_loss, held_out_images = _sweep_setup(
        run, settings, train, cached_train, device, precision
    )
    optimizer = build_optimizer(trainable, settings, finder["start_lr"])
    log.info(
        "LR range test of %s (%s, %s, batch %d) on %s: %d training images, the loss of %s",
        settings.name, settings.model, settings.optimizer, settings.batch_size, describe(device),
        len(data["labels"]),
        f"{held_out_images} held-out images after each step" if held_out_loss else "each training batch",
    )  # fmt: skip
    result = repeated_range_test(
        trainable, optimizer, _batches_of(settings, data, device, precision), _loss_of(settings), finder,
        seed=settings.seed, name=f"lr_find {job_label(run, per_seed=False)}",
        train_mode=set_train_mode, autocast=lambda: autocast(device, precision), held_out_loss=held_out_loss,
    )  # fmt: skip
    for method, s in result["suggestions"].items():
        log.info(
            "%s: median %.3g, spread %.2f decades (IQR %.2f) over %d repeats",
            method, s["median"], s["spread_decades"], s["iqr_decades"], len(s["lrs"]),
        )  # fmt: skip
    return {
        "run": settings.name,
        "model": settings.model,
        "optimizer": settings.optimizer,
        "batch_size": settings.batch_size,
        "loss_on": "validation" if held_out_loss else "training",
        "held_out_images": held_out_images,  # 0: the training batches' losses
        **result,
        "device": describe(device),
        "seconds": time.perf_counter() - started,
    }


def _sweep_setup(
    run: dict,
    settings: RunSettings,
    train: dict,
    cached_train: dict | None,
    device: torch.device,
    precision: str,
) -> tuple[torch.nn.Module, dict, Callable[[torch.nn.Module], float] | None, int]:
    """(the module that sweeps, on the device; its training data there; the held-out loss after a
    step, None without a validation split; how many held-out images that loss is over), as
    training sets them up (cifarlab.training.setup)."""
    from cifarlab.core.device import place
    from cifarlab.models import build_model
    from cifarlab.training.batching import to_device
    from cifarlab.training.sampling import VALIDATION_SPLIT_SEED, stratified_subset, subset
    from cifarlab.training.scoring import evaluation_pass
    from cifarlab.training.setup import check_cached, trainable_and_data, training_split

    model = build_model(run, len(train["classes"]))
    index, validation_index = training_split(settings, train["labels"])
    # A fixed stratified part of the held-out images: the same at every step, repeat and seed.
    held_out_index = validation_index[
        stratified_subset(train["labels"][validation_index], HELD_OUT_IMAGES, VALIDATION_SPLIT_SEED)
    ]
    if cached_train is not None:
        check_cached(cached_train, train, "train")
    trainable, data = trainable_and_data(model, settings, train, index, cached_train, device=device)
    place(trainable, device, precision)
    data = to_device(data, device)
    if not len(held_out_index):
        return trainable, data, None, 0
    held_out = to_device(subset(train if cached_train is None else cached_train, held_out_index), device)

    def held_out_loss(module: torch.nn.Module) -> float:
        return evaluation_pass(module, held_out, settings, device, precision)[0]

    return trainable, data, held_out_loss, len(held_out_index)


def _batches_of(
    settings: RunSettings, data: dict, device: torch.device, precision: str
) -> Callable[[int], Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    """make_batches(seed) for repeated_range_test: training's batches (augmented as the run is)
    drawn with `seed`, over as many epochs as the sweep needs."""
    from cifarlab.training.augment import epoch_batches

    def make_batches(seed: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        repeat = dataclasses.replace(settings, seed=seed)
        return _cycle(
            lambda epoch: epoch_batches(data, repeat, epoch=epoch, device=device, precision=precision)
        )

    return make_batches


def _loss_of(settings: RunSettings) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Training's loss: cross-entropy with the run's label smoothing."""

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=settings.label_smoothing)

    return loss_fn


def main(
    *,
    train_path: str | Path,
    result_path: str | Path,
    run: dict,
    finder: dict,
    device: str = "auto",
    cached_train: str | Path | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> dict:
    """The `lr_find` step: read the prepared data, sweep, write `results/<dataset>/lr_finder/<run>.json`."""
    from cifarlab.core.device import pick_device, resolve_precision

    if threads:
        torch.set_num_threads(threads)
    torch_device = pick_device(device)
    chosen = resolve_precision(torch_device, precision)
    finder = finder_settings(finder)  # a bad setting fails before the data are read
    train = load_torch(train_path)
    cached = load_torch(cached_train) if cached_train is not None else None
    result = run_lr_finder(run, train, finder, device=torch_device, cached_train=cached, precision=chosen)
    write_json(result, result_path, indent=1)
    log.info("%s: lr %.3g (%s) written to %s", run["name"], result["lr"], result["chosen"], result_path)
    return result
