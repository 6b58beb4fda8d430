"""A trained model to take away: `model.pt2`, a `torch.export` program that loads with torch alone.

The program takes raw images, uint8 N x 3 x H x W (H, W: the prepared data's, e.g. 32 x 32), and
returns class scores (logits, float32 N x classes); the normalisation by the training set's mean and
std, and the resizing to the run's `image_size` where it differs from the data's, are inside it
(cifarlab.training.loop.to_float, the one conversion training and evaluation use). The class names travel
in the file as its extra file `classes.json`. Loading it needs neither cifarlab nor the model's code:

    extra = {"classes.json": ""}
    program = torch.export.load("model.pt2", extra_files=extra).module()
    scores = program(images); classes = json.loads(extra["classes.json"])

The `evaluate` step writes it from the whole trained model (for a head trained on cached features,
the frozen backbone and the head together), so it always takes images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from cifarlab.training.batching import to_float

CLASSES_FILE = "classes.json"


class FromImages(nn.Module):
    """A trained model behind the conversion of raw uint8 images (normalise, resize)."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor, image_size: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clone())
        self.image_size = image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: uint8 N x 3 x H x W -> class scores float32 N x classes."""
        return self.model(to_float(images, self.mean, self.std, self.image_size))


def export_model(
    model: nn.Module, saved: dict, image_shape: tuple[int, int], path: str | Path
) -> torch.export.ExportedProgram:
    """Write `model` (trained, from cifarlab.models.load_trained; `saved` its model.pt dict) as a
    torch.export program at `path` for images of `image_shape` (H, W) and any batch size."""
    wrapped = FromImages(model.cpu().eval(), saved["mean"], saved["std"], saved["run"]["image_size"])
    example = torch.zeros(2, 3, *image_shape, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with torch.no_grad():
        program = torch.export.export(wrapped, (example,), dynamic_shapes={"images": {0: batch}})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.pt2")  # torch.export wants the .pt2 ending
    torch.export.save(program, partial, extra_files={CLASSES_FILE: json.dumps(list(saved["classes"]))})
    partial.replace(path)  # a killed job leaves no half-written model.pt2
    return program
