"""The parts the two saliency figures share: method titles, colour map, panels and their texts."""

from __future__ import annotations

import textwrap

import numpy as np
import torch

METHOD_TITLES = {
    "vanilla": "vanilla gradient",
    "guided_backprop": "guided backprop",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "integrated gradients",
    "gradcam": "Grad-CAM",
}
MAP_CMAP = "inferno"


def display_map(saliency: torch.Tensor) -> np.ndarray:
    """A map scaled to [0, 1] by its 99th percentile (a few extreme pixels would wash out the rest)."""
    m = saliency.float()
    top = torch.quantile(m.flatten(), 0.99)
    top = top if top > 0 else m.max()
    return (m / top).clamp(0, 1).numpy() if top > 0 else m.numpy()


def image_array(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


def blank_panel(ax, text: str) -> None:
    """A panel that says why there is no map (never an empty map that could pass for a result)."""
    text = "\n".join(textwrap.fill(line, 22) for line in text.split("\n"))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=6, transform=ax.transAxes)
    ax.set_axis_off()


def short_reason(reason: str) -> str:
    """'the model has no ReLU modules (a ViT ...); ...' -> 'the model has no ReLU modules'."""
    return reason.split(";")[0].split(" (")[0]


def clean_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def sanity_text(result: dict, method: str) -> str:
    s = result["sanity"]["methods"].get(method)
    if s is None:
        return ""
    rho = s["fully_randomised"]
    verdict = "passes" if s["passes"] else "FAILS"
    return f"\nrho(random) {'n/a' if rho is None else f'{rho:.2f}'}: {verdict}"


def target_words(target: str) -> str:
    return "the true class" if target == "true_class" else "the predicted class"
