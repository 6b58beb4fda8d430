"""Building a run's model from its spec: one name in the config, one constructor in its family module.

Every model takes normalised float images N x 3 x S x S (S = run["image_size"]) and returns
N x num_classes scores. Activations are modules (nn.ReLU, nn.LeakyReLU), not functional calls,
so that captum's guided backprop can hook them. `simple_cnn` ends in an nn.LogSoftmax module
(`model.log_softmax`), as in the lab; training uses F.cross_entropy for every model, which on
log-probabilities equals the lab's NLL loss because log_softmax is idempotent.

Construction is seeded with run["seed"], so the same run always starts from the same weights,
whatever the caller did with the global RNG before (the `features` step relies on this to build
the same randomly initialised backbone as `train`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from cifarlab.core.files import load_torch
from cifarlab.models.specs import UnknownModel, model_spec

# Normalisation layers: their parameters form the `norm` optimizer group (train.param_groups).
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def constructor(name: str):
    """The `(run, num_classes) -> nn.Module` function of a model's spec ("module:attr.attr")."""
    try:
        spec = model_spec(name)
    except UnknownModel as error:
        raise ValueError(str(error)) from None
    module, _, attributes = spec.constructor.partition(":")
    target = importlib.import_module(module)
    for attribute in attributes.split("."):
        target = getattr(target, attribute)
    return target


def build_model(run: dict, num_classes: int) -> nn.Module:
    """A new model for one run's settings (model, image_size, dropout, pretrained, freeze, vit,
    model_args, seed).

    Weights are initialised from run["seed"] (the global RNG is left as it was), on the CPU.
    """
    build = constructor(run["model"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run["seed"])
        return build(run, num_classes)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) numbers of parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def load_trained(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The model saved by `train` (in eval mode, on `device`) and the saved dict (docs/architecture.md)."""
    saved = load_torch(path)
    # The trained weights replace everything, so never fetch ImageNet weights here.
    model = build_model({**saved["run"], "pretrained": False}, len(saved["classes"]))
    model.load_state_dict(saved["model_state"])
    return model.to(device).eval(), saved
