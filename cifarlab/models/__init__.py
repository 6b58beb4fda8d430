"""The models: one spec per model (torch-free) and the nn.Module side of each family.

- `cifarlab.models.specs` (imported here, no torch): `ModelSpec`, the built-in `BUILTIN` specs,
  `model_spec(name)` and `check_model(name)`; the workflow layer reads only these.
- `cifarlab.models.build` (torch): `build_model`, `load_trained`, `head_of`, `set_train_mode`,
  `count_parameters`, ... They are importable from here too (`from cifarlab.models import
  build_model`); torch is imported only when one of them is first used.
- The families: `lab` (the lab's CNNs), `backbones` (torchvision models: weights, head, freeze),
  `vit` (vit-pytorch), `user` (your own nn.Module from a file or module), `cifarlab.models.airbench`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cifarlab.models.specs import (
    BUILTIN,
    ModelSpec,
    UnknownModel,
    check_model,
    model_source,
    model_spec,
)

# The torch side every model shares, named here for code digests (cifarlab.core.code_version reads
# imports statically) and type checkers; at run time __getattr__ below loads it on first use.
if TYPE_CHECKING:
    from cifarlab.models import backbones, build  # noqa: F401

# The torch side, imported on first use so that `import cifarlab.models` stays torch-free.
_TORCH_NAMES = {
    "build": ("NORM_LAYERS", "build_model", "count_parameters", "load_trained", "load_head", "trained_state"),
    "backbones": (
        "frozen_backbone",
        "head_of",
        "head_name",
        "set_train_mode",
        "load_pretrained",
        "weights_file",
        "pretrained_weights",
    ),
    "lab": ("SimpleCNN", "DropoutCNN"),
}
_LAZY = {name: module for module, names in _TORCH_NAMES.items() for name in names}

__all__ = [
    "BUILTIN",
    "ModelSpec",
    "UnknownModel",
    "check_model",
    "model_source",
    "model_spec",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"cifarlab.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cifarlab.models' has no attribute {name!r}")
