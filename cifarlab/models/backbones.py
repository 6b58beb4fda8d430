"""torchvision models (vgg16, resnet18 and any `torchvision.<name>`): ImageNet weights, a new head, freezing.

A run's model is built by `torchvision.models.get_model(name, weights=None, **model_args)`; with
`pretrained` its DEFAULT ImageNet weights (`torchvision.models.get_model_weights(name).DEFAULT`)
are loaded through torchvision's own cache and download, then the ImageNet classifier (the model's
last nn.Linear) is replaced by a fresh layer for our classes: the *head*. With `freeze: head` only
the head trains and the backbone stays in eval mode, a fixed function of the image that the
`features` step caches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from cifarlab.models.specs import TORCHVISION_PREFIX

if TYPE_CHECKING:
    import torchvision

# torchvision (1-2 s to import) is imported inside the functions that build or fetch a model, not
# here: head_of and set_train_mode live in this module and every training job imports them, most
# of them for models that are not torchvision's (benchmarks/README.md, "Job start-up").

# The qualified name of the replaced head, kept on the model (a plain attribute: not in the
# state dict, kept by deepcopy) so that head_of and set_train_mode find it on any architecture.
HEAD_ATTRIBUTE = "cifarlab_head"


def torchvision_name(model: str) -> str:
    """`torchvision.resnet50` -> `resnet50`; the built-ins vgg16 and resnet18 are their own name."""
    return model.removeprefix(TORCHVISION_PREFIX)


def pretrained_weights(model: str) -> torchvision.models.WeightsEnum:
    """The DEFAULT ImageNet weights of a torchvision model (a config model name)."""
    import torchvision.models

    name = torchvision_name(model)
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError) as error:
        raise ValueError(
            f"torchvision model {name!r} has no ImageNet weights ({error}); "
            "train it from random initialisation with --config pretrained=false"
        ) from error


def weights_file(model: str) -> Path:
    """Where torchvision caches (and looks for) the ImageNet weights of `model`."""
    name = os.path.basename(urlparse(pretrained_weights(model).url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_pretrained(model: nn.Module, name: str) -> None:
    """Load the ImageNet weights of `name` into `model`, through torchvision's own cache and download.

    Offline, torchvision's download fails with a bare URL error; this says which file to place where.
    """
    weights = pretrained_weights(name)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash a RuntimeError
        path = weights_file(name)
        raise RuntimeError(
            f"could not get the ImageNet weights of {name} ({error}). Download {weights.url} on a "
            f"machine with internet and put it at {path} (the folder is torch.hub.get_dir()/checkpoints; "
            f"TORCH_HOME moves it), or train from random initialisation with --config pretrained=false"
        ) from error
    model.load_state_dict(state)


def last_linear(model: nn.Module) -> str:
    """The qualified name of the last nn.Linear a model registers: a torchvision classifier's output layer.

    (Every torchvision classification model registers its classifier last, whatever its shape:
    `fc`, `classifier.6`, `classifier.3`, `heads.head`, `head`.)
    """
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise TypeError(
            f"{type(model).__name__} has no nn.Linear classifier to replace by a head for our classes"
        )
    return names[-1]


def head_name(model: nn.Module) -> str:
    """The qualified name of the head of a torchvision model built by `build` (`classifier.6`, `fc`)."""
    name = getattr(model, HEAD_ATTRIBUTE, None)
    if name is None:
        raise TypeError(f"{type(model).__name__} has no replaceable head")
    return name


def head_of(model: nn.Module) -> nn.Linear:
    """The last (replaced, trainable) layer of a torchvision model built by `build`."""
    return model.get_submodule(head_name(model))


def build(run: dict, num_classes: int) -> nn.Module:
    """A torchvision model for the run: ImageNet weights when run["pretrained"], a new head, freezing.

    run: model (vgg16, resnet18, torchvision.<name>), pretrained, freeze ("head" or "none") and
    model_args (keywords of torchvision's constructor, e.g. {"dropout": 0.3}).
    """
    import torchvision.models

    name = torchvision_name(run["model"])
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(f"torchvision has no classification model {name!r}; its models: {', '.join(known)}")
    model = torchvision.models.get_model(name, weights=None, **(run.get("model_args") or {}))
    if run["pretrained"]:
        load_pretrained(model, run["model"])
    # Replace the ImageNet classifier by a fresh layer for our classes.
    head = last_linear(model)
    old = model.get_submodule(head)
    model.set_submodule(head, nn.Linear(old.in_features, num_classes))
    setattr(model, HEAD_ATTRIBUTE, head)
    if run["freeze"] == "head":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head_of(model).parameters():
            p.requires_grad_(True)
    return model


def frozen_backbone(model: nn.Module) -> bool:
    """True when only the head trains (freeze: head): the backbone then always runs in eval mode.

    (Other models may freeze some of their own weights, as airbench does; they have no head.)
    """
    return hasattr(model, HEAD_ATTRIBUTE) and any(not p.requires_grad for p in model.parameters())


def set_train_mode(model: nn.Module) -> None:
    """model.train(), except that a frozen backbone stays in eval mode.

    A frozen backbone must not update its batch-norm statistics or apply its dropout: it is a
    fixed function of the image, which is also what lets the `features` step cache it.
    """
    if frozen_backbone(model):
        model.eval()
        head_of(model).train()
    else:
        model.train()
