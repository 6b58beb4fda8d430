"""What a model may ask of training: set weights from the training data (airbench's whitening
conv) and change what trains from epoch to epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.training.batching import to_float
from cifarlab.training.settings import RunSettings


def init_from_data(
    model: nn.Module, data: dict, settings: RunSettings, device: torch.device | str = "cpu"
) -> None:
    """Let a model that sets weights from the training data (airbench's whitening conv) do so.

    It gets its `init_images` first training images (normalised float, unaugmented), on `device`:
    the statistics are computed there, whichever device the model is on yet.
    """
    if hasattr(model, "init_from_data"):
        images = data["images"][: model.init_images].to(device)
        mean, std = data["mean"].to(device), data["std"].to(device)
        model.init_from_data(to_float(images, mean, std, settings.image_size))


def start_epoch(model: nn.Module, epoch: int) -> None:
    """Let a model change what trains from epoch to epoch (airbench freezes its whitening bias)."""
    if hasattr(model, "start_epoch"):
        model.start_epoch(epoch)
