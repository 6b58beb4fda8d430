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

Where the `onnx` and `onnxscript` packages are installed (an option, not a dependency), the same
program is also written as `model.onnx` (input `images`, output `scores`, the class names as the
JSON of its metadata property `classes`), for onnxruntime and the other ONNX runtimes:

    session = onnxruntime.InferenceSession("model.onnx")
    scores = session.run(None, {"images": images_uint8_numpy})[0]
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch
from torch import nn

from cifarlab.training.batching import to_float

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.json"
# model.onnx's metadata property with the class names (a JSON list)
ONNX_CLASSES = "classes"
# what torch.onnx.export needs beside torch (its exporter translates the torch.export program)
ONNX_PACKAGES = ("onnx", "onnxscript")


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
    model: nn.Module,
    saved: dict,
    image_shape: tuple[int, int],
    path: str | Path,
    onnx_path: str | Path | None = None,
) -> torch.export.ExportedProgram:
    """Write `model` (trained, from cifarlab.models.load_trained; `saved` its model.pt dict) as a
    torch.export program at `path` for images of `image_shape` (H, W) and any batch size, and
    the same as ONNX at `onnx_path` where onnx is installed (export_onnx)."""
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
    if onnx_path is not None:
        export_onnx(program, list(saved["classes"]), onnx_path)
    return program


def export_onnx(program: torch.export.ExportedProgram, classes: list[str], path: str | Path) -> bool:
    """Write `program` as ONNX at `path` (images uint8 N x 3 x H x W -> scores float32 N x classes,
    the class names in its metadata); whether it was written. Without onnx and onnxscript installed,
    or when the exporter cannot translate the model, one log line and no file: model.pt2 is the
    model to take away, ONNX a copy for other runtimes. An older model.onnx is removed either way,
    so the folder never holds one of another training."""
    path = Path(path)
    path.unlink(missing_ok=True)
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        log.info("no %s: %s not installed (pip install onnx onnxscript to get one)", path, ", ".join(missing))
        return False
    import onnx

    partial = path.with_name(path.stem + ".partial.onnx")
    try:
        torch.onnx.export(
            program, f=str(partial), output_names=["scores"], external_data=False, dynamo=True, verbose=False
        )
        written = onnx.load(str(partial))
        onnx.helper.set_model_props(written, {ONNX_CLASSES: json.dumps(classes)})
        onnx.save(written, str(partial))
    except Exception as error:  # noqa: BLE001 - an ONNX copy is optional; model.pt2 is written
        partial.unlink(missing_ok=True)
        log.warning("no %s: the ONNX exporter failed (%s: %s); model.pt2 is unaffected", path,
                    type(error).__name__, error)  # fmt: skip
        return False
    partial.replace(path)
    log.info("wrote %s", path)
    return True
