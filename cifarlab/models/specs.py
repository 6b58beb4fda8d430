"""What the workflow knows about each model, without torch: one `ModelSpec` per model.

A run's `model:` is one of three kinds of name:

- a built-in model (`BUILTIN`: the lab's CNNs, VGG16, ResNet18, the ViT, airbench), whose spec
  below says everything the workflow needs: how to build it, whether it is pretrainable and its
  default `freeze`, its smallest image size and the width of its cached features (its cost per
  image is in cifarlab.models.cost, its colour in cifarlab.models.style: neither is in the code
  of any training step, so editing them reruns no model);
- `torchvision.<name>`: any torchvision classification model (`torchvision.models.get_model`),
  pretrainable from its DEFAULT ImageNet weights like vgg16 and resnet18;
- a user's own nn.Module: `path/to/file.py:Class` (relative to the project root) or
  `package.module:Class`, with `model_args:` passed to its constructor (cifarlab.models.user).

The nn.Module side of each family lives in its own module (cifarlab.models.lab, .backbones, .vit,
.user, cifarlab.models.airbench): `constructor` names its `(run, num_classes) -> nn.Module` function.
The workflow layer (the .smk files, config validation, estimate, status) reads this module, so
it must not import torch.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TORCHVISION_PREFIX = "torchvision."


@dataclass(frozen=True)
class ModelSpec:
    """Everything the workflow knows about one model.

    constructor: "module:attr" of a function (or classmethod) `(run, num_classes) -> nn.Module`.
    min_image_size: smallest image_size (px) it takes, checked before any job runs.
    pretrainable: its weights can come from ImageNet (the study's `pretrained` switch applies).
    default_freeze: the run's `freeze` when it says none ("head": only the new last layer trains).
    feature_width: width of its head's input (the cached features of a frozen backbone), floats.
    The feature width's default is that of VGG16 (the widest built-in), used for torchvision.*
    and user models.
    """

    name: str
    constructor: str
    min_image_size: int = 1
    pretrainable: bool = False
    default_freeze: str = "none"
    feature_width: int = 4096

    @property
    def module(self) -> str:
        """The module of the constructor (not imported): the model's own code, a code digest's unit."""
        return self.constructor.split(":")[0]


BACKBONE = "cifarlab.models.backbones:build"

# The built-in models. Adding one is one entry here (and its class), plus a run in config.yaml.
BUILTIN: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # two valid 5x5 convolutions, each followed by a 2x2 pool
        ModelSpec(
            "simple_cnn", "cifarlab.models.lab:SimpleCNN.from_run", min_image_size=16,
        ),
        # two 2x2 pools; the convolutions keep the size
        ModelSpec(
            "dropout_cnn", "cifarlab.models.lab:DropoutCNN.from_run", min_image_size=4,
        ),
        # five 2x2 pools
        ModelSpec(
            "vgg16", BACKBONE, min_image_size=32, pretrainable=True, default_freeze="head",
            feature_width=4096,
        ),
        ModelSpec(
            "resnet18", BACKBONE, pretrainable=True, default_freeze="head",
            feature_width=512,
        ),
        # image_size must be a multiple of the patch size (checked when it is built)
        ModelSpec(
            "vit", "cifarlab.models.vit:from_run",
        ),
        # the 2x2 whitening convolution and three pools
        ModelSpec(
            "airbench", "cifarlab.models.airbench:Airbench.from_run", min_image_size=9,
        ),
    )
}  # fmt: skip


class UnknownModel(ValueError):
    """A run's `model:` names nothing that exists; the message says what does."""


def is_torchvision(name: str) -> bool:
    return name.startswith(TORCHVISION_PREFIX)


def is_user_model(name: str) -> bool:
    """`path/file.py:Class` or `package.module:Class`."""
    return ":" in name


def user_target(name: str) -> tuple[str, str]:
    """`models/net.py:WideCNN` -> ("models/net.py", "WideCNN"); the module part may be dotted."""
    where, _, cls = name.rpartition(":")
    return where, cls


def is_file_target(where: str) -> bool:
    return where.endswith(".py") or "/" in where


def model_spec(name: str) -> ModelSpec:
    """The spec of a model name (built-in, torchvision.* or a user's class); no file is read.

    Raises UnknownModel for a name of none of the three kinds (see `check_model` for the checks
    that a torchvision name or a user's file and class exist).
    """
    if name in BUILTIN:
        return BUILTIN[name]
    if is_torchvision(name):
        # Five stride-2 stages in most torchvision classifiers: 32 px is the smallest that most
        # take (some need more, e.g. inception_v3 75 px: torch's error in their first job).
        return ModelSpec(name, BACKBONE, min_image_size=32, pretrainable=True, default_freeze="head")
    if is_user_model(name):
        return ModelSpec(name, "cifarlab.models.user:from_run")
    raise UnknownModel(
        f"unknown model {name!r}; built-in models: {sorted(BUILTIN)}, or torchvision.<name> "
        "(any torchvision classification model), or path/to/file.py:Class or package.module:Class "
        "(your own nn.Module)"
    )


@cache
def torchvision_models() -> tuple[str, ...]:
    """The classification models torchvision registers, read from its source without importing it.

    `torchvision.models.list_models(module=torchvision.models)` gives the same names but imports
    torch (seconds); the workflow layer must not. The names are the functions decorated with
    `@register_model` in the files of torchvision/models/ itself (not its detection, segmentation,
    video, optical-flow or quantization subpackages). Empty when torchvision is not installed.
    """
    found = importlib.util.find_spec("torchvision")
    if found is None or not found.submodule_search_locations:
        return ()
    folder = Path(next(iter(found.submodule_search_locations))) / "models"
    names = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                _decorator_name(d) == "register_model" for d in node.decorator_list
            ):
                names.append(node.name)
    return tuple(sorted(names))


def _decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def model_source(name: str, root: str | Path = ".") -> Path | None:
    """The file a user's model is defined in, else None.

    For `path/file.py:Class` the path itself; for `package.module:Class` the module's file relative
    to `root` when it lies under it (None for an installed package), found without importing the
    module (its parent packages are imported, as Python's finder does). The workflow makes this
    file an input of the runs that use the model, so editing it reruns them.
    """
    if not is_user_model(name):
        return None
    where, _ = user_target(name)
    root = Path(root)
    if is_file_target(where):
        return Path(where)
    origin = _module_file(where, root)
    if origin is None:
        return None
    try:
        return origin.resolve().relative_to(root.resolve())
    except ValueError:
        return None


def _module_file(module: str, root: Path) -> Path | None:
    """The source file of an importable module (the project root on the path), None if absent."""
    sys.path.insert(0, str(root.resolve()))
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    finally:
        sys.path.remove(str(root.resolve()))
    if found is None or not found.origin or not found.origin.endswith(".py"):
        return None
    return Path(found.origin)


def classes_in(path: Path) -> list[str]:
    """The names of the classes defined at the top level of a Python file (read, not imported)."""
    return [node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)]


def check_model(name: str, root: str | Path = ".") -> ModelSpec:
    """The spec of `name` once what it names is known to exist; UnknownModel says what does.

    torchvision.<name> must be one of `torchvision_models()`; a user's file must exist (relative
    to `root`, the project root) and define the class at its top level; a user's module must be
    importable (with `root` on the path) and define the class. Nothing is imported or built.
    """
    spec = model_spec(name)
    if is_torchvision(name):
        known = torchvision_models()
        wanted = name[len(TORCHVISION_PREFIX) :]
        if known and wanted not in known:
            # the nearest names first: the whole list (~120 names) is cut short in a config error
            near = difflib.get_close_matches(wanted, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            raise UnknownModel(
                f"torchvision has no classification model {wanted!r}; {hint}its models "
                f"(torchvision.models.list_models(module=torchvision.models)): {', '.join(known)}"
            )
    elif is_user_model(name):
        where, cls = user_target(name)
        root = Path(root)
        if is_file_target(where):
            path = root / where
            if Path(where).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
                # results must not depend on a file outside the project (another machine lacks it)
                raise UnknownModel(
                    f"{where!r} is outside the project root {root.resolve()}: model files are "
                    "paths relative to it; copy the file into the project (e.g. models/)"
                )
            if not path.is_file():
                folder = path.parent
                nearby = (
                    sorted(p.relative_to(root).as_posix() for p in folder.glob("*.py"))
                    if folder.is_dir()
                    else []
                )
                listing = (
                    f"Python files in {folder.relative_to(root).as_posix()}/: {nearby or 'none'}"
                    if folder.is_dir()
                    else f"the folder {folder.relative_to(root).as_posix()}/ does not exist"
                )
                raise UnknownModel(
                    f"no file {where!r} (paths are relative to the project root {root.resolve()}); {listing}"
                )
        else:
            found = _module_file(where, root)
            if found is None:
                raise UnknownModel(
                    f"no importable module {where!r} (an installed package, or one under the project "
                    f"root {root.resolve()}); for a file write path/to/file.py:{cls}"
                )
            path = found
        classes = classes_in(path)
        if cls not in classes:
            raise UnknownModel(
                f"{path.as_posix()} defines no class {cls!r}; its classes: {classes or 'none'}"
            )
    return spec
