"""What training and the LR finder set up alike before their first step: the part of the model
that trains, the images (or cached backbone features) it trains on, and its place on the device.

One place for both, so that the LR finder's sweep starts exactly as training does
(cifarlab.analysis.lr_finder.run_lr_finder); the loop and the optimizers are not here, so the LR
finder's code stays free of them.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.models import head_of
from cifarlab.training.hooks import init_from_data
from cifarlab.training.sampling import subset, train_validation_split
from cifarlab.training.settings import RunSettings
from cifarlab.training.timing import device_seconds


def training_split(settings: RunSettings, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, held-out) indices into the training split: the run's validation split and
    train_subset, drawn with its seed (sampling.train_validation_split)."""
    return train_validation_split(
        labels, validation=settings.validation, train_subset=settings.train_subset, seed=settings.seed
    )


def check_cached(cached: dict, data: dict, split: str) -> None:
    """Fail when cached features were made from another `split`.pt than `data` (labels differ)."""
    if not torch.equal(cached["labels"], data["labels"]):
        raise ValueError(
            f"the cached {split} features do not belong to this {split}.pt (labels differ); "
            "delete results/features/ and rerun"
        )


def trainable_and_data(
    model: nn.Module,
    settings: RunSettings,
    train: dict,
    index: torch.Tensor,
    cached_train: dict | None,
    *,
    device: torch.device | None = None,
    timing: dict | None = None,
) -> tuple[nn.Module, dict]:
    """(the module that trains, its training data at `index`, on the CPU).

    Without cached features: the whole model, on the images (a model that sets weights from the
    data, airbench's whitening, does so now, on `device`: the CPU when None; its device seconds
    go to timing["whitening_s"]). With them (checked against `train` by the caller): the model's
    head, on the frozen backbone's features.
    """
    if cached_train is None:
        data = subset(train, index)
        where = torch.device("cpu") if device is None else device
        with device_seconds(where, {} if timing is None else timing, "whitening_s"):
            init_from_data(model, data, settings, where)
        return model, data
    return head_of(model), subset(cached_train, index)
