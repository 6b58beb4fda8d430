"""Which accelerator a job runs on, and what that accelerator is good at.

`pick_device("auto")` prefers CUDA, then Apple MPS, then the CPU. Everything else in the package
takes the resulting `torch.device` and stays device-agnostic. On a machine with several GPUs a
local job first claims one of them (cifarlab.core.gpu_slots: one job per GPU) and sees only it.
The numeric precision (bf16 autocast with channels_last, or fp32) is decided here too, once per
job (`resolve_precision`), so that the training loop has no device branches.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from cifarlab.core import gpu_slots

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
    quietly runs on the CPU would take hours and report misleading speeds. For cuda (and auto)
    the job first claims a GPU slot (gpu_slots.claim_for_job), before anything initialises CUDA,
    so that local jobs run on different GPUs; it holds the slot until it exits.
    """
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; use one of {list(DEVICES)}")
    if name in ("auto", "cuda"):
        slot = _claim_slot()
        if torch.cuda.is_available():
            return _on_slot(slot)
        if slot is not None:  # CUDA does not start after all: another job may have this GPU
            gpu_slots.release()
    if name == "auto":
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda":
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


def _claim_slot() -> gpu_slots.Slot | None:
    """This job's GPU slot, where torch has CUDA and sees a GPU (else None: a CPU job never waits
    for a GPU). torch.cuda.device_count asks NVML and leaves CUDA uninitialised."""
    gpus = torch.cuda.device_count() if torch.backends.cuda.is_built() else 0
    if not gpus:
        return None
    return gpu_slots.claim_for_job(count=lambda: gpus)  # counted once


def _on_slot(slot: gpu_slots.Slot | None) -> torch.device:
    """The CUDA device of a job's claimed `slot` (None: no slot, torch's default device), made current.

    claim_for_job narrowed CUDA_VISIBLE_DEVICES to the slot's GPU, so CUDA shows one device,
    cuda:0. If something had initialised CUDA in this process before (the variable is read once),
    CUDA still shows all of them: then the slot's index picks its GPU among them.
    """
    if slot is None:
        return torch.device("cuda")
    torch.cuda.init()
    index = 0 if torch.cuda.device_count() == 1 else slot.index
    if index:
        log.warning("CUDA was initialised before the GPU slot was claimed: using cuda:%d", index)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def gpu_slot() -> int | None:
    """The index of the GPU slot this job holds (None: none), for its records."""
    slot = gpu_slots.held()
    return None if slot is None else slot.index


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


def place(module: torch.nn.Module, device: torch.device, precision: str) -> None:
    """Move `module` to `device`, channels-last where that is faster (use_channels_last).

    On CUDA, cuDNN autotunes its convolutions (`cudnn.benchmark`): once per input shape, and a
    run's shapes are few and fixed (the full batch, the epoch's shorter last batch, the test
    batches), so the search pays for itself within the first epoch. The last batch is not
    dropped or padded: that would change which images train, and the CPU's bit-for-bit results.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if use_channels_last(device, precision) else torch.preserve_format
    module.to(device, memory_format=memory_format)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that wall-clock timings measure the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe(device: torch.device) -> str:
    """The kind of device, for metrics and logs: 'cuda (NVIDIA H100)', 'cpu (4 threads)', 'mps'.

    Not which of a machine's GPUs: the seeds of a run that ran on two GPUs of one kind show one
    device (the report's one value per run); the GPU's id is its own record, `gpu_id`.
    """
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def gpu_id(device: torch.device) -> str | None:
    """Which of the machine's GPUs `device` is, for a job's records (None off CUDA): its entry of
    the CUDA_VISIBLE_DEVICES the job started with (CUDA's index such as '7', or a UUID or MIG id),
    not its index inside the job (0 under a slot)."""
    if device.type != "cuda":
        return None
    index = torch.cuda.current_device() if device.index is None else device.index
    slot, visible = gpu_slots.held(), gpu_slots.visible_gpus(count=torch.cuda.device_count)
    return slot.gpu if slot else visible[index] if index < len(visible) else str(index)
