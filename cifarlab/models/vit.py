"""The lab's Vision Transformer (vit-pytorch); spec: cifarlab.models.specs.BUILTIN["vit"]."""

from __future__ import annotations

from torch import nn


def from_run(run: dict, num_classes: int) -> nn.Module:
    """A ViT of the run's `vit:` sizes (the schema's defaults filled in by cifarlab.config.validate for keys
    the config leaves out); image_size must be a multiple of the patch."""
    from vit_pytorch import ViT

    sizes = dict(run["vit"])
    if run["image_size"] % sizes["patch_size"]:
        raise ValueError(
            f"vit: image_size {run['image_size']} is not a multiple of patch_size {sizes['patch_size']}"
        )
    return ViT(image_size=run["image_size"], num_classes=num_classes, **sizes)
