"""A model's loss and accuracy over batches, with test-time augmentation (`tta_views`): the passes
that training (each epoch's validation and test), the LR finder and evaluation share.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.core.device import autocast
from cifarlab.training.batching import test_batches
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


def evaluation_pass(
    model: nn.Module, data: dict, settings: RunSettings, device: torch.device, precision: str
) -> tuple[float, float]:
    """(mean cross-entropy in nats, accuracy in %) of `model` on `data` (unaugmented, in order)."""
    loss, accuracy, _ = loss_and_accuracy(
        model, test_batches(data, settings, device=device, precision=precision), device, precision
    )
    return loss, accuracy
