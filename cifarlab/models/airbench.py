"""airbench94 (Keller Jordan, github.com/KellerJordan/cifar10-airbench, legacy/airbench94.py) as a model.

94.01 % on CIFAR-10 in 3.83 s on an A100 (mean of 1,000 runs), from random weights. The network:

- a 2x2 whitening conv, 3 -> 24 channels, no padding (32 px -> 31 px), set once from the
  training data (`init_from_data`: the eigenvectors of the 2x2 patches' covariance, scaled by
  1 / sqrt(eigenvalue + 5e-4), and their negatives) and frozen; its bias trains for the first
  `whiten_bias_epochs` epochs only (`start_epoch`);
- GELU, then three conv groups of widths 64 / 256 / 256, each conv 3x3 -> max-pool 2 -> BN ->
  GELU -> conv 3x3 -> BN -> GELU; convs without bias, initialised as identity (dirac) on their
  first input-many filters; BatchNorm with eps 1e-12, momentum 0.6 (torch's 0.4), its scale
  frozen at 1 and its bias trained;
- max-pool 3 (3 px -> 1), a linear layer without bias and the logits scaled by 1/9.

The rest of its recipe is run settings of any model (config/config.yaml, run `airbench`):
Nesterov SGD with decoupled lr 11.5 and weight decay 0.0153 per 1,024 examples at batch 1,024,
momentum 0.85, 64x the lr for the norm biases (`param_groups`), label smoothing 0.2, the
piecewise-linear schedule (0.2 -> 1 over 23 % of the steps, then -> 0.07), alternating flip and
2-px reflect-padded translation, lookahead (every 5 steps, decay 0.95^5 x (step/total)^3) and
6-view test-time augmentation (cifarlab.training.loop).
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4  # added to the eigenvalues: keeps near-null directions from blowing up
BATCHNORM_MOMENTUM = 0.6  # airbench's convention: the weight of the old running statistics
LOGIT_SCALE = 1 / 9


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a frozen scale (1) and a trained bias."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=1 - BATCHNORM_MOMENTUM)
        self.weight.requires_grad_(False)


class Conv(nn.Conv2d):
    """3x3 'same' conv without bias, initialised as the identity on its first in_channels filters."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(channels_in, channels_out, kernel_size=3, padding="same", bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[:channels_in])


class ConvGroup(nn.Module):
    """conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU: halves the side."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv1 = Conv(channels_in, channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out)
        self.conv2 = Conv(channels_out, channels_out)
        self.norm2 = BatchNorm(channels_out)
        self.activ = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


def patches(images: torch.Tensor, size: int) -> torch.Tensor:
    """All size x size patches of images N x C x H x W, as float M x (C * size * size) rows."""
    c = images.shape[1]
    unfolded = images.float().unfold(2, size, 1).unfold(3, size, 1)  # N x C x H' x W' x s x s
    return unfolded.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * size * size)


def whitening_weights(
    images: torch.Tensor, size: int = WHITEN_KERNEL, eps: float = WHITEN_EPS
) -> torch.Tensor:
    """The whitening filters, 2 * D x C x size x size (D = C * size^2), from normalised images.

    Rows are the eigenvectors of the patches' (uncentred) covariance, largest eigenvalue first,
    divided by sqrt(eigenvalue + eps), followed by their negatives (so that GELU keeps both signs).
    The covariance (the work: millions of patches) is computed where `images` are; its D x D
    eigendecomposition (D = 12) on the CPU, where it is microseconds, MPS lacks `eigh` and CUDA
    would first load cuSOLVER. The filters are returned on the CPU.
    """
    rows = patches(images, size)
    covariance = (rows.T @ rows / len(rows)).cpu()
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    order = eigenvalues.argsort(descending=True)
    scaled = eigenvectors[:, order].T / torch.sqrt(eigenvalues[order] + eps)[:, None]
    filters = scaled.reshape(-1, images.shape[1], size, size)
    return torch.cat((filters, -filters))


class Airbench(nn.Module):
    """airbench94's network for 32-px images (see the module docstring); 1.97M parameters at 10 classes."""

    init_images = 5000  # training images `init_from_data` gets (cifarlab.training.loop.init_from_data)

    def __init__(
        self, num_classes: int = 10, widths: list[int] | tuple[int, ...] = WIDTHS, whiten_bias_epochs: int = 3
    ):
        super().__init__()
        whiten_width = 2 * 3 * WHITEN_KERNEL**2
        self.whiten_bias_epochs = whiten_bias_epochs
        self.whiten = nn.Conv2d(3, whiten_width, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        with torch.no_grad():
            self.whiten.bias.zero_()
        self.activ = nn.GELU()
        self.groups = nn.Sequential(
            ConvGroup(whiten_width, widths[0]),
            ConvGroup(widths[0], widths[1]),
            ConvGroup(widths[1], widths[2]),
        )
        # airbench94's MaxPool2d(3) on the 3 x 3 map of a 32-px image is a global max; adaptive, it
        # stays one for other sizes (its spec's min_image_size: 9 px, the smallest the three groups take).
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    @classmethod
    def from_run(cls, run: dict, num_classes: int) -> Airbench:
        """The network of a run: its `airbench:` widths and whiten_bias_epochs (cifarlab.models.specs)."""
        return cls(num_classes, **(run.get("airbench") or {}))

    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening conv from normalised training images N x 3 x H x W (unaugmented),
        computed on their device (cifarlab.training.hooks.init_from_data puts them on the run's)."""
        with torch.no_grad():
            self.whiten.weight.copy_(whitening_weights(images))

    def start_epoch(self, epoch: int) -> None:
        """The whitening bias trains in the first `whiten_bias_epochs` epochs (0-based), then freezes."""
        self.whiten.bias.requires_grad_(epoch < self.whiten_bias_epochs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.activ(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * LOGIT_SCALE
