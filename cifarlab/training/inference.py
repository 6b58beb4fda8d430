"""Inference over a whole split at large batches: the forward passes of `evaluate` and `features`.

As airbench94 evaluates: the split is uploaded to the device once, each batch is normalised (and,
for test-time augmentation, flipped and shifted) there, and the outputs stay on the device until
one copy back at the end, so the device never waits on a host copy between batches. Inference
keeps no activations for a backward pass, so its batches can be far larger than training's; a
model in eval mode scores each image on its own (batch norm uses its running statistics), so the
batch size changes no prediction (tests/test_evaluate.py compares with batches of one image).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cifarlab.training.batching import to_float

# Pixels per forward pass (images x height x width): 1,024 CIFAR images at 32 px, 20 at 224 px.
# A pass's activations grow with its pixels; this many keep VGG16's largest (64 channels, fp32)
# near 270 MB, which fits a GPU beside the model and the CPU's memory alike.
INFERENCE_PIXELS = 1024 * 32 * 32
# Rows of cached backbone features per pass through a head (4096 floats each for VGG16: 16 MB).
FEATURE_BATCH = 1024


def inference_batch(data: dict, image_size: int) -> int:
    """Images (or feature rows) per forward pass for the prepared or cached-features dict `data`
    at `image_size` px: INFERENCE_PIXELS' worth of images, at least one; FEATURE_BATCH rows."""
    if "features" in data:
        return FEATURE_BATCH
    return max(1, INFERENCE_PIXELS // (image_size * image_size))


def input_batches(
    data: dict, *, image_size: int, device: torch.device, channels_last: bool, batch: int
) -> Iterator[torch.Tensor]:
    """The model inputs of `data`, in order, `batch` at a time, made on `device` from one upload.

    Images: normalised float32 B x 3 x image_size^2 (batching.to_float, channels-last when asked),
    exactly the tensors of a training job's test pass. Cached features: float32 B x D rows.
    """
    if "features" in data:
        features = data["features"].to(device)
        for first in range(0, len(features), batch):
            yield features[first : first + batch]
        return
    images = data["images"].to(device)
    mean, std = data["mean"].to(device), data["std"].to(device)
    for first in range(0, len(images), batch):
        yield to_float(images[first : first + batch], mean, std, image_size, channels_last)
