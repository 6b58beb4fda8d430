"""Batches from in-memory uint8 tensors, unaugmented: the plain loop that training augments
(cifarlab.training.augment), and the passes over a whole split in order (`split_batches`, at
`inference_batch` images per pass) that scoring and the features step make, of images or of the
cached features of a frozen backbone.

The hot path never touches PIL, a DataLoader or a per-sample Python loop: the prepared uint8
images sit on the device, and each batch is indexed, converted, normalised and resized as one
tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F


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
    device: torch.device | str,
    image_size: int,
    channels_last: bool = False,
    start: int = 0,
    order: torch.Tensor | None = None,
    augment_batch: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of a prepared dict: x normalised float N x 3 x image_size^2 on `device`, y int64 N.

    `order` (int64, the epoch's order of the images, on any device; it crosses to the device
    once, so a batch never waits for the host) or None: the images in their order, each batch a
    slice of the uploaded split (no gather). `augment_batch(x, positions)` returns the uint8
    images x augmented, `positions` being the batch's slice of the epoch's order (its draws are
    made per epoch: augment.EpochDraws). `start` skips that many batches (resuming mid-epoch).
    The last batch may be smaller.
    """
    images, labels = data["images"].to(device), data["labels"].to(device)
    mean, std = data["mean"].to(device), data["std"].to(device)
    n = labels.numel()
    if order is not None and order.device != images.device:
        order = upload(order, images.device)
    for first in range(start * batch_size, n, batch_size):
        positions = slice(first, min(first + batch_size, n))
        index = positions if order is None else order[positions]
        x = images[index]
        if augment_batch is not None:
            x = augment_batch(x, positions)
        yield to_float(x, mean, std, image_size, channels_last), labels[index]


def feature_batches(
    data: dict, batch_size: int, *, generator: torch.Generator | None, device: torch.device | str,
    start: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """(features, labels) batches from a cached-features dict: shuffled from `generator` (in the
    same order `augment.batches` would give the images), or in order for None."""
    features, labels = data["features"].to(device), data["labels"].to(device)
    n = labels.numel()
    order = None
    if generator is not None:
        order = upload(epoch_order(n, shuffle=True, generator=generator), features.device)
    for first in range(start * batch_size, n, batch_size):
        index = slice(first, first + batch_size) if order is None else order[first : first + batch_size]
        yield features[index], labels[index]


# Pixels per forward pass of a split's scoring or embedding (images x height x width) on a GPU
# (CUDA, MPS): 1,024 CIFAR images at 32 px, 20 at 224 px. Without a backward pass nothing is kept
# for gradients, so these batches can be far larger than training's, and a GPU runs a few large
# launches instead of many small ones; a pass's activations grow with its pixels, and this many
# keep VGG16's largest (64 channels, fp32) near 270 MB, which fits beside the model and a
# training job's optimizer state.
INFERENCE_PIXELS = 1024 * 32 * 32
# On a CPU large batches are slower: their activations leave the caches. Images/s of the test
# pass at 32 px on a 2-core AMD EPYC (benchmarks/README.md), 1,024 against 128 per pass: simple CNN
# fp32 0.71x, bf16 1.05x; airbench 0.97x / 0.82x; dropout CNN 0.58x / 0.64x. 64-256 were within
# about 20 % of each other; 128 is a good middle over models and precisions.
CPU_INFERENCE_PIXELS = 128 * 32 * 32
# ...but not fewer images than this: at 224 px a batch of 2 ran VGG16's features at 0.65x the
# images/s of 16 or 64 (bf16, the same CPU; alike in fp32), and ResNet18's at 0.7-0.8x of 8 or 24.
CPU_MIN_INFERENCE_BATCH = 16
# Rows of cached backbone features per pass through a head (4096 floats each for VGG16: 16 MB).
FEATURE_BATCH = 1024


def inference_batch(data: dict, image_size: int, device: torch.device) -> int:
    """Images (or feature rows) per forward pass without a backward one, for the prepared or
    cached-features dict `data` at `image_size` px on `device`: INFERENCE_PIXELS' worth of images
    on a GPU (at least one), CPU_INFERENCE_PIXELS' on the CPU (at least CPU_MIN_INFERENCE_BATCH);
    FEATURE_BATCH rows."""
    if "features" in data:
        return FEATURE_BATCH
    if torch.device(device).type == "cpu":
        return max(CPU_MIN_INFERENCE_BATCH, CPU_INFERENCE_PIXELS // (image_size * image_size))
    return max(1, INFERENCE_PIXELS // (image_size * image_size))


def split_batches(
    data: dict, batch_size: int, *, device: torch.device, image_size: int, channels_last: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of a whole split, in order, unaugmented, `batch_size` at a time, made on
    `device` from one upload of `data`: prepared images (x normalised float32 B x 3 x
    image_size^2, channels-last when asked: the tensors of a training step, unaugmented) or cached
    features (a "features" key: x float32 B x D rows); y int64 B."""
    if "features" in data:
        return feature_batches(data, batch_size, generator=None, device=device)
    return image_batches(data, batch_size, device=device, image_size=image_size, channels_last=channels_last)
