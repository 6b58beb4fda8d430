"""Progress lines: one concise line per step of a long job, for the terminal and the job's log.

The lines go to the `cifarlab.core.progress` logger; `cifarlab.core.logs.log_to` sends that logger to the
terminal (the job's stderr, which Snakemake passes through, and which is the job's log under
SLURM) as well as to the rule's log file. They are whole lines, never carriage-return bars, so
that they stay readable when several jobs print side by side or stderr is a file.

`cifarlab.study.status` reads the epoch lines back from the logs: `epoch_line` and `parse_epoch_line`
are the one definition of their format. No torch here (the status command must not need it).
"""

from __future__ import annotations

import logging
import math
import re
import time

log = logging.getLogger("cifarlab.core.progress")


def duration(seconds: float, *, exact: bool = False) -> str:
    """A duration for people, '?' when not finite. Rough (an estimate, a time left): '42 s',
    '3.5 min', '2.1 h'; `exact` (a measured time, as the report's tables show it): '12.3 s',
    '4 min 05 s', '2 h 03 min'."""
    if not math.isfinite(seconds):
        return "?"
    if exact:
        if seconds < 60:
            return f"{seconds:.1f} s"
        minutes, secs = divmod(int(round(seconds)), 60)
        if minutes < 60:
            return f"{minutes} min {secs:02d} s"
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes:02d} min"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def epoch_line(
    run: str, epoch: int, epochs: int, train_loss: float, test_accuracy: float, seconds_per_epoch: float
) -> str:
    """`train <run> epoch k/n | loss L | test acc A % | S s/epoch | ~T left` (T: the run's epochs left
    at the mean seconds per epoch so far)."""
    left = (epochs - epoch) * seconds_per_epoch
    return (
        f"train {run} epoch {epoch}/{epochs} | loss {train_loss:.4f} | test acc {test_accuracy:.2f} % | "
        f"{seconds_per_epoch:.1f} s/epoch | ~{duration(left)} left"
    )


EPOCH_LINE = re.compile(
    r"train (?P<run>\S+) epoch (?P<epoch>\d+)/(?P<epochs>\d+) \| loss (?P<loss>\S+) \| "
    r"test acc (?P<accuracy>\S+) % \| (?P<seconds_per_epoch>[\d.]+) s/epoch"
)


def parse_epoch_line(line: str) -> dict | None:
    """{"run", "epoch", "epochs", "loss", "accuracy", "seconds_per_epoch"} of an epoch line, else None."""
    match = EPOCH_LINE.search(line)
    if match is None:
        return None
    found = match.groupdict()
    return {
        "run": found["run"],
        "epoch": int(found["epoch"]),
        "epochs": int(found["epochs"]),
        "loss": float(found["loss"]),
        "accuracy": float(found["accuracy"]),
        "seconds_per_epoch": float(found["seconds_per_epoch"]),
    }


class Steps:
    """Reports `done/total <unit>` of a job with its time left, at most every `every` seconds
    (and always at the last step), so that a long loop prints a few lines, not thousands.

    `name`: what the line starts with, e.g. 'lr_find vit' or 'features vgg16 train'.
    """

    def __init__(self, name: str, total: int, unit: str, every: float = 30.0) -> None:
        self.name, self.total, self.unit, self.every = name, total, unit, every
        self.started = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        """`done` of `total` steps are made: print a line if `every` seconds passed or all are done."""
        now = time.perf_counter()
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        left = (self.total - done) * (now - self.started) / max(done, 1)
        log.info("%s %d/%d %s | ~%s left", self.name, done, self.total, self.unit, duration(left))
