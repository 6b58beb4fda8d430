"""One job per GPU on a local machine: each GPU job claims a free device slot before CUDA starts.

Snakemake's `gpu` resource only counts: with `--resources gpu=2` two GPU jobs run at once, but it
tells neither which GPU (Snakemake 9 hands out no per-job device index: snakemake/snakemake#281),
so both used GPU 0. Here each job, before CUDA is initialised, takes one slot: slot i is the i-th
entry of the devices this process may use (CUDA_VISIBLE_DEVICES, else GPUs 0..n-1), and the job
then sets CUDA_VISIBLE_DEVICES to that one entry, so that it sees that GPU alone as `cuda:0`.

A slot is a lock file, `<SLOTS_DIR>/<host>/<i>.lock`, held with an exclusive `flock` for the
job's life. The kernel drops a flock when its process ends, however it ends (an exception, a
SIGKILL, a crash), so a slot left by a dead job is free again at once: its file, still holding the
dead pid, is claimed by the next job without any cleaning up. The pid and host written into the
file only say who holds it, for the message of a job that waits. Lock files are never removed (a
removed file would let two processes lock two different files of the same name). The folder is
per host, so a shared filesystem does not mix the GPUs of two nodes.

When every slot is taken the job waits (polling every POLL_SECONDS) and says so once, in its log:
with the workflow's default `gpu` resource (one per GPU, workflow/rules/resources.smk) that
happens only when another Snakemake run or a `python -m cifarlab verify` holds a GPU.

Under SLURM the scheduler gives a job the GPU it asked for (`--gpus=1`) and sets
CUDA_VISIBLE_DEVICES itself: a job in a SLURM allocation that sees one GPU claims nothing.

Standard library only: the workflow layer counts the GPUs with `visible_gpus` while it plans.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; jobs there are not spread over GPUs
    fcntl = None

log = logging.getLogger(__name__)

# Where the lock files live, relative to Snakemake's working directory (beside its own state);
# the environment variable moves them (tests; two studies in two folders sharing one machine's GPUs
# point it at the same folder).
SLOTS_DIR = Path(".snakemake/cifarlab/gpu-slots")
SLOTS_DIR_ENV = "CIFARLAB_GPU_SLOTS_DIR"
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Slot:
    """A claimed GPU: its slot `index` (position in the visible list), the `gpu` id CUDA knows it
    by (an entry of CUDA_VISIBLE_DEVICES: an index, a UUID or a MIG id) and its lock file."""

    index: int
    gpu: str
    lock: Path


def nvidia_smi_count() -> int:
    """GPUs that `nvidia-smi -L` lists (one line `GPU i: ...` each); 0 without the tool or a driver."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines())


def visible_gpus(
    environ: Mapping[str, str] | None = None, count: Callable[[], int] = nvidia_smi_count
) -> list[str]:
    """The ids of the GPUs this process may use: CUDA_VISIBLE_DEVICES's entries where it is set
    (empty: none), else "0".."n-1" for the n GPUs that `count` finds (nvidia-smi; a job passes
    torch.cuda.device_count, which asks NVML without initialising CUDA)."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [entry.strip() for entry in listed.split(",") if entry.strip()]
    return [str(i) for i in range(count())]


def slots_dir(environ: Mapping[str, str] | None = None) -> Path:
    """This host's folder of lock files (SLOTS_DIR, or the folder CIFARLAB_GPU_SLOTS_DIR names)."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(SLOTS_DIR_ENV) or SLOTS_DIR) / socket.gethostname()


def _try_lock(lock: Path) -> int | None:
    """An open descriptor holding `lock`'s exclusive flock, with this process written in; None if held."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    return fd


def _holders(directory: Path, gpus: list[str]) -> str:
    """'slot 0 (GPU 0): pid 123 host', ... as the lock files say (for the waiting message)."""
    held = []
    for index, gpu in enumerate(gpus):
        lock = directory / f"{index}.lock"
        owner = lock.read_text().strip() if lock.exists() else "?"
        held.append(f"slot {index} (GPU {gpu}): pid {owner or '?'}")
    return "; ".join(held)


# The slot this process holds, and the descriptor that holds its lock (one per process).
_held: tuple[Slot, int] | None = None


def claim(gpus: list[str], directory: Path, timeout: float | None = None) -> Slot:
    """Claim the first free slot of `gpus` in `directory`, waiting while all are taken.

    timeout: seconds to wait at most (None: as long as it takes); past it, a RuntimeError names
    the holders. The slot is this process's until `release()` or its exit.
    """
    global _held
    if not gpus:
        raise ValueError("no GPU to claim a slot of: the list of visible GPUs is empty")
    if _held is not None:
        return _held[0]
    directory.mkdir(parents=True, exist_ok=True)
    started, said = time.monotonic(), False
    while True:
        for index, gpu in enumerate(gpus):
            fd = _try_lock(directory / f"{index}.lock")
            if fd is not None:
                _held = (Slot(index, gpu, directory / f"{index}.lock"), fd)
                return _held[0]
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise RuntimeError(
                f"all {len(gpus)} GPU slots in {directory} stayed taken for {waited:.0f} s "
                f"({_holders(directory, gpus)}): wait for those jobs, or run fewer GPU jobs at once "
                "(--resources gpu=N)"
            )
        if not said:
            log.info("all %d GPU slots are taken (%s); waiting for one", len(gpus), _holders(directory, gpus))
            said = True
        time.sleep(POLL_SECONDS)


def release() -> None:
    """Give the slot this process holds back (nothing if it holds none). Not needed at exit: the
    kernel drops a dead process's flock."""
    global _held
    if _held is None:
        return
    slot, fd = _held
    _held = None
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    log.info("GPU slot %d (GPU %s) released", slot.index, slot.gpu)


def held() -> Slot | None:
    """The slot this process holds, if any."""
    return None if _held is None else _held[0]


def should_claim(gpus: list[str], environ: Mapping[str, str] | None = None) -> bool:
    """Whether a job spreads over `gpus` by a slot: some GPU is visible, flock exists, and SLURM
    did not already give the job its one GPU (SLURM_JOB_ID set and at most one GPU visible)."""
    environ = os.environ if environ is None else environ
    if not gpus or fcntl is None:
        return False
    return not ("SLURM_JOB_ID" in environ and len(gpus) <= 1)


def claim_for_job(count: Callable[[], int] = nvidia_smi_count, timeout: float | None = None) -> Slot | None:
    """Claim this job's GPU slot and make that GPU the only one CUDA shows it; None where no slot
    is claimed (no GPU, or SLURM chose the GPU: should_claim).

    Call before CUDA is initialised in this process (cuInit reads CUDA_VISIBLE_DEVICES once):
    core.device.pick_device does, and checks afterwards that the setting took.
    """
    if _held is not None:
        return _held[0]
    gpus = visible_gpus(count=count)
    if not should_claim(gpus):
        return None
    slot = claim(gpus, slots_dir(), timeout=timeout)
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    log.info("GPU slot %d of %d: GPU %s (CUDA_VISIBLE_DEVICES=%s)", slot.index, len(gpus), slot.gpu, slot.gpu)
    return slot


@contextlib.contextmanager
def gpu_slot(gpus: list[str], directory: Path, timeout: float | None = None) -> Iterator[Slot]:
    """A slot of `gpus` held for the `with` block (claim, then release)."""
    slot = claim(gpus, directory, timeout=timeout)
    try:
        yield slot
    finally:
        release()
