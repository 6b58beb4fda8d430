"""The `evaluate` step (metrics.json of one run) and the figures drawn from it.

metrics.json follows docs/architecture.md. A run with test-time augmentation (its `tta`
setting) gets both accuracies, plain (`test_accuracy`) and augmented (`tta_test_accuracy`), side by
side: one is never reported as the other. A diverged run gets its metrics too, with
test_accuracy and test_loss null and status "diverged", so the report shows it as such instead of
a meaningless accuracy.

The model evaluated is the one train chose (`best_epoch`: the best validation epoch, or the last
epoch without a validation split, docs/training.md); this step copies that choice and never
makes one, so no figure is picked on the test set.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from cifarlab.core.code_version import code_version
from cifarlab.core.device import pick_device, place, resolve_precision
from cifarlab.core.environment import environment
from cifarlab.core.files import load_torch, write_json
from cifarlab.models import load_head, load_trained
from cifarlab.study.results import read_history, recorded_device
from cifarlab.training.sampling import TEST_SUBSET_SEED, stratified_subset, subset
from cifarlab.training.scoring import loss_accuracy, split_logits
from cifarlab.training.settings import RunSettings
from cifarlab.training.timing import device_seconds

log = logging.getLogger(__name__)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts, int64 C x C: rows are the true class, columns the predicted one."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# What train records in model.pt about the data and the chosen epoch, copied into metrics.json.
TRAINING_KEYS = ("train_images", "validation_images", "best_epoch", "best_validation_accuracy")


def training_record(
    saved: dict, settings: RunSettings, model_path: str | Path, dataset: str, seed: int
) -> dict:
    """TRAINING_KEYS of model.pt's metadata, checked to belong to this (dataset, seed);
    `settings` are model.pt's run settings (RunSettings.from_dict(saved["run"]))."""
    missing = [k for k in TRAINING_KEYS if k not in saved]
    if missing:
        raise ValueError(
            f"{model_path} lacks {missing}: it was written by an older train step; delete it and rerun"
        )
    # the settings name their dataset in a study of several
    trained_on = settings.dataset if "dataset" in saved["run"] else dataset
    if settings.seed != seed or trained_on != dataset:
        raise ValueError(
            f"{model_path} was trained with seed {settings.seed} on {trained_on!r}, "
            f"but is evaluated as seed {seed} of {dataset!r}; delete it and rerun"
        )
    return {k: saved[k] for k in TRAINING_KEYS}


def per_class_accuracy(confusion: torch.Tensor, classes: list[str]) -> tuple[dict[str, float], list[str]]:
    """(class -> accuracy in % over its test images, the classes that have no test images).

    confusion: int64 C x C (rows: true class). A class without test images has no accuracy,
    neither 0 % nor 100 %: it is left out of the dict and named in the list (the report says
    "no test images"), whether the data has none of it or the run's test_subset drew none.
    """
    counts = confusion.sum(1)
    correct = confusion.diag()
    accuracy = {c: 100.0 * int(correct[i]) / int(counts[i]) for i, c in enumerate(classes) if counts[i] > 0}
    return accuracy, [c for i, c in enumerate(classes) if counts[i] == 0]


def _run_record(
    saved: dict, settings: RunSettings, history: list[dict], model_path: str | Path, dataset: str, seed: int
) -> dict:
    """The keys of metrics.json that come from training (model.pt and history.csv), not the test pass.

    Read through `settings` (model.pt's, built once by compute_metrics); the `settings` key
    records model.pt's run dict as it is."""
    return {
        "dataset": dataset,
        "run": settings.name,
        "seed": seed,
        "model": settings.model,
        "status": saved["status"],
        "diverged": saved["diverged"],
        "classes": saved["classes"],
        **training_record(saved, settings, model_path, dataset, seed),
        "final_train_accuracy": _finite(history[-1]["train_accuracy"]) if history else None,
        "params_total": saved["params_total"],
        "params_trainable": saved["params_trainable"],
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "optimizer": settings.optimizer,
        "lr": saved["lr"],
        "lr_source": saved["lr_source"],
        "dropout": settings.dropout,
        "pretrained": settings.pretrained,
        "freeze": settings.freeze,
        "image_size": settings.image_size,
        "train_seconds": saved["train_seconds"],
        "images_per_second": saved["images_per_second"],
        # training's kind of device and GPU id (an older model.pt's 'cuda:7 (...)' read as both)
        **recorded_device(saved),
        "gpu_slot": saved.get("gpu_slot"),  # training's (cifarlab.core.gpu_slots); older model.pt lack it
        "precision": saved.get("precision", "fp32"),  # training's, as resolved on its machine
        "settings": saved["run"],  # the dict as saved, so metrics.json is unchanged
    }


def compute_metrics(
    model_path: str | Path,
    history_path: str | Path,
    test_path: str | Path,
    *,
    dataset: str,
    seed: int,
    device: torch.device,
    cached_test: str | Path | None = None,
    precision: str = "fp32",
    tta: str = "none",
) -> dict:
    """The metrics.json dict (see docs/architecture.md) of one trained model: seed `seed` of a
    run on the dataset named `dataset`, at the job's resolved `precision`, with `tta` test-time
    augmentation beside the plain accuracy (an evaluation setting: the workflow does not pass it
    to training, so changing it retrains nothing).

    cached_test: the cached test features of a frozen backbone; then only the head runs, which
    gives the same predictions as the whole model on the images (tests/test_features.py).
    """
    # With cached test features only the head runs: it alone is built (cifarlab.models.load_head).
    model, saved = (load_trained if cached_test is None else load_head)(model_path, device)
    place(model, device, precision)
    settings, classes = RunSettings.from_dict(saved["run"]), saved["classes"]
    metrics = {
        **_run_record(saved, settings, read_history(history_path), model_path, dataset, seed),
        "test_accuracy": None,
        "test_loss": None,
        "tta": tta,
        "tta_test_accuracy": None,
        "tta_test_loss": None,
        "per_class_accuracy": None,
        "classes_without_test_images": None,
        "confusion_matrix": None,
        "eval_precision": precision,  # this step's (auto may resolve otherwise on another node)
        # Which code wrote this file. Training's code is the same as far as it matters: a change
        # to the code train runs changes its code digest, so train and then this step rerun.
        "code_version": code_version(),
        # the whole environment, to replay it (cifarlab.core.environment); filled in by main
        "environment": None,
        # device seconds (cifarlab.training.timing): training's, warm-up excluded, and the test pass's
        "timing": dict(saved.get("timing") or {}),
    }
    if saved["status"] != "ok":
        log.warning("%s: status %s, no test metrics (%s)", settings.name, saved["status"], saved["diverged"])
        return metrics
    if cached_test is not None and metrics["tta"] != "none":
        raise ValueError(
            f"{settings.name}: tta {metrics['tta']!r} needs the test images, not cached features; "
            "the workflow gives such runs the images (common.smk uses_cached_features)"
        )
    data = load_torch(test_path if cached_test is None else cached_test)
    data = subset(data, stratified_subset(data["labels"], settings.test_subset, TEST_SUBSET_SEED))
    # training's device seconds (cifarlab.training.timing), plus this pass's: with TTA its views
    # and the plain pass together (`tta_s`), else the plain pass (`test_s`)
    with device_seconds(device, metrics["timing"], "tta_s" if tta != "none" else "test_s"):
        logits, tta_logits = split_logits(
            model, data, image_size=settings.image_size, device=device, precision=precision, tta=tta
        )
    loss, accuracy = loss_accuracy(logits, data["labels"])
    if tta_logits is not None:
        tta_loss, tta_accuracy = loss_accuracy(tta_logits, data["labels"])
        metrics.update(tta_test_accuracy=tta_accuracy, tta_test_loss=tta_loss)
        log.info("%s: test accuracy with %s TTA %.2f %%", settings.name, metrics["tta"], tta_accuracy)
    confusion = confusion_matrix(data["labels"], logits.argmax(1).cpu(), len(classes))
    per_class, untested = per_class_accuracy(confusion, classes)
    if untested:
        log.warning("%s: no test images of %s: left out of per-class accuracy", settings.name, untested)
    metrics.update(
        test_accuracy=accuracy,
        test_loss=loss,
        per_class_accuracy=per_class,
        classes_without_test_images=untested,
        confusion_matrix=confusion.tolist(),
    )
    log.info("%s: test accuracy %.2f %%, test loss %.4f", settings.name, accuracy, loss)
    return metrics


def main(
    *,
    model_path: str | Path,
    history_path: str | Path,
    test_path: str | Path,
    metrics_path: str | Path,
    dataset: str,
    seed: int,
    device: str = "auto",
    cached_test: str | Path | None = None,
    threads: int | None = None,
    precision: str = "auto",
    tta: str = "none",
    exported_path: str | Path | None = None,
    diffs_folder: str | Path | None = None,
    onnx_path: str | Path | None = None,
    time_budget: dict | None = None,
) -> dict:
    """The `evaluate` step: write metrics.json, and `exported_path` (model.pt2: cifarlab.training.export)
    and `onnx_path` (model.onnx, where onnx is installed). time_budget: what a time plan cut in
    the run (cifarlab.config.budgets.apply_time_caps), recorded as metrics.json's `time_budget`."""
    if threads:
        torch.set_num_threads(threads)
    torch_device = pick_device(device)
    metrics = compute_metrics(
        model_path, history_path, test_path, dataset=dataset, seed=seed, device=torch_device,
        cached_test=cached_test,
        precision=resolve_precision(torch_device, precision), tta=tta,
    )  # fmt: skip
    # every distribution, torch's build, CPU flags, GPUs; a dirty tree's diff saved in diffs_folder
    metrics["environment"] = environment(diffs_folder)
    if time_budget:
        metrics["time_budget"] = dict(time_budget)
    if exported_path is not None:
        from cifarlab.training.export import export_model  # here: the study's other steps never need it

        model, saved = load_trained(model_path, "cpu")  # the whole model, backbone and head
        image_shape = tuple(load_torch(test_path)["images"].shape[-2:])
        export_model(model, saved, image_shape, exported_path, onnx_path=onnx_path)
    write_json(metrics, metrics_path, strict=True)
    return metrics
