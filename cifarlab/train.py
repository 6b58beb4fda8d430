"""Training: batches from in-memory uint8 tensors, optimizers, schedules, the epoch loop, resume.

The hot path never touches PIL, a DataLoader or a per-sample Python loop: the prepared uint8
images sit on the device, and each batch is indexed, augmented (random crop + flip, or
alternating flip, and translation), converted, normalised and resized as one tensor.

Parts of airbench94's recipe (cifarlab/airbench.py) are general features here, each a run setting:
alternating flip and reflect-padded translation, per-parameter-group lr and weight decay,
hyperparameters decoupled from batch size, a piecewise-linear schedule, lookahead (a weight EMA
that the weights are reset to) and test-time augmentation (`tta_logits`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab import progress
from cifarlab.config import settings_hash
from cifarlab.device import autocast, describe, pick_device, resolve_precision, synchronize, use_channels_last
from cifarlab.files import DamagedFileError, atomic_path, load_torch, save_torch
from cifarlab.models import NORM_LAYERS, build_model, count_parameters, head_of, set_train_mode
from cifarlab.paths import job_label
from cifarlab.results import HISTORY_COLUMNS  # history.csv's columns; cifarlab.results reads it

log = logging.getLogger(__name__)

CROP_PADDING = 4  # pixels of zero padding around the image before the random crop (as in torchvision)
# Every run sees the same test subset (a fair comparison), whatever its own seed.
TEST_SUBSET_SEED = 0
# Every run and seed holds out the same validation images (`validation`), so that seeds and runs
# are compared on one held-out set; train_subset is then drawn, with the run's seed, from the rest.
VALIDATION_SPLIT_SEED = 0
# Steps between checks of the loss for NaN/inf: each check waits for the GPU, so not every step.
DIVERGENCE_CHECK_STEPS = 25
# Seconds between checks that the parent (Snakemake) still lives: after a `kill -9` of it, the
# training process would otherwise run on alone, holding the CPU or GPU and the lock's outputs.
PARENT_CHECK_S = 5.0
AUGMENTS = ("none", "crop_flip", "alternating_flip")
# Decoupled hyperparameters are stated per this many examples (airbench94's convention).
DECOUPLED_EXAMPLES = 1024


# --- Data -------------------------------------------------------------------------------


def stratified_subset(labels: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of `size` items with the class proportions of `labels` (all when size is None).

    Classes get their share by largest remainder, so the subset has exactly `size` items; which
    items is drawn with `seed`.
    """
    n = labels.numel()
    if size is None or size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    classes, counts = labels.unique(return_counts=True)
    quota = counts.double() * size / n
    take = quota.floor().long()
    remainder = size - int(take.sum())
    take[torch.argsort(quota - take, descending=True, stable=True)[:remainder]] += 1
    shuffled = labels[order]
    picked = [order[shuffled == c][: int(k)] for c, k in zip(classes, take, strict=True)]
    return torch.cat(picked).sort().values


def train_validation_split(
    labels: torch.Tensor, *, validation: int, train_subset: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of a training split: both sorted, int64, disjoint.

    The validation images are a stratified `validation` of the split drawn with the fixed
    VALIDATION_SPLIT_SEED (the same images whatever the run's `seed`; none when validation is 0);
    the run trains on a stratified `train_subset` (all when None) of the other images, drawn
    with `seed`. With validation 0 the train indices are exactly `stratified_subset(labels,
    train_subset, seed)`. Train, the LR finder and the features step all split here.
    """
    n = labels.numel()
    if not 0 <= validation < n:
        raise ValueError(
            f"validation: {validation} held-out images of a training split of {n}; use 0 (off) or "
            f"fewer than {n} images"
        )
    held_out = stratified_subset(labels, validation, VALIDATION_SPLIT_SEED) if validation else torch.arange(0)
    rest = torch.ones(n, dtype=torch.bool)
    rest[held_out] = False
    rest = rest.nonzero().squeeze(1)
    return rest[stratified_subset(labels[rest], train_subset, seed)], held_out


def subset(data: dict, indices: torch.Tensor) -> dict:
    """The prepared (or cached-features) dict restricted to the images at `indices`.

    Cached features may hold only some images of their split (their `indices`, see
    docs/architecture.md); their rows are found by image index, and asking for an image they lack
    is an error. Other keys are kept as they are.
    """
    out = dict(data)
    if "indices" in data:
        have = data["indices"]
        rows = torch.searchsorted(have, indices).clamp(max=max(len(have) - 1, 0))
        missing = int((have[rows] != indices).sum()) if len(have) else len(indices)
        if missing:
            raise ValueError(
                f"the cached features lack {missing} of the {len(indices)} images asked for (they were "
                "made for other subsets); rerun the features step (snakemake does when the runs change)"
            )
        out.pop("indices")
        out["features"] = data["features"][rows]
        out["labels"] = data["labels"][indices]
        return out
    for key in ("images", "features", "labels"):
        if key in data:
            out[key] = data[key][indices]
    return out


def crop_flip_draws(n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """The random numbers of `crop_flip` for n images (CPU): row offsets, column offsets, flips."""
    dy = torch.randint(0, 2 * CROP_PADDING + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * CROP_PADDING + 1, (n, 1), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return dy, dx, flip


def crop_flip(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Random 4-px-padded crop and horizontal flip of a batch (N x C x H x W, any dtype), per image.

    The random numbers are drawn on the CPU from `generator`, so batches are the same on every
    device; the gather itself runs where `images` are.
    """
    dy, dx, flip = (t.to(images.device) for t in crop_flip_draws(len(images), generator))
    return shifted(F.pad(images, (CROP_PADDING,) * 4), CROP_PADDING, dy, dx, flip)


def translate_draws(n: int, pixels: int, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """The random numbers of `translate` for n images (CPU): row and column offsets in [0, 2 * pixels]."""
    dy = torch.randint(0, 2 * pixels + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * pixels + 1, (n, 1), generator=generator)
    return dy, dx


def translate(images: torch.Tensor, pixels: int, generator: torch.Generator | None) -> torch.Tensor:
    """Shift each image of a batch by up to `pixels` in both axes, edges reflected (airbench94's
    translate); N x C x H x W in, same shape out."""
    dy, dx = (t.to(images.device) for t in translate_draws(len(images), pixels, generator))
    no_flip = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    return shifted(F.pad(images, (pixels,) * 4, mode="reflect"), pixels, dy, dx, no_flip)


def flip_phases(n: int, seed: int) -> torch.Tensor:
    """Which of n training images start flipped (bool n): a function of the run's seed only."""
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5


def alternating_flip(images: torch.Tensor, phases: torch.Tensor, epoch: int) -> torch.Tensor:
    """Flip the images whose phase differs from the epoch's parity (N x C x H x W, phases bool N).

    airbench94's scheme: each image is flipped in every other epoch, a random half of them
    starting in epoch 0, so consecutive epochs always see both orientations of every image
    (random flips repeat an orientation half of the time).
    """
    flip = phases != bool(epoch % 2)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def shifted(
    padded: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """The crops of a batch padded by `padding` px at row/column offsets dy, dx (int N x 1, in
    [0, 2 * padding]), read backwards where `flip` (bool N); the size of the unpadded images."""
    n, _, hp, wp = padded.shape
    h, w = hp - 2 * padding, wp - 2 * padding
    rows = dy + torch.arange(h, device=padded.device)  # N x H
    cols = dx + torch.arange(w, device=padded.device)  # N x W
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip reads the columns backwards
    batch = torch.arange(n, device=padded.device)[:, None, None]
    # Advanced indices around a slice put their dims first: N x H x W x C.
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def to_float(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, image_size: int, channels_last: bool = False
) -> torch.Tensor:
    """uint8 N x 3 x H x W -> normalised float32 N x 3 x image_size x image_size."""
    x = images.float().div_(255)
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        # Normalising first is exact: the per-channel affine map commutes with interpolation.
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False,
            antialias=image_size < x.shape[-1],
        )  # fmt: skip
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def to_device(data: dict, device: torch.device | str) -> dict:
    """The prepared dict with its tensors moved to `device` once, before the epochs start."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in data.items()}


def batches(
    data: dict,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device | str,
    augment: str,
    image_size: int,
    channels_last: bool = False,
    start: int = 0,
    translate_pixels: int = 0,
    flip_phase: torch.Tensor | None = None,
    epoch: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches: x normalised float N x 3 x image_size^2 on `device`, y int64 N.

    `data` is a prepared dict (docs/architecture.md); move it with `to_device` first so that the
    images cross to the GPU once, not every epoch. The order (when `shuffle`) and augmentation
    are drawn from `generator` (CPU). augment: none, crop_flip, or alternating_flip (needs
    `flip_phase`, bool per image of `data`, and the `epoch`); `translate_pixels` > 0 adds a
    reflect-padded random translation. `start` skips that many batches (resuming mid-epoch) with
    the same random draws as an uninterrupted pass. The last batch may be smaller.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; use one of {list(AUGMENTS)}")
    if augment == "alternating_flip" and flip_phase is None:
        raise ValueError("augment alternating_flip needs each image's flip_phase (train.flip_phases)")
    images, labels = data["images"].to(device), data["labels"].to(device)
    mean, std = data["mean"].to(device), data["std"].to(device)
    n = labels.numel()
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i, first in enumerate(range(0, n, batch_size)):
        index = order[first : first + batch_size]
        if i < start:  # keep the later batches' draws as they were
            if augment == "crop_flip":
                crop_flip_draws(len(index), generator)
            if translate_pixels:
                translate_draws(len(index), translate_pixels, generator)
            continue
        x = images[index.to(images.device)]
        if augment == "crop_flip":
            x = crop_flip(x, generator)
        elif augment == "alternating_flip":
            x = alternating_flip(x, flip_phase[index].to(x.device), epoch)
        if translate_pixels:
            x = translate(x, translate_pixels, generator)
        yield to_float(x, mean, std, image_size, channels_last), labels[index.to(images.device)]


def feature_batches(
    data: dict, batch_size: int, *, shuffle: bool, generator: torch.Generator | None,
    device: torch.device | str, start: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """(features, labels) batches from a cached-features dict, in the same order `batches` would give."""
    features, labels = data["features"].to(device), data["labels"].to(device)
    n = labels.numel()
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for first in range(start * batch_size, n, batch_size):
        index = order[first : first + batch_size].to(features.device)
        yield features[index], labels[index]


# --- Optimizers and schedules -----------------------------------------------------------


def lr_factor(run: dict) -> float:
    """torch's lr per unit of the run's `lr`: 1, or for `decoupled: true` (SGD) airbench94's
    conversion from a step size per 1,024 examples, momentum-normalised, to a mean-loss lr.

    Decoupled, lr means the same average step whatever the batch size and momentum: with
    gradients constant in time Nesterov momentum m multiplies a step by (1 + 1 / (1 - m))
    (airbench94's kilostep_scale), and a mean loss over B examples is 1/B of their summed loss.
    """
    if not run["decoupled"]:
        return 1.0
    if run["optimizer"] != "sgd":
        raise ValueError(f"decoupled hyperparameters are defined for sgd, not {run['optimizer']!r}")
    return run["batch_size"] / (DECOUPLED_EXAMPLES * (1 + 1 / (1 - run["momentum"])))


def param_groups(module: nn.Module, run: dict, lr: float) -> list[dict]:
    """The trainable parameters of `module` as optimizer groups, each with its lr and weight decay.

    Two groups: `norm` (the parameters of normalisation layers: BatchNorm, LayerNorm, GroupNorm)
    and `other`; run["param_groups"] maps a group to {lr_scale, weight_decay_scale} (both 1 when
    absent). Each group keeps `lr_scale`, torch's lr per unit of the run's lr, which the LR
    finder uses to sweep all groups together. Decoupled, weight_decay is the fraction decayed
    per 1,024 examples, independent of the lr and its scale: torch's coefficient is that over
    the group's lr (the decay per step is lr x coefficient).
    """
    members: dict[str, list[nn.Parameter]] = {"norm": [], "other": []}
    for layer in module.modules():
        group = "norm" if isinstance(layer, NORM_LAYERS) else "other"
        members[group].extend(p for p in layer.parameters(recurse=False) if p.requires_grad)
    factor, weight_decay = lr_factor(run), run["weight_decay"]
    groups = []
    for name, params in members.items():
        if not params:
            continue
        scales = run["param_groups"].get(name, {})
        lr_scale = factor * scales.get("lr_scale", 1.0)
        wd = weight_decay * scales.get("weight_decay_scale", 1.0)
        group = {"params": params, "name": name, "lr": lr * lr_scale, "lr_scale": lr_scale}
        group["weight_decay"] = wd
        if run["decoupled"]:
            # The decay per step, lr x wd, is wd x factor at the run's lr; the LR finder keeps it
            # there while it sweeps the lr (`decay_per_step`), the schedule scales it with the lr.
            group.update(weight_decay=wd * factor / (lr * lr_scale), decay_per_step=wd * factor)
        groups.append(group)
    return groups


def build_optimizer(module: nn.Module, run: dict, lr: float) -> torch.optim.Optimizer:
    """The run's optimizer over the trainable parameters of `module` (grouped by `param_groups`):
    sgd (momentum, nesterov), adam, adamw or yogi (torch-optimizer).

    run["eps"] null keeps each optimizer's own default (yogi's is 1e-3, not adam's 1e-8).
    """
    name, groups = run["optimizer"], param_groups(module, run, lr)
    eps = {} if run["eps"] is None else {"eps": run["eps"]}
    if name == "sgd":
        momentum = run["momentum"]
        # torch rejects nesterov without momentum
        nesterov = run["nesterov"] and momentum > 0
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **eps)
    if name == "yogi":
        import torch_optimizer

        return torch_optimizer.Yogi(groups, lr=lr, **eps)
    raise ValueError(f"unknown optimizer {name!r}; use sgd, adam, adamw or yogi")


def build_scheduler(
    optimizer: torch.optim.Optimizer, run: dict, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step LR schedule (call .step() after every optimizer step).

    constant: the lr throughout. onecycle: torch's OneCycleLR peaking at the lr (momentum is not
    cycled, so the configured momentum holds). cosine: linear warmup over `warmup_epochs`, then
    cosine decay to zero. linear (airbench94's): from `lr_start_factor` x lr up to the lr over
    `warmup_epochs` (fractions allowed), then linearly down to `lr_end_factor` x lr at the end.
    """
    total = run["epochs"] * steps_per_epoch
    schedule = run["schedule"]
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if schedule == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total, cycle_momentum=False
        )
    if schedule == "cosine":
        warmup = min(round(run["warmup_epochs"] * steps_per_epoch), total - 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if schedule == "linear":
        warmup = min(round(run["warmup_epochs"] * steps_per_epoch), total - 1)
        start, end = run["lr_start_factor"], run["lr_end_factor"]

        def piecewise(step: int) -> float:
            if step < warmup:
                return start + (1 - start) * step / warmup
            return 1 + (end - 1) * min((step - warmup) / max(1, total - warmup), 1.0)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, piecewise)
    raise ValueError(f"unknown schedule {schedule!r}; use constant, onecycle, cosine or linear")


# --- The epoch loop ---------------------------------------------------------------------


class TrainingInterrupted(RuntimeError):
    """A stop signal (SIGTERM, SIGINT) arrived; the checkpoint was saved and a rerun resumes."""


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch's batch order and augmentation: a function of (seed, epoch) only,
    so a resumed run redraws exactly the batches the interrupted one would have seen."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_batches(
    data: dict, run: dict, *, epoch: int | None, device: torch.device, start: int = 0, precision: str = "fp32"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of one training epoch (epoch given: shuffled, augmented) or of a test pass (None).

    `data` holds either prepared images or cached features (a "features" key); `precision` is
    the job's resolved one (bf16 batches are channels_last).
    """
    train = epoch is not None
    generator = epoch_generator(run["seed"], epoch) if train else None
    if "features" in data:
        return feature_batches(
            data, run["batch_size"], shuffle=train, generator=generator, device=device, start=start
        )
    return batches(
        data,
        run["batch_size"],
        shuffle=train,
        generator=generator,
        device=device,
        augment=run["augment"] if train else "none",
        image_size=run["image_size"],
        channels_last=use_channels_last(device, precision),
        start=start,
        translate_pixels=run["translate"] if train else 0,
        flip_phase=flip_phases(len(data["labels"]), run["seed"])
        if run["augment"] == "alternating_flip"
        else None,
        epoch=epoch or 0,
    )


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


class Lookahead:
    """airbench94's lookahead: an EMA of the weights that the weights are reset to.

    Every `every` steps: ema <- ema + (1 - d) (w - ema), then w <- ema, with the decay
    d = decay x (step / total_steps) ** power growing from 0 (the EMA follows the weights) to
    `decay`. At the last step d = 1: training ends on the EMA. Every floating-point tensor of the
    state dict takes part (parameters and batch-norm statistics).
    """

    def __init__(self, module: nn.Module, settings: dict, total_steps: int):
        self.every, self.decay, self.power = settings["every"], settings["decay"], settings["power"]
        self.total_steps = total_steps
        self.ema = {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        """The decay of the update after `step` steps (1-based); 1 at the last step."""
        return 1.0 if step >= self.total_steps else self.decay * (step / self.total_steps) ** self.power

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """Call after optimizer step number `step` (counted over the whole training, from 1)."""
        if step % self.every and step < self.total_steps:
            return
        decay, state = self.decay_at(step), module.state_dict()
        for key, ema in self.ema.items():
            ema.lerp_(state[key], 1 - decay)
            state[key].copy_(ema)

    def state_dict(self) -> dict:
        return {k: v.cpu() for k, v in self.ema.items()}

    def load_state_dict(self, state: dict) -> None:
        for key, ema in self.ema.items():
            ema.copy_(state[key])


def tta_views(x: torch.Tensor, tta: str) -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs of test-time augmentation for a batch N x C x H x W; weights sum to 1.

    none: the image. flip: it and its mirror image, 1/2 each. flip_translate (airbench94's
    6 views): those two at 1/4 each, and both orientations shifted by one pixel up-left and
    down-right (edges reflected) at 1/8 each.
    """
    if tta == "none":
        return [(1.0, x)]
    mirror = [(0.5, x), (0.5, x.flip(-1))]
    if tta == "flip":
        return mirror
    if tta != "flip_translate":
        raise ValueError(f"unknown tta {tta!r}; use none, flip or flip_translate")
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifts = [padded[..., :h, :w], padded[..., 2:, 2:]]
    views = [(0.25, v) for _, v in mirror]
    views += [(0.125, v) for s in shifts for v in (s, s.flip(-1))]
    return views


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """The weighted mean of the model's logits (float32 N x classes) over the views of `tta_views`."""
    return sum(weight * model(view).float() for weight, view in tta_views(x, tta))


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    precision: str = "fp32",
    tta: str = "none",
) -> tuple[float, float, torch.Tensor]:
    """(mean cross-entropy in nats, accuracy in %, predicted classes int64 N on the CPU).

    tta: test-time augmentation (`tta_views`); the loss is that of the averaged logits.
    """
    model.eval()
    loss_sum = torch.zeros((), device=device)
    predictions, correct, seen = [], 0, 0
    for x, y in batches:
        with autocast(device, precision):
            logits = tta_logits(model, x, tta)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        predictions.append(logits.argmax(1))
        correct += (predictions[-1] == y).sum()
        seen += len(y)
    return float(loss_sum) / seen, 100.0 * float(correct) / seen, torch.cat(predictions).cpu()


@contextlib.contextmanager
def stop_requests() -> Iterator[list]:
    """A list that receives the name of SIGTERM/SIGINT when one arrives (truthy = stop asked).

    SLURM sends SIGTERM at its time limit and waits before killing; the loop finishes the current
    step, saves a checkpoint and exits non-zero, so that Snakemake reruns (and resumes) the job.
    """
    received: list[str] = []
    done = threading.Event()
    threading.Thread(target=_watch_parent, args=(received, done), daemon=True).start()
    if threading.current_thread() is not threading.main_thread():
        try:
            yield received  # signal handlers can only be set from the main thread
        finally:
            done.set()
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        log.warning("received %s: stopping after this step and saving the checkpoint", name)
        received.append(name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        done.set()
        for s, h in previous.items():
            signal.signal(s, h)


def _watch_parent(received: list, done: threading.Event) -> None:
    """Ask the loop to stop (as a signal would) when this process's parent dies (it is re-parented)."""
    parent = os.getppid()
    while not done.wait(PARENT_CHECK_S):
        if os.getppid() != parent:
            log.warning(
                "the parent process %d exited: stopping after this step and saving the checkpoint", parent
            )
            received.append(f"exit of the parent process {parent}")
            return


def resume_hint(checkpoint: str | Path | None) -> str:
    """What an interrupted run tells its user: where it was saved, or that it was not."""
    if checkpoint is None:
        return "no checkpoint path was given, so nothing was saved; the next run starts over"
    return f"checkpoint saved to {checkpoint}; rerun to resume"


def rng_states(device: torch.device) -> dict:
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        states["mps"] = torch.mps.get_rng_state()
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)
    if "mps" in states and device.type == "mps":
        torch.mps.set_rng_state(states["mps"])


def run_fingerprint(run: dict, lr: float, cached_features: bool, train: dict, test: dict) -> str:
    """What a checkpoint must match to be resumed: the settings, the lr and the data's identity."""
    labels = hashlib.sha256(train["labels"].cpu().numpy().tobytes() + test["labels"].cpu().numpy().tobytes())
    return settings_hash(
        {
            "run": run,
            "lr": lr,
            "cached_features": cached_features,
            "labels": labels.hexdigest(),
            "mean": train["mean"].tolist(),
            "std": train["std"].tolist(),
        }
    )


def load_checkpoint(path: str | Path | None, fingerprint: str) -> dict | None:
    """The checkpoint at `path` if it belongs to this exact run, else None (a stale one is ignored)."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = load_torch(path)
    except DamagedFileError as error:  # a truncated file from a crash of torch.save itself: start again
        log.warning("ignoring unreadable checkpoint %s (%s); training from the start", path, error)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to other settings or data; starting again", path)
        return None
    return state


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


def evaluation_pass(
    model: nn.Module, data: dict, run: dict, device: torch.device, precision: str
) -> tuple[float, float]:
    """(mean cross-entropy in nats, accuracy in %) of `model` on `data` (unaugmented, in order)."""
    loss, accuracy, _ = loss_and_accuracy(
        model, epoch_batches(data, run, epoch=None, device=device, precision=precision), device, precision
    )
    return loss, accuracy


def cpu_state(module: nn.Module) -> dict:
    """A copy of `module`'s state dict on the CPU (the weights of the chosen epoch, kept aside)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def init_from_data(model: nn.Module, data: dict, run: dict) -> None:
    """Let a model that sets weights from the training data (airbench's whitening conv) do so.

    It gets its `init_images` first training images (normalised float, unaugmented).
    """
    if hasattr(model, "init_from_data"):
        images = data["images"][: model.init_images]
        model.init_from_data(to_float(images, data["mean"], data["std"], run["image_size"]))


def start_epoch(model: nn.Module, epoch: int) -> None:
    """Let a model change what trains from epoch to epoch (airbench freezes its whitening bias)."""
    if hasattr(model, "start_epoch"):
        model.start_epoch(epoch)


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
) -> dict:
    """Train one run; returns its result (the `model.pt` fields of docs/architecture.md, plus
    `model` and `history`). precision: the job's resolved one (device.resolve_precision).

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
) -> dict:
    """The `train` step: read the prepared data, train (resuming), write model.pt and history.csv.

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
    result = train_run(
        run, train, test, device=torch_device, lr=lr, lr_source=lr_source, cached_features=cached,
        checkpoint=checkpoint, precision=chosen,
    )  # fmt: skip
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
