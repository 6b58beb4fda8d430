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


# model.pt's `model_part` (docs/architecture.md): the weights its `model_state` holds. "model":
# all of them. "head": only the head's (keys as in the whole model), for a run trained on cached
# features, whose frozen backbone is a function of its settings alone (ImageNet weights, or the
# seeded initialisation of build_model): saving it again would be 528 MB of VGG16 per seed for a
# 41k-parameter head (benchmarks/README.md).
WHOLE, HEAD = "model", "head"


def trained_state(model: nn.Module, part: str) -> dict[str, torch.Tensor]:
    """The weights model.pt keeps of a trained `model` (on the CPU): all, or the head's (`part`)."""
    from cifarlab.models.backbones import head_name

    state = model.state_dict()
    if part == HEAD:
        prefix = head_name(model) + "."
        state = {k: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v.detach().cpu() for k, v in state.items()}


def load_trained(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The whole model saved by `train` (in eval mode, on `device`) and the saved dict (docs/architecture.md).

    A head-only model.pt (`model_part` "head") gets its frozen backbone rebuilt from its settings:
    the run's seeded initialisation, or with `pretrained` the ImageNet weights from torchvision's
    cache (where the `features` step put them; fetched if absent).
    """
    saved = load_torch(path)
    return _trained_model(saved, path).to(device).eval(), saved


def _trained_model(saved: dict, path: str | Path) -> nn.Module:
    """The whole model of a model.pt dict already read (`path`: for the error), on the CPU."""
    head_only = saved.get("model_part", WHOLE) == HEAD
    # The trained weights replace everything but a head-only file's backbone: fetch ImageNet
    # weights only for that.
    run = saved["run"] if head_only else {**saved["run"], "pretrained": False}
    model = build_model(run, len(saved["classes"]))
    missing, unexpected = model.load_state_dict(saved["model_state"], strict=not head_only)
    if head_only:  # then the backbone's keys are missing, and must be all that is
        from cifarlab.models.backbones import head_name

        missing = [k for k in missing if k.startswith(head_name(model) + ".")]
        if missing or unexpected:
            raise ValueError(
                f"{path}: its head does not fit a {run['model']} (missing {missing}, extra {unexpected})"
            )
    return model


def load_head(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The trained head alone (nn.Linear, eval mode, on `device`) of a frozen-backbone run's model.pt,
    and the saved dict: what scores cached features, without building the backbone."""
    saved = load_torch(path)
    if saved.get("model_part", WHOLE) == WHOLE:  # an older file, or a run trained on the images
        from cifarlab.models.backbones import head_of

        return head_of(_trained_model(saved, path)).to(device).eval(), saved
    state = saved["model_state"]
    weight = next(v for k, v in state.items() if k.endswith(".weight"))
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({k.rpartition(".")[2]: v for k, v in state.items()})
    return head.to(device).eval(), saved
