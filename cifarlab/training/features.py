"""The `features` step: a frozen backbone's output for every image, computed once.

When only the head of a pretrained-style model trains (freeze: head) and the images are not
augmented, the backbone is a fixed function of each image. Its output (the input of the last
layer) is computed here once per split; `train` then trains the head on these vectors, so ten
epochs cost one backbone pass instead of ten.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from cifarlab.core import progress
from cifarlab.core.device import (
    autocast,
    describe,
    pick_device,
    place,
    resolve_precision,
    synchronize,
    use_channels_last,
)
from cifarlab.core.files import load_torch, save_torch
from cifarlab.models import build_model, head_of
from cifarlab.training.batching import inference_batch, split_batches
from cifarlab.training.sampling import TEST_SUBSET_SEED, stratified_subset, subset, train_validation_split

log = logging.getLogger(__name__)


@torch.no_grad()
def compute_features(
    model: nn.Module,
    data: dict,
    *,
    image_size: int,
    device: torch.device,
    batch_size: int | None = None,
    precision: str = "fp32",
    name: str = "features",
) -> torch.Tensor:
    """The input of `model`'s head for every image of the prepared dict `data`, in order.

    float32 N x D on the CPU (D = 4096 for vgg16, 512 for resnet18). The model runs in eval mode,
    without augmentation, exactly as it does in training with a frozen backbone, at the job's
    resolved `precision`, `batch_size` images per forward pass (None: batching.inference_batch,
    1,024 at 32 px on a GPU, 128 on the CPU), the split uploaded once and the features copied
    back once. Every 30 s a progress line (`name done/total images | ~time left`) goes to the terminal
    (cifarlab.core.progress).
    """
    steps = progress.Steps(name, len(data["labels"]), "images")
    captured: list[torch.Tensor] = []  # on the device: copied back once, at the end
    done = 0  # images embedded so far
    # A hook on the head sees what the head receives: the same graph as the full forward pass.
    hook = head_of(model).register_forward_hook(lambda m, args, out: captured.append(args[0].float()))
    channels_last = use_channels_last(device, precision)
    place(model.eval(), device, precision)
    try:
        for x, _ in split_batches(
            data, batch_size or inference_batch(data, image_size, device), device=device,
            image_size=image_size, channels_last=channels_last,
        ):  # fmt: skip
            with autocast(device, precision):
                model(x)
            done += len(x)
            steps.update(done)
    finally:
        hook.remove()
    return torch.cat(captured).cpu()


def needed_indices(labels: torch.Tensor, split: str, subsets: dict | None) -> torch.Tensor:
    """Sorted indices of the images of a split that the runs sharing a backbone use.

    subsets: {"train": [[size, seed, validation], ...] or None, "test": [size, ...] or None}
    (None = all; validation, the run's held-out images, may be left out for 0): the same images
    that `train` and `evaluate` draw (train.train_validation_split), held-out ones included.
    """
    wanted = (subsets or {}).get(split)
    if wanted is None:
        return torch.arange(len(labels))
    if split == "test":
        return torch.cat([stratified_subset(labels, size, TEST_SUBSET_SEED) for size in wanted]).unique()
    parts = []
    for size, seed, *validation in wanted:
        split_indices = train_validation_split(
            labels, validation=validation[0] if validation else 0, train_subset=size, seed=seed
        )
        parts.extend(split_indices)
    return torch.cat(parts).unique()


def main(
    *,
    train_path: str | Path,
    test_path: str | Path,
    out_train: str | Path,
    out_test: str | Path,
    backbone: dict,
    device: str = "auto",
    threads: int | None = None,
    precision: str = "auto",
) -> None:
    """Write `{features, indices, labels, classes, backbone}` for both splits (docs/architecture.md).

    backbone: {"model", "pretrained", "seed", "image_size", "subsets"} (the rule's params); the
    backbone is built by `build_model` exactly as `train` builds it, so the features match its
    forward pass. Only the images of the runs' subsets are embedded.
    """
    if threads:
        torch.set_num_threads(threads)
    torch_device = pick_device(device)
    chosen = resolve_precision(torch_device, precision)
    train = load_torch(train_path)
    model = build_model({**backbone, "freeze": "head"}, len(train["classes"]))
    for split, path, out in (("train", train_path, out_train), ("test", test_path, out_test)):
        data = train if split == "train" else load_torch(path)
        indices = needed_indices(data["labels"], split, backbone.get("subsets"))
        started = time.perf_counter()
        features = compute_features(
            model,
            subset(data, indices),
            image_size=backbone["image_size"],
            device=torch_device,
            precision=chosen,
            name=f"features {backbone['model']} {split}",
        )
        synchronize(torch_device)
        seconds = time.perf_counter() - started
        log.info(
            "%s features of %d of %d %s images (%s, %d px) on %s: %.1f s, %.1f images/s",
            backbone["model"], len(features), len(data["labels"]), split,
            "imagenet" if backbone["pretrained"] else "random", backbone["image_size"],
            describe(torch_device), seconds, len(features) / seconds,
        )  # fmt: skip
        save_torch(
            {
                "features": features,
                "indices": indices,
                "labels": data["labels"],
                "classes": data["classes"],
                "backbone": backbone,
            },
            out,
        )
