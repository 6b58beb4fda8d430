"""A model's logits, loss and accuracy over a whole split, with test-time augmentation
(`tta_views`): the one pass that training (each epoch's validation and test), the LR finder's
held-out loss and the `evaluate` step share.

As airbench94 evaluates: the split is uploaded to the device once, batches of
batching.inference_batch images (on a GPU far more than training's: inference keeps no
activations for a backward pass; on the CPU fewer, where large batches leave the caches) are
normalised (and, for TTA, flipped and shifted) there, and the logits stay on the device until the
loss and accuracy come back in one copy, so the device never waits on the host between batches.
A model in eval mode scores each image on its own (batch norm uses its running statistics), so
the batch size changes no fp32 prediction (tests/test_evaluate.py compares with batches of one
image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.core.device import autocast, use_channels_last
from cifarlab.training.batching import inference_batch, split_batches
from cifarlab.training.settings import RunSettings


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


def tta_logits(
    model: nn.Module, x: torch.Tensor, tta: str, plain: torch.Tensor | None = None
) -> torch.Tensor:
    """The weighted mean of the model's logits (float32 N x classes) over the views of `tta_views`;
    `plain`, the logits of x itself where already computed, stands for that view's pass."""
    return sum(
        weight * (plain if plain is not None and view is x else model(view).float())
        for weight, view in tta_views(x, tta)
    )


@torch.no_grad()
def split_logits(
    model: nn.Module,
    data: dict,
    *,
    image_size: int,
    device: torch.device,
    precision: str = "fp32",
    tta: str = "none",
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(plain logits, `tta` logits or None for "none"): float32 N x classes on `device`, in order.

    `data`: a prepared split or cached features (batching.split_batches), uploaded once;
    `batch_size` images per forward pass (None: batching.inference_batch); `precision` the
    job's resolved one. Nothing is copied back. The TTA logits are tta_logits': the first view of
    tta_views is the image itself, whose forward pass is the plain one, run once for both.
    """
    model.eval()
    plain, augmented = [], []
    for x, _ in split_batches(
        data, batch_size or inference_batch(data, image_size, device), device=device, image_size=image_size,
        channels_last=use_channels_last(device, precision),
    ):  # fmt: skip
        with autocast(device, precision):
            logits = model(x).float()
            if tta != "none":
                augmented.append(tta_logits(model, x, tta, plain=logits))
        plain.append(logits)
    return torch.cat(plain), torch.cat(augmented) if augmented else None


def loss_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy in nats, accuracy in %) of logits N x C (any device) for labels int64 N,
    copied back in one copy."""
    labels = labels.to(logits.device)
    loss_sum = F.cross_entropy(logits, labels, reduction="sum")
    correct = (logits.argmax(1) == labels).sum()
    loss_sum, correct = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()  # one copy back
    return loss_sum / len(labels), 100.0 * correct / len(labels)


def evaluation_pass(
    model: nn.Module, data: dict, settings: RunSettings, device: torch.device, precision: str
) -> tuple[float, float]:
    """(mean cross-entropy in nats, accuracy in %) of `model` on `data` (prepared images or cached
    features, on any device; unaugmented, in order) at `settings.image_size` px: split_logits and
    loss_accuracy, at batching.inference_batch images per pass, whatever the run's batch size."""
    logits, _ = split_logits(model, data, image_size=settings.image_size, device=device, precision=precision)
    return loss_accuracy(logits, data["labels"])
