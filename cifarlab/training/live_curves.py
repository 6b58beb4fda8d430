"""Live curves: a training job's per-epoch scalars as TensorBoard event files, written as it trains.

`tensorboard --logdir results` then shows every dataset, run and seed while the study runs (the
event files are under each trained model's folder: cifarlab.core.paths.TENSORBOARD). One point per
epoch and tag, at step = the epoch (1-based):

    loss/{train,validation,test}       mean cross-entropy (nats)
    accuracy/{train,validation,test}   % of the images
    lr                                 the learning rate at the epoch's last step (optimizer units)
    images_per_second                  training images per second of the epoch's training time

A value not measured (no validation split, a diverged epoch's test pass) is left out, not written
as NaN. The curves can never stop a training: where they cannot be written (tensorboard not
installed, a folder that cannot be written) the job logs one warning and trains on without them.
They change no result, so the config switch that turns them off (`tensorboard: false`) retrains
nothing (scripts/train.py reads it from the config, not as a rule param).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# TensorBoard tag -> the key of the epoch's history row (cifarlab.training.loop._history_row).
SCALARS = {
    "loss/train": "train_loss",
    "loss/validation": "val_loss",
    "loss/test": "test_loss",
    "accuracy/train": "train_accuracy",
    "accuracy/validation": "val_accuracy",
    "accuracy/test": "test_accuracy",
    "lr": "lr",
}
IMAGES_PER_SECOND = "images_per_second"
# TensorBoard's event files start with this (a new training removes the earlier training's).
EVENT_FILE_PREFIX = "events.out.tfevents."

# What train_run calls after each epoch: (the epoch's history row, the model being trained).
EpochHook = Callable[[dict, Any], None]


def epoch_scalars(row: dict) -> dict[str, float]:
    """TensorBoard tag -> value of one epoch's history row; values not measured (NaN) left out."""
    values = {tag: float(row[key]) for tag, key in SCALARS.items() if key in row}
    seconds, images = row.get("seconds"), row.get("images")
    if seconds and images:
        values[IMAGES_PER_SECOND] = images / seconds
    return {tag: value for tag, value in values.items() if not math.isnan(value)}


class LiveCurves:
    """The epoch hook that writes one folder's event files; opened at the first epoch it sees, so
    that a resumed job purges the points of epochs it trains again (SummaryWriter's purge_step)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.writer = None  # torch.utils.tensorboard.SummaryWriter, once opened
        self.failed = False

    def __call__(self, row: dict, model: Any = None) -> None:
        """Write the epoch `row` (a history row, cifarlab.training.loop) at step row["epoch"]."""
        if self.failed:
            return
        try:
            if self.writer is None:
                self.writer = self._open(int(row["epoch"]))
            for tag, value in epoch_scalars(row).items():
                self.writer.add_scalar(tag, value, global_step=int(row["epoch"]))
            self.writer.flush()  # on disk now: TensorBoard shows the epoch while the next one trains
        except Exception as error:  # noqa: BLE001 - the curves are optional: training goes on
            self._give_up(error)

    def _open(self, first_epoch: int):
        """A SummaryWriter on the folder. A training from epoch 1 is a new one: the event files of an
        earlier training of this run are removed, so its curves do not mix with this one's."""
        from torch.utils.tensorboard import SummaryWriter

        if first_epoch == 1 and self.folder.is_dir():
            for old in self.folder.glob(EVENT_FILE_PREFIX + "*"):
                old.unlink()
        # purge_step: TensorBoard hides the points from this epoch on that an interrupted job wrote
        return SummaryWriter(str(self.folder), purge_step=first_epoch)

    def _give_up(self, error: BaseException) -> None:
        self.failed = True
        log.warning(
            "no live curves for this run: cannot write TensorBoard event files in %s (%s: %s); "
            "training goes on without them (install tensorboard, or make the folder writable)",
            self.folder, type(error).__name__, error,
        )  # fmt: skip

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception as error:  # noqa: BLE001 - as in __call__
                if not self.failed:
                    self._give_up(error)


@contextmanager
def live_curves(folder: str | Path | None) -> Iterator[EpochHook | None]:
    """The epoch hook writing `folder`'s event files, closed on exit; None when folder is None (off)
    or tensorboard is not installed (one warning)."""
    if folder is None:
        yield None
        return
    try:
        import torch.utils.tensorboard  # noqa: F401 - it imports tensorboard, which may be missing
    except ImportError as error:
        log.warning(
            "no live curves for this run: %s; training goes on without them "
            "(pip install tensorboard, or set tensorboard: false in the config to silence this)",
            error,
        )
        yield None
        return
    curves = LiveCurves(folder)
    try:
        yield curves
    finally:
        curves.close()
