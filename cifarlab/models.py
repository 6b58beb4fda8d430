"""The model registry: one name in the config, one constructor here.

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

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from cifarlab.airbench import Airbench
from cifarlab.files import load_torch

# Normalisation layers: their parameters form the `norm` optimizer group (train.param_groups).
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)

# The lab's ViT (vit-pytorch); a run's `vit:` entry overrides any of these.
VIT_DEFAULTS = {
    "patch_size": 4,
    "dim": 256,
    "depth": 6,
    "heads": 8,
    "mlp_dim": 512,
    "dropout": 0.1,
    "emb_dropout": 0.1,
}


class SimpleCNN(nn.Module):
    """The lab's CNN: conv 5x5 3->6, pool, conv 5x5 6->16, pool, 400->120->84->classes, log-softmax.

    62,006 parameters at 32 px and 10 classes.
    """

    def __init__(self, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2  # two valid 5x5 convs, each followed by a 2x2 pool
        if side < 1:
            raise ValueError(f"simple_cnn needs image_size >= 16, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5),
            nn.LeakyReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.LeakyReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.LeakyReLU(),
            nn.Linear(120, 84),
            nn.LeakyReLU(),
            nn.Linear(84, num_classes),
        )
        self.log_softmax = nn.LogSoftmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_softmax(self.classifier(self.features(x)))


class DropoutCNN(nn.Module):
    """The lab's CNN with dropout: conv 5x5 3->32, pool, conv 3x3 32->64, pool, 4096->1024->512->classes.

    Dropout(p) sits before each hidden linear layer. 4,746,186 parameters at 32 px and 10 classes.
    """

    def __init__(self, num_classes: int = 10, image_size: int = 32, dropout: float = 0.0):
        super().__init__()
        side = image_size // 4  # two 2x2 pools; the convs keep the size (padding)
        if side < 1:
            raise ValueError(f"dropout_cnn needs image_size >= 4, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(64 * side * side, 1024),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(1024, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def pretrained_weights(model: str):
    """The torchvision weights enum of a pretrainable model."""
    weights = {
        "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
        "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    }
    if model not in weights:
        raise ValueError(f"model {model!r} has no pretrained weights; pretrainable: {sorted(weights)}")
    return weights[model]


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


def head_of(model: nn.Module) -> nn.Linear:
    """The last (replaced, trainable) layer of a pretrainable model."""
    if isinstance(model, torchvision.models.VGG):
        return model.classifier[-1]
    if isinstance(model, torchvision.models.ResNet):
        return model.fc
    raise TypeError(f"{type(model).__name__} has no replaceable head")


def _torchvision_model(name: str, run: dict, num_classes: int) -> nn.Module:
    model = getattr(torchvision.models, name)(weights=None)
    if run.get("pretrained", False):
        load_pretrained(model, name)
    # Replace the ImageNet classifier by a fresh layer for our classes.
    if name == "vgg16":
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    else:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    if run.get("freeze", "none") == "head":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head_of(model).parameters():
            p.requires_grad_(True)
    return model


def _vit(run: dict, num_classes: int) -> nn.Module:
    from vit_pytorch import ViT

    sizes = {**VIT_DEFAULTS, **(run.get("vit") or {})}
    if run["image_size"] % sizes["patch_size"]:
        raise ValueError(
            f"vit: image_size {run['image_size']} is not a multiple of patch_size {sizes['patch_size']}"
        )
    return ViT(image_size=run["image_size"], num_classes=num_classes, **sizes)


MODELS: dict[str, Callable[[dict, int], nn.Module]] = {
    "simple_cnn": lambda run, n: SimpleCNN(n, run["image_size"]),
    "dropout_cnn": lambda run, n: DropoutCNN(n, run["image_size"], run.get("dropout", 0.0)),
    "vgg16": lambda run, n: _torchvision_model("vgg16", run, n),
    "resnet18": lambda run, n: _torchvision_model("resnet18", run, n),
    "vit": _vit,
    "airbench": lambda run, n: Airbench(n, **(run.get("airbench") or {})),
}


def build_model(run: dict, num_classes: int) -> nn.Module:
    """A new model for one run's settings (model, image_size, dropout, pretrained, freeze, vit, seed).

    Weights are initialised from run["seed"] (the global RNG is left as it was), on the CPU.
    """
    if run["model"] not in MODELS:
        raise ValueError(f"unknown model {run['model']!r}; known models: {sorted(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.get("seed", 0))
        return MODELS[run["model"]](run, num_classes)


def frozen_backbone(model: nn.Module) -> bool:
    """True when only the head trains (freeze: head): the backbone then always runs in eval mode.

    (Other models may freeze some of their own weights, as airbench does; they have no head.)
    """
    has_head = isinstance(model, torchvision.models.VGG | torchvision.models.ResNet)
    return has_head and any(not p.requires_grad for p in model.parameters())


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
