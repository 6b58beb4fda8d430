"""Your own nn.Module as a run's model: `model: path/to/file.py:Class` or `model: package.module:Class`.

The constructor contract: the class is called with keywords only,

    Class(num_classes=<classes of the data>, image_size=<the run's image_size>, **model_args)

where `image_size` is passed only when the constructor takes it (or **kwargs), and `model_args`
is the run's `model_args:` mapping. The model maps normalised float images N x 3 x S x S
(S = image_size) to N x num_classes scores (logits, or log-probabilities). Activations as
modules (nn.ReLU, ...) let guided backprop and Grad-CAM explain it; a model may also define
`init_from_data(images)` and `start_epoch(epoch)` (see cifarlab.models.airbench), which training calls.

A file path is relative to the project root (the working directory of the workflow); a module
is imported with the project root on the path. The workflow checks that the file and class
exist before any job runs (cifarlab.models.specs.check_model) and makes the file an input of
every run that uses it, so editing it retrains them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from torch import nn

from cifarlab.models.specs import is_file_target, user_target


def load_class(name: str, root: str | Path = ".") -> type:
    """The class a user's model name points at, imported from its file or module."""
    where, cls = user_target(name)
    root = Path(root).resolve()
    if is_file_target(where):
        path = (root / where).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"model {name!r}: no file {path}")
        # A module name of its own per file, so that two files called net.py do not collide.
        module_name = f"cifarlab_user_model_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
    else:
        sys.path.insert(0, str(root))
        try:
            module = importlib.import_module(where)
        finally:
            sys.path.remove(str(root))
    if not hasattr(module, cls):
        found = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, nn.Module))
        raise AttributeError(f"model {name!r}: {where} has no class {cls!r}; its nn.Module classes: {found}")
    return getattr(module, cls)


def constructor_arguments(cls: type, num_classes: int, image_size: int, model_args: dict) -> dict:
    """The keywords `cls` is called with (see the module's contract); a clear error if it cannot take them."""
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if "num_classes" not in parameters and not takes_any:
        raise TypeError(
            f"{cls.__name__}.__init__ must take num_classes (the number of classes of the data); "
            f"it takes {list(parameters)}"
        )
    arguments = {"num_classes": num_classes}
    if "image_size" in parameters or takes_any:
        arguments["image_size"] = image_size
    clash = sorted(set(model_args) & set(arguments))
    if clash:
        raise TypeError(
            f"model_args must not set {clash}: the workflow passes them (from the data and the run)"
        )
    unknown = sorted(set(model_args) - set(parameters)) if not takes_any else []
    if unknown:
        raise TypeError(
            f"{cls.__name__}.__init__ takes no {unknown} (model_args); it takes {list(parameters)}"
        )
    return {**arguments, **model_args}


def from_run(run: dict, num_classes: int) -> nn.Module:
    """The user's model for the run: its class called as the module docstring says."""
    cls = load_class(run["model"])
    model = cls(**constructor_arguments(cls, num_classes, run["image_size"], run.get("model_args") or {}))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {run['model']!r} is not an nn.Module (got {type(model).__name__})")
    return model
