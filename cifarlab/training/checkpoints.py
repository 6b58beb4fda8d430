"""Stopping and resuming: stop requests (SIGTERM, SIGINT, the parent's exit), the RNG states and the
resume checkpoint, matched to its run by a fingerprint of the settings, lr and data.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from cifarlab.core.files import DamagedFileError, load_torch
from cifarlab.core.hashing import settings_hash

log = logging.getLogger(__name__)


# Seconds between checks that the parent (Snakemake) still lives: after a `kill -9` of it, the
# training process would otherwise run on alone, holding the CPU or GPU and the lock's outputs.
PARENT_CHECK_S = 5.0


class TrainingInterrupted(RuntimeError):
    """A stop signal (SIGTERM, SIGINT) arrived; the checkpoint was saved and a rerun resumes."""


@contextlib.contextmanager
def stop_requests() -> Iterator[list]:
    """A list that receives the name of SIGTERM/SIGINT when one arrives (truthy = stop asked).

    SLURM sends SIGTERM at its time limit and waits before killing; the loop finishes the current
    step, saves a checkpoint and exits non-zero, so that Snakemake reruns (and resumes) the job.
    """
    received: list[str] = []
    done = threading.Event()
    threading.Thread(target=_watch_parent, args=(received, done), daemon=True).start()
    if threading.current_thread() is not threading.main_thread():
        try:
            yield received  # signal handlers can only be set from the main thread
        finally:
            done.set()
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        log.warning("received %s: stopping after this step and saving the checkpoint", name)
        received.append(name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        done.set()
        for s, h in previous.items():
            signal.signal(s, h)


def _watch_parent(received: list, done: threading.Event) -> None:
    """Ask the loop to stop (as a signal would) when this process's parent dies (it is re-parented)."""
    parent = os.getppid()
    while not done.wait(PARENT_CHECK_S):
        if os.getppid() != parent:
            log.warning(
                "the parent process %d exited: stopping after this step and saving the checkpoint", parent
            )
            received.append(f"exit of the parent process {parent}")
            return


def resume_hint(checkpoint: str | Path | None) -> str:
    """What an interrupted run tells its user: where it was saved, or that it was not."""
    if checkpoint is None:
        return "no checkpoint path was given, so nothing was saved; the next run starts over"
    return f"checkpoint saved to {checkpoint}; rerun to resume"


def rng_states(device: torch.device) -> dict:
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        states["mps"] = torch.mps.get_rng_state()
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)
    if "mps" in states and device.type == "mps":
        torch.mps.set_rng_state(states["mps"])


def run_fingerprint(run: dict, lr: float, cached_features: bool, train: dict, test: dict) -> str:
    """What a checkpoint must match to be resumed: the settings, the lr and the data's identity."""
    labels = hashlib.sha256(train["labels"].cpu().numpy().tobytes() + test["labels"].cpu().numpy().tobytes())
    return settings_hash(
        {
            "run": run,
            "lr": lr,
            "cached_features": cached_features,
            "labels": labels.hexdigest(),
            "mean": train["mean"].tolist(),
            "std": train["std"].tolist(),
        }
    )


def load_checkpoint(path: str | Path | None, fingerprint: str) -> dict | None:
    """The checkpoint at `path` if it belongs to this exact run, else None (a stale one is ignored)."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = load_torch(path)
    except DamagedFileError as error:  # a truncated file from a crash of torch.save itself: start again
        log.warning("ignoring unreadable checkpoint %s (%s); training from the start", path, error)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to other settings or data; starting again", path)
        return None
    return state
