"""Training: batches from in-memory uint8 tensors, optimizers, schedules, the epoch loop, resume.

The hot path never touches PIL, a DataLoader or a per-sample Python loop: the prepared uint8
images sit on the device, and each batch is indexed, augmented (random crop + flip), converted,
normalised and resized as one tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

CROP_PADDING = 4  # pixels of zero padding around the image before the random crop (as in torchvision)


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


def subset(data: dict, indices: torch.Tensor) -> dict:
    """The prepared (or features) dict restricted to `indices`; other keys are kept as they are."""
    out = dict(data)
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
    n, _, h, w = images.shape
    p = CROP_PADDING
    padded = F.pad(images, (p, p, p, p))
    dy, dx, flip = (t.to(images.device) for t in crop_flip_draws(n, generator))
    rows = dy + torch.arange(h, device=images.device)  # N x H
    cols = dx + torch.arange(w, device=images.device)  # N x W
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip reads the columns backwards
    batch = torch.arange(n, device=images.device)[:, None, None]
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
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches: x normalised float N x 3 x image_size^2 on `device`, y int64 N.

    `data` is a prepared dict (docs/architecture.md); move it with `to_device` first so that the
    images cross to the GPU once, not every epoch. The order (when `shuffle`) and augmentation
    are drawn from `generator` (CPU). `start` skips that many batches (resuming mid-epoch) with
    the same random draws as an uninterrupted pass. The last batch may be smaller.
    """
    if augment not in ("none", "crop_flip"):
        raise ValueError(f"unknown augment {augment!r}; use none or crop_flip")
    images, labels = data["images"].to(device), data["labels"].to(device)
    mean, std = data["mean"].to(device), data["std"].to(device)
    n = labels.numel()
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i, first in enumerate(range(0, n, batch_size)):
        index = order[first : first + batch_size]
        if i < start:
            if augment == "crop_flip":
                crop_flip_draws(len(index), generator)  # keep the later batches' draws as they were
            continue
        index = index.to(images.device)
        x = crop_flip(images[index], generator) if augment == "crop_flip" else images[index]
        yield to_float(x, mean, std, image_size, channels_last), labels[index]


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


def build_optimizer(params: Iterable, run: dict, lr: float) -> torch.optim.Optimizer:
    """The run's optimizer: sgd (momentum, nesterov), adam, adamw or yogi (torch-optimizer).

    run["eps"] null keeps each optimizer's own default (yogi's is 1e-3, not adam's 1e-8).
    """
    name, wd = run["optimizer"], run.get("weight_decay", 0.0)
    eps = {} if run.get("eps") is None else {"eps": run["eps"]}
    if name == "sgd":
        momentum = run.get("momentum", 0.0)
        # torch rejects nesterov without momentum
        nesterov = bool(run.get("nesterov", False)) and momentum > 0
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, **eps)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **eps)
    if name == "yogi":
        import torch_optimizer

        return torch_optimizer.Yogi(params, lr=lr, weight_decay=wd, **eps)
    raise ValueError(f"unknown optimizer {name!r}; use sgd, adam, adamw or yogi")


def build_scheduler(
    optimizer: torch.optim.Optimizer, run: dict, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step LR schedule (call .step() after every optimizer step).

    constant: the lr throughout. onecycle: torch's OneCycleLR peaking at the lr (momentum is not
    cycled, so the configured momentum holds). cosine: linear warmup over `warmup_epochs`, then
    cosine decay to zero.
    """
    total = run["epochs"] * steps_per_epoch
    schedule = run.get("schedule", "constant")
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if schedule == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total, cycle_momentum=False
        )
    if schedule == "cosine":
        warmup = min(run.get("warmup_epochs", 0) * steps_per_epoch, total - 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ValueError(f"unknown schedule {schedule!r}; use constant, onecycle or cosine")
