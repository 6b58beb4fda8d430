"""Batches from in-memory uint8 tensors, unaugmented: the plain loop that training augments
(cifarlab.training.augment), the test passes and the cached features of a frozen backbone use.

The hot path never touches PIL, a DataLoader or a per-sample Python loop: the prepared uint8
images sit on the device, and each batch is indexed, converted, normalised and resized as one
tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from cifarlab.core.device import use_channels_last
from cifarlab.training.settings import RunSettings


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


def upload(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` (CPU) on `device` in one copy that does not block the host: from pinned memory on
    CUDA, so that Python can queue the epoch's steps while the copy runs."""
    device = torch.device(device)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def epoch_order(n: int, *, shuffle: bool, generator: torch.Generator | None) -> torch.Tensor:
    """The order of an epoch's n items (int64 n, CPU): drawn from `generator` when `shuffle`."""
    return torch.randperm(n, generator=generator) if shuffle else torch.arange(n)


def image_batches(
    data: dict,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str,
    image_size: int,
    channels_last: bool = False,
    start: int = 0,
    order: torch.Tensor | None = None,
    augment_batch: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of a prepared dict: x normalised float N x 3 x image_size^2 on `device`, y int64 N.

    `order` (int64, the epoch's order of the images, on any device) or else one drawn here
    (epoch_order); it crosses to the device once, so a batch never waits for the host.
    `augment_batch(x, positions)` returns the uint8 images x augmented, `positions` being the
    batch's slice of the epoch's order (its draws are made per epoch: augment.EpochDraws).
    `start` skips that many batches (resuming mid-epoch). The last batch may be smaller.
    """
    images, labels = data["images"].to(device), data["labels"].to(device)
    mean, std = data["mean"].to(device), data["std"].to(device)
    n = labels.numel()
    if order is None:
        order = epoch_order(n, shuffle=shuffle, generator=generator)
    order = upload(order, images.device) if order.device != images.device else order
    for first in range(start * batch_size, n, batch_size):
        positions = slice(first, min(first + batch_size, n))
        index = order[positions]
        x = images[index]
        if augment_batch is not None:
            x = augment_batch(x, positions)
        yield to_float(x, mean, std, image_size, channels_last), labels[index]


def feature_batches(
    data: dict, batch_size: int, *, shuffle: bool, generator: torch.Generator | None,
    device: torch.device | str, start: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """(features, labels) batches from a cached-features dict, in the same order `batches` would give."""
    features, labels = data["features"].to(device), data["labels"].to(device)
    n = labels.numel()
    order = upload(epoch_order(n, shuffle=shuffle, generator=generator), features.device)
    for first in range(start * batch_size, n, batch_size):
        index = order[first : first + batch_size]
        yield features[index], labels[index]


def test_batches(
    data: dict, settings: RunSettings, *, device: torch.device, precision: str = "fp32"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of a test pass (in order, unaugmented) of prepared images or of cached features
    (a "features" key); `precision` is the job's resolved one (bf16 batches are channels_last)."""
    if "features" in data:
        return feature_batches(data, settings.batch_size, shuffle=False, generator=None, device=device)
    return image_batches(
        data,
        settings.batch_size,
        shuffle=False,
        generator=None,
        device=device,
        image_size=settings.image_size,
        channels_last=use_channels_last(device, precision),
    )
