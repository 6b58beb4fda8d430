"""Measure what a training step of each model family costs on this machine: the first estimate's costs.

`python -m cifarlab.training.calibrate` reads a JSON request on stdin ({"device", "precision",
"threads", "runs": {family: the settings of a run of it}}) and prints one JSON line: family ->
seconds per 1,000 training images (forward, backward and an optimizer step) at 32 px, the basis
of cifarlab.study.estimate's cost model (it scales them by pixel count, and a ViT by its size
relative to cifarlab.models.cost.VIT_REFERENCE, the one measured here). cifarlab.study.time_plan
runs it in a subprocess (the workflow layer imports no torch) the first time a study with a
`time_budget` is planned on a machine and device; the result is cached per machine, device and
precision in the calibration file (.snakemake/cifarlab/calibration.json).

A few steps only: one warm-up step (allocations, oneDNN's kernel choice), then STEPS timed ones
on random images at batch min(the run's, MAX_BATCH, about a second's work), so that it takes
seconds on a 2-core CPU.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F

from cifarlab.core.device import (
    autocast,
    pick_device,
    place,
    resolve_precision,
    synchronize,
    use_channels_last,
)
from cifarlab.models.build import build_model
from cifarlab.models.cost import VIT_REFERENCE, model_cost
from cifarlab.models.specs import model_spec
from cifarlab.study import estimate

STEPS = 2
# Batches of at most 64 images and about WORK_SECONDS of work at the spec's (slow-machine) CPU
# figure, at least MIN_BATCH (a VGG16 step at 64 would take seconds on a 2-core CPU).
MAX_BATCH = 64
MIN_BATCH = 8
WORK_SECONDS = 0.3
CLASSES = 10


def measured_settings(run: dict) -> tuple[dict, int]:
    """The run settings a family is measured at, and their image size: the run's model at 32 px
    (or its smallest size), untrained weights (no download), every layer training (the cost
    basis is forward and backward of the whole network), a ViT of VIT_REFERENCE's size."""
    size = max(32, model_spec(run["model"]).min_image_size)
    settings = {**run, "image_size": size, "pretrained": False, "freeze": "none", "seed": 0}
    if run["model"] == "vit":
        settings["vit"] = {**(run.get("vit") or {}), **VIT_REFERENCE}
    return settings, size


def seconds_per_1000(run: dict, device: torch.device, precision: str) -> float:
    """Seconds per 1,000 images of one training step of `run`'s model, at 32 px."""
    settings, size = measured_settings(run)
    spec_cpu = model_cost(run["model"]).seconds_per_1000_images[1]
    batch = max(
        MIN_BATCH,
        min(int(run.get("batch_size") or MAX_BATCH), MAX_BATCH, int(WORK_SECONDS * 1000 / spec_cpu)),
    )
    model = build_model(settings, CLASSES).train()
    place(model, device, precision)  # as training places it (channels-last, cuDNN autotuning)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device=device)
    if use_channels_last(device, precision):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (batch,), device=device)
    times = []
    for step in range(STEPS + 1):
        synchronize(device)
        start = time.perf_counter()
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
    per_image = min(times) / batch
    return per_image * 1000 / estimate.size_factor(size)  # the estimate multiplies it back


def main(request: dict) -> dict[str, float]:
    """Family -> seconds per 1,000 images at 32 px, for the request's runs (see the module's
    docstring), and "*work": the seconds this took after the imports (the caller, timing the
    whole process, has a job's start-up: Python, torch and cifarlab's imports)."""
    start = time.perf_counter()
    torch.set_num_threads(int(request["threads"]))
    try:
        device = pick_device(request["device"])
    except RuntimeError as error:  # the config's device is not here: the planner's config error
        print(error, file=sys.stderr)
        raise SystemExit(estimate.DEVICE_MISSING_EXIT) from None
    precision = resolve_precision(device, request["precision"])
    costs = {family: seconds_per_1000(run, device, precision) for family, run in request["runs"].items()}
    return {**costs, "*work": time.perf_counter() - start}


if __name__ == "__main__":
    # the modules a training job imports, so that the start-up measured is a job's
    import cifarlab.training.loop  # noqa: F401

    print(json.dumps(main(json.loads(sys.stdin.read()))))
