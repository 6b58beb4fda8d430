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


def image_batches(
    data: dict,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device | str,
    image_size: int,
    channels_last: bool = False,
    start: int = 0,
    augment_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    skip_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of a prepared dict: x normalised float N x 3 x image_size^2 on `device`, y int64 N.

    The order (when `shuffle`) is drawn from `generator` (CPU). `augment_batch(x, index)` returns
    the uint8 images x (of the images at `index`, int64 N) augmented; `skip_batch(n)` draws what
    augmenting n images would, for each of the `start` batches skipped (resuming mid-epoch with the
    same random draws as an uninterrupted pass). The last batch may be smaller.
    """
    images, labels = data["images"].to(device), data["labels"].to(device)
    mean, std = data["mean"].to(device), data["std"].to(device)
    n = labels.numel()
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i, first in enumerate(range(0, n, batch_size)):
        index = order[first : first + batch_size]
        if i < start:  # keep the later batches' draws as they were
            if skip_batch is not None:
                skip_batch(len(index))
            continue
        x = images[index.to(images.device)]
        if augment_batch is not None:
            x = augment_batch(x, index)
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
