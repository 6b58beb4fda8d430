"""A learnable synthetic image dataset: ten shapes, random colours, on textured backgrounds.

The class is the shape; colour, position, size and the background are nuisance variables, so a
model has to learn shape (as on CIFAR-10) rather than a colour shortcut. Generation is
vectorised and deterministic per seed: the same seed gives the same bytes on every machine.
Used by the tests and `config/demo.yaml`, so the whole study runs offline in minutes.
"""

from __future__ import annotations

import math

import torch

CLASSES = (
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "diamond",
    "hbar",
    "vbar",
    "x",
    "frame",
)


def _shape_masks(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Binary masks (N x H x W, float) of each label's shape at a random place and scale."""
    n = labels.numel()
    radius = size * (0.22 + 0.12 * torch.rand(n, generator=generator))  # pixels
    margin = radius + 1
    cx = margin + (size - 2 * margin) * torch.rand(n, generator=generator)
    cy = margin + (size - 2 * margin) * torch.rand(n, generator=generator)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    # dx, dy in units of the radius: N x H x W
    dx = (coords.view(1, 1, size) - cx.view(n, 1, 1)) / radius.view(n, 1, 1)
    dy = (coords.view(1, size, 1) - cy.view(n, 1, 1)) / radius.view(n, 1, 1)
    ax, ay = dx.abs(), dy.abs()
    bar = 0.3  # half-width of bars and strokes, in radii
    shapes = torch.stack(
        [
            dx**2 + dy**2 <= 1.0,  # disc
            (ax <= 0.8) & (ay <= 0.8),  # square
            (dy <= 0.7) & (dy >= -0.9 + 1.6 * ax),  # triangle, apex up
            ((dx**2 + dy**2) <= 1.0) & ((dx**2 + dy**2) >= 0.45),  # ring
            ((ax <= bar) & (ay <= 1.0)) | ((ay <= bar) & (ax <= 1.0)),  # cross (plus)
            (ax + ay) <= 1.0,  # diamond
            (ay <= bar) & (ax <= 1.0),  # horizontal bar
            (ax <= bar) & (ay <= 1.0),  # vertical bar
            ((dx - dy).abs() <= bar * math.sqrt(2)) & (ax <= 0.9) & (ay <= 0.9)
            | ((dx + dy).abs() <= bar * math.sqrt(2)) & (ax <= 0.9) & (ay <= 0.9),  # x
            (ax <= 0.9) & (ay <= 0.9) & ((ax >= 0.55) | (ay >= 0.55)),  # frame (hollow square)
        ],
        dim=1,
    )  # N x 10 x H x W
    return shapes[torch.arange(n), labels].float()


def make_images(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Images (uint8, N x 3 x size x size) of the given labels (int64, N)."""
    n = labels.numel()
    mask = _shape_masks(labels, size, generator).unsqueeze(1)  # N x 1 x H x W
    # Background: a random base colour, a random-frequency stripe texture and pixel noise.
    base = 0.2 + 0.6 * torch.rand(n, 3, 1, 1, generator=generator)
    freq = 0.2 + 0.8 * torch.rand(n, 1, 1, 1, generator=generator)
    angle = math.pi * torch.rand(n, 1, 1, 1, generator=generator)
    coords = torch.arange(size, dtype=torch.float32)
    xs, ys = coords.view(1, 1, 1, size), coords.view(1, 1, size, 1)
    stripes = torch.sin(freq * (xs * torch.cos(angle) + ys * torch.sin(angle)))
    background = base + 0.12 * stripes + 0.06 * torch.randn(n, 3, size, size, generator=generator)
    # Foreground: a random colour kept away from the background's colour so the shape is visible.
    colour = torch.rand(n, 3, 1, 1, generator=generator)
    colour = torch.where((colour - base).abs().mean(1, keepdim=True) < 0.25, 1.0 - colour, colour)
    foreground = colour + 0.05 * torch.randn(n, 3, size, size, generator=generator)
    image = mask * foreground + (1 - mask) * background
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def make_split(per_class: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One split: (uint8 images N x 3 x size x size, int64 labels N), N = 10 * per_class, shuffled."""
    if per_class < 1 or size < 8:
        raise ValueError(f"synthetic data needs per_class >= 1 and size >= 8, got {per_class}, {size}")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    labels = labels[torch.randperm(labels.numel(), generator=generator)]
    return make_images(labels, size, generator), labels


def make_dataset(
    train_per_class: int = 500, test_per_class: int = 100, size: int = 32, seed: int = 0
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (images, labels), "test": (images, labels)}; the splits use different seeds."""
    return {
        "train": make_split(train_per_class, size, seed * 2 + 0),
        "test": make_split(test_per_class, size, seed * 2 + 1),
    }
