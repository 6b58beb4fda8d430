"""Device and precision choice, and the bf16 code path (autocast, channels_last) run on any CPU.

No accelerator is lent to CI or to most development machines, and not every CPU has native bf16.
Every CPU runs bf16 autocast and channels_last (emulated where it lacks the instructions), so the
`cuda_code_path` fixture switches them on whatever the job resolved: every line a GPU run (or a
bf16 CPU run) executes, bar the kernels themselves, runs here (mixed-dtype outputs reaching the
loss and the metrics, NHWC weights in checkpoints and in the optimizer).
"""

from __future__ import annotations

import pytest
import test_train
import torch
from test_train import make_run

from cifarlab.analysis import lr_finder
from cifarlab.core import device as device_module
from cifarlab.core.device import pick_device
from cifarlab.models import build_model
from cifarlab.training.augment import batches
from cifarlab.training.features import compute_features
from cifarlab.training.loop import train_run
from cifarlab.training.sampling import subset

CPU = torch.device("cpu")
SMALL_VIT = {
    "patch_size": 8, "dim": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "dropout": 0.1, "emb_dropout": 0.1,
}  # fmt: skip


@pytest.fixture
def cuda_code_path(monkeypatch):
    """bf16 autocast and channels_last, as on CUDA, for CPU tensors. Yields the devices that asked
    for them (at least one per forward pass), so that a test can show the path was taken."""
    asked = []

    def always(device: torch.device, precision: str) -> bool:
        asked.append(device)
        return True

    monkeypatch.setattr(device_module, "uses_bf16", always)
    return asked


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: True)
    assert pick_device("auto").type == "mps"
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    assert pick_device("auto").type == "cpu"


def test_a_missing_accelerator_is_an_error_not_a_silent_cpu_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    with pytest.raises(RuntimeError, match="device 'cuda' was asked for.*device=auto"):
        pick_device("cuda")
    with pytest.raises(RuntimeError, match="device 'mps' was asked for.*device=auto"):
        pick_device("mps")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        pick_device("gpu")


def test_fp32_keeps_fp32_and_the_default_layout():
    assert not device_module.use_channels_last(CPU, "fp32")
    with device_module.autocast(CPU, "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert device_module.use_channels_last(CPU, "bf16")
    with device_module.autocast(CPU, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch, caplog):
    monkeypatch.delenv(device_module.PRECISION_ENV, raising=False)  # CI's forced bf16 run sets it
    caplog.set_level("INFO", logger="cifarlab.core.device")
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    assert device_module.resolve_precision(CPU, "auto") == "fp32"
    assert "no AVX-512 BF16 nor AMX" in caplog.text
    assert device_module.resolve_precision(torch.device("mps"), "auto") == "fp32"
    assert device_module.resolve_precision(torch.device("cuda"), "auto") == "bf16"
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    assert device_module.resolve_precision(CPU, "auto") == "bf16"
    assert "native bf16" in caplog.text
    assert device_module.resolve_precision(CPU, "fp32") == "fp32"  # a setting overrides the hardware
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        device_module.resolve_precision(CPU, "fp16")


def test_the_environment_forces_what_auto_means_and_nothing_else(monkeypatch, caplog):
    """CIFARLAB_PRECISION=bf16 is how CI runs the precision-sensitive tests in bf16 on any CPU."""
    caplog.set_level("INFO", logger="cifarlab.core.device")
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setenv(device_module.PRECISION_ENV, "bf16")
    assert device_module.resolve_precision(CPU, "auto") == "bf16"
    assert "forced by CIFARLAB_PRECISION" in caplog.text
    assert device_module.resolve_precision(CPU, "fp32") == "fp32"  # a test that pins fp32 keeps it
    monkeypatch.setenv(device_module.PRECISION_ENV, "fp32")
    assert device_module.resolve_precision(torch.device("cuda"), "auto") == "fp32"
    monkeypatch.setenv(device_module.PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match="CIFARLAB_PRECISION=.fp16. is not a precision"):
        device_module.resolve_precision(CPU, "auto")


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_channels_last_batches_hold_the_same_numbers(synthetic_data, augment):
    def first_batch(channels_last: bool):
        return next(
            batches(
                synthetic_data["train"], 32, shuffle=True, generator=torch.Generator().manual_seed(0),
                device=CPU, augment=augment, image_size=32, channels_last=channels_last,
            )
        )  # fmt: skip

    (x, y), (plain, plain_y) = first_batch(True), first_batch(False)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    assert torch.equal(x, plain) and torch.equal(y, plain_y)


def test_the_simple_cnn_learns_as_well_under_bf16_autocast(synthetic_data, cuda_code_path):
    run = make_run(epochs=3)
    mixed = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])
    assert mixed["status"] == "ok"
    assert mixed["history"][-1]["test_accuracy"] > 30  # chance is 10 %
    assert all(p.dtype == torch.float32 for p in mixed["model"].parameters())  # autocast: fp32 master weights
    assert len(cuda_code_path) >= 3 * (2000 // 64)  # every training step (3 epochs of 2,000 images)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "dropout_cnn", "dropout": 0.1, "augment": "crop_flip"},
        {"model": "resnet18", "freeze": "none", "optimizer": "sgd", "lr": 0.01},
        {"model": "vgg16", "freeze": "head", "augment": "crop_flip", "optimizer": "sgd", "lr": 0.01},
        {"model": "vit", "vit": SMALL_VIT, "optimizer": "adamw", "label_smoothing": 0.1},
    ],
    ids=lambda o: o["model"],
)
def test_every_model_trains_under_the_cuda_code_path(synthetic_data, cuda_code_path, overrides):
    run = make_run(epochs=1, train_subset=192, test_subset=64, **overrides)
    result = train_run(run, synthetic_data["train"], synthetic_data["test"], device=CPU, lr=run["lr"])
    assert result["status"] == "ok"
    row = result["history"][-1]
    assert torch.isfinite(torch.tensor([row["train_loss"], row["test_loss"]])).all()
    assert 0 <= row["test_accuracy"] <= 100
    assert all(p.dtype == torch.float32 for p in result["model"].parameters())
    assert cuda_code_path


def test_sigterm_and_resume_are_exact_under_the_cuda_code_path(
    synthetic_data, tmp_path, monkeypatch, cuda_code_path
):
    """NHWC weights and optimizer state go through the checkpoint and come back bit-identical."""
    # The CPU test itself (its asserts: the saved step, the removed handler, equal histories and weights).
    test_train.test_sigterm_mid_epoch_saves_and_resumes_exactly(synthetic_data, tmp_path, monkeypatch)
    assert cuda_code_path


def test_cached_features_under_bf16_match_fp32_to_bf16_precision(synthetic_data, monkeypatch):
    data = subset(synthetic_data["test"], torch.arange(64))
    model = build_model(make_run(model="resnet18", freeze="head"), num_classes=10)
    full = compute_features(model, data, image_size=32, device=CPU)
    mixed = compute_features(model, data, image_size=32, device=CPU, precision="bf16")
    assert mixed.dtype == torch.float32 and mixed.shape == full.shape == (64, 512)
    relative = (mixed - full).norm() / full.norm()
    assert 0 < relative < 0.05  # bf16 has 8 bits of mantissa: different, but close


def test_the_lr_finder_runs_under_the_cuda_code_path(synthetic_data, cuda_code_path):
    run = make_run(optimizer="sgd", train_subset=512, batch_size=64)
    finder = {"start_lr": 1e-4, "end_lr": 1.0, "num_iter": 30, "repeats": 1, "suggestion": "valley"}
    result = lr_finder.run_lr_finder(run, synthetic_data["train"], finder, device=CPU)
    assert 1e-4 <= result["lr"] <= 1.0
    losses = result["repeats"][0]["losses"]
    assert len(losses) >= 10 and all(torch.isfinite(torch.tensor(losses)))
    assert len(cuda_code_path) >= len(losses)
