"""Which accelerator a job runs on, and what that accelerator is good at.

`pick_device("auto")` prefers CUDA, then Apple MPS, then the CPU. Everything else in the package
takes the resulting `torch.device` and stays device-agnostic. The numeric precision (bf16 autocast
with channels_last, or fp32) is decided here too, once per job (`resolve_precision`), so that the
training loop has no device branches.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16")
# What `auto` resolves to when this environment variable says so (fp32 | bf16): CI sets it to bf16
# to run the precision-sensitive tests in bf16 on any CPU (emulated where the CPU lacks it), so a
# test that only holds in fp32 fails there too and not only on a CPU with native bf16.
PRECISION_ENV = "CIFARLAB_PRECISION"


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def pick_device(name: str = "auto") -> torch.device:
    """The torch device for `name` (auto | cuda | mps | cpu); auto = cuda, then mps, then cpu.

    Asking for a device this machine lacks is an error (not a silent CPU fallback): a GPU job that
    quietly runs on the CPU would take hours and report misleading speeds.
    """
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; use one of {list(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was asked for but torch sees no CUDA GPU here "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "run on a GPU node or use --config device=auto (or cpu)"
        )
    if name == "mps" and not _mps_available():
        raise RuntimeError(
            "device 'mps' was asked for but Apple's Metal backend is not available here; "
            "use --config device=auto (or cpu)"
        )
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX-512 BF16 or AMX tiles).

    Without either, oneDNN emulates bf16 in fp32 and bf16 autocast is slower than fp32: on this
    project's development Xeon (AVX-512 VNNI only) a conv step took 3.5x as long
    (benchmarks/README.md, precision).
    """
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(device: torch.device, setting: str) -> str:
    """The precision a job runs in on `device` for the config's `precision` setting: bf16 or fp32.

    auto = bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere (MPS: bf16 autocast is not
    verified there), unless the environment variable CIFARLAB_PRECISION (fp32 | bf16) forces it.
    A setting other than auto always wins. The choice and its reason go to the log.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"unknown precision {setting!r}; use one of {list(PRECISIONS)}")
    if setting != "auto":
        log.info("precision %s (set in the config)", setting)
        return setting
    forced = os.environ.get(PRECISION_ENV, "")
    if forced:
        if forced not in ("fp32", "bf16"):
            raise ValueError(
                f"{PRECISION_ENV}={forced!r} is not a precision: set it to fp32 or bf16, or unset it"
            )
        chosen, why = forced, f"forced by {PRECISION_ENV} in the environment"
    elif device.type == "cuda":
        chosen, why = "bf16", "CUDA: tensor cores, no loss scaling needed"
    elif device.type == "cpu" and cpu_has_native_bf16():
        chosen, why = "bf16", "the CPU has native bf16 (AVX-512 BF16 or AMX)"
    elif device.type == "cpu":
        chosen, why = "fp32", "the CPU has no AVX-512 BF16 nor AMX: bf16 would be emulated, slower than fp32"
    else:
        chosen, why = "fp32", f"bf16 autocast is not verified on {device.type}"
    log.info("precision auto -> %s: %s", chosen, why)
    return chosen


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether a job on `device` at the resolved `precision` runs bf16 autocast and channels_last.

    The one place that decides it: tests/test_device.py switches it on for the CPU to run the
    mixed-precision code path whatever the CPU.
    """
    return precision == "bf16"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast (fp32 master weights, no loss scaling needed) or full fp32."""
    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(device: torch.device, precision: str) -> bool:
    """NHWC memory layout, with bf16: what oneDNN and cuDNN run fastest in reduced precision."""
    return uses_bf16(device, precision)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that wall-clock timings measure the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe(device: torch.device) -> str:
    """A human-readable name for metrics and logs: 'cuda (NVIDIA H100)', 'cpu (4 threads)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
