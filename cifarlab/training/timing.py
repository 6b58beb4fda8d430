"""Timing of a run's parts as airbench94 times them: device time, warm-up excluded.

On CUDA the marks are CUDA events (torch.cuda.Event), recorded into the stream without waiting
for the GPU and read once the epoch has been synchronised; elsewhere a mark is time.perf_counter
after synchronising the device (a no-op on the CPU, which runs each op as Python calls it).
The figures go into model.pt's `timing` (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

from cifarlab.core.device import synchronize

# Steps at the start of a process's training that are not timed: the first steps pay one-off costs
# (cuDNN's autotuning, allocator growth, the optimizer's state) that airbench94 leaves out by
# timing only after a warm-up run. A step of a batch size not seen before is left out too (cuDNN
# autotunes once per shape, e.g. the short last batch of an epoch).
WARMUP_STEPS = 2


class Mark:
    """A point in the device's work: a recorded CUDA event, or the clock after synchronising."""

    def __init__(self, device: torch.device):
        if device.type == "cuda":
            self.event = torch.cuda.Event(enable_timing=True)
            self.event.record(torch.cuda.current_stream(device))  # the run's GPU, not GPU 0
        else:
            synchronize(device)
            self.event = time.perf_counter()

    def seconds_to(self, later: Mark) -> float:
        """Seconds from this mark to `later` (for CUDA events, once both have completed)."""
        if isinstance(self.event, float):
            return later.event - self.event
        return self.event.elapsed_time(later.event) / 1000.0  # elapsed_time is in ms


@contextlib.contextmanager
def device_seconds(device: torch.device, into: dict, key: str) -> Iterator[None]:
    """Add the seconds of device work of the block to into[key] (waits for the device at the end)."""
    start = Mark(device)
    yield
    end = Mark(device)
    if device.type == "cuda":
        end.event.synchronize()
    into[key] = into.get(key, 0.0) + start.seconds_to(end)


class StepClock:
    """Device seconds of the training steps of this process, warm-up steps excluded.

    Call `before_step(batch_size)` before each step and `end_epoch()` after the epoch's last
    (once the device is synchronised); `take()` returns and resets what was measured since.
    """

    def __init__(self, device: torch.device, warmup_steps: int = WARMUP_STEPS):
        self.device = device
        self.warmup_left = warmup_steps
        self.batch_sizes: set[int] = set()
        self.segments: list[tuple[Mark, Mark]] = []
        self.open: Mark | None = None
        self.excluded = 0
        self.images = 0

    def before_step(self, batch_size: int) -> None:
        """Note the next step: timed, or a warm-up step (then the timed span so far ends here)."""
        if self.warmup_left > 0 or batch_size not in self.batch_sizes:
            self._close()
            self.warmup_left = max(0, self.warmup_left - 1)
            self.batch_sizes.add(batch_size)
            self.excluded += 1
            return
        if self.open is None:
            self.open = Mark(self.device)
        self.images += batch_size

    def _close(self) -> None:
        if self.open is not None:
            self.segments.append((self.open, Mark(self.device)))
            self.open = None

    def end_epoch(self) -> None:
        """Close the epoch's timed span (before the validation and test passes)."""
        self._close()

    def take(self) -> dict:
        """{"train_s", "timed_images", "warmup_excluded_steps"} since the last take; call it after
        synchronising the device (CUDA events must have completed)."""
        seconds = sum(start.seconds_to(end) for start, end in self.segments)
        taken = {"train_s": seconds, "timed_images": self.images, "warmup_excluded_steps": self.excluded}
        self.segments, self.images, self.excluded = [], 0, 0
        return taken
