"""The lab's two CNNs (specs: cifarlab.models.specs.BUILTIN "simple_cnn" and "dropout_cnn")."""

from __future__ import annotations

import torch
from torch import nn


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

    @classmethod
    def from_run(cls, run: dict, num_classes: int) -> SimpleCNN:
        return cls(num_classes, run["image_size"])

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

    @classmethod
    def from_run(cls, run: dict, num_classes: int) -> DropoutCNN:
        return cls(num_classes, run["image_size"], run["dropout"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
