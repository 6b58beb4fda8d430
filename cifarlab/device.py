"""Which accelerator a job runs on, and what that accelerator is good at.

`pick_device("auto")` prefers CUDA, then Apple MPS, then the CPU. Everything else in the package
takes the resulting `torch.device` and stays device-agnostic; the two CUDA-only speed-ups (bf16
autocast and channels_last) are decided here so that the training loop has no device branches.
"""

from __future__ import annotations

import contextlib

import torch

DEVICES = ("auto", "cuda", "mps", "cpu")


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


def uses_cuda_speedups(device: torch.device) -> bool:
    """Whether `device` gets bf16 autocast and channels_last (CUDA only).

    The one place that decides it: tests/test_device.py switches it on for the CPU, which
    supports both, to run the CUDA code path without a GPU.
    """
    return device.type == "cuda"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); full fp32 elsewhere."""
    if uses_cuda_speedups(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(device: torch.device) -> bool:
    """NHWC memory layout: faster convolutions with cuDNN on CUDA, no gain (or a loss) elsewhere."""
    return uses_cuda_speedups(device)


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
