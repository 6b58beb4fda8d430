"""What a model may ask of training: set weights from the training data (airbench's whitening
conv) and change what trains from epoch to epoch.
"""

from __future__ import annotations

from torch import nn

from cifarlab.training.batching import to_float
from cifarlab.training.settings import RunSettings


def init_from_data(model: nn.Module, data: dict, settings: RunSettings) -> None:
    """Let a model that sets weights from the training data (airbench's whitening conv) do so.

    It gets its `init_images` first training images (normalised float, unaugmented).
    """
    if hasattr(model, "init_from_data"):
        images = data["images"][: model.init_images]
        model.init_from_data(to_float(images, data["mean"], data["std"], settings.image_size))


def start_epoch(model: nn.Module, epoch: int) -> None:
    """Let a model change what trains from epoch to epoch (airbench freezes its whitening bias)."""
    if hasattr(model, "start_epoch"):
        model.start_epoch(epoch)
