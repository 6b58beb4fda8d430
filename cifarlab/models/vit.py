"""The lab's Vision Transformer (vit-pytorch); spec: cifarlab.models.specs.BUILTIN["vit"]."""

from __future__ import annotations

from torch import nn

# The lab's ViT; a run's `vit:` entry overrides any of these.
VIT_DEFAULTS = {
    "patch_size": 4,
    "dim": 256,
    "depth": 6,
    "heads": 8,
    "mlp_dim": 512,
    "dropout": 0.1,
    "emb_dropout": 0.1,
}


def from_run(run: dict, num_classes: int) -> nn.Module:
    """A ViT of the run's `vit:` sizes over VIT_DEFAULTS; image_size must be a multiple of the patch."""
    from vit_pytorch import ViT

    sizes = {**VIT_DEFAULTS, **(run.get("vit") or {})}
    if run["image_size"] % sizes["patch_size"]:
        raise ValueError(
            f"vit: image_size {run['image_size']} is not a multiple of patch_size {sizes['patch_size']}"
        )
    return ViT(image_size=run["image_size"], num_classes=num_classes, **sizes)
