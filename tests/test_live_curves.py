"""Live curves (cifarlab.training.live_curves): a training job writes its per-epoch scalars as
TensorBoard event files as it trains; the switch writes none; a folder it cannot write trains anyway."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT, lab_run

from cifarlab.core import paths
from cifarlab.training import loop as training
from cifarlab.training.live_curves import EVENT_FILE_PREFIX, IMAGES_PER_SECOND, SCALARS

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

# 2 epochs on 400 images with 100 held out: the validation curve is there too.
RUN = lab_run(epochs=2, batch_size=64, optimizer="adam", lr=3e-3, train_subset=400, validation=100,
              test_subset=200)  # fmt: skip


def train(files: dict, folder: Path, tensorboard: Path | None) -> dict:
    return training.main(
        train_path=files["train"], test_path=files["test"], model_path=folder / "model.pt",
        history_path=folder / "history.csv", run=RUN, device="cpu", threads=1, precision="fp32",
        tensorboard=tensorboard,
    )  # fmt: skip


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] as TensorBoard reads the folder."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_event_files_hold_the_history(synthetic_files, tmp_path):
    curves = tmp_path / paths.fill(paths.TENSORBOARD, dataset="d", run="r", seed=0)
    result = train(synthetic_files, tmp_path, curves)
    scalars = read_scalars(curves)
    assert set(scalars) == {*SCALARS, IMAGES_PER_SECOND}
    for tag, key in SCALARS.items():
        expected = [(row["epoch"], row[key]) for row in result["history"]]
        # event files store float32
        assert [s for s, _ in scalars[tag]] == [s for s, _ in expected], tag
        for (_, got), (_, want) in zip(scalars[tag], expected, strict=True):
            assert got == pytest.approx(want, rel=1e-6), tag
    speeds = [row["images"] / row["seconds"] for row in result["history"]]
    assert [v for _, v in scalars[IMAGES_PER_SECOND]] == pytest.approx(speeds, rel=1e-6)
    assert all(math.isfinite(v) for _, v in scalars["accuracy/validation"])

    # A new training of the run replaces the earlier one's curves (no mixed points).
    train(synthetic_files, tmp_path, curves)
    assert len(list(curves.glob(EVENT_FILE_PREFIX + "*"))) == 1
    assert [s for s, _ in read_scalars(curves)["loss/train"]] == [1, 2]


def test_switched_off_writes_none(synthetic_files, tmp_path):
    train(synthetic_files, tmp_path, None)
    assert not list(tmp_path.rglob(EVENT_FILE_PREFIX + "*"))
    assert (tmp_path / "model.pt").exists()


def test_a_folder_it_cannot_write_still_trains(synthetic_files, tmp_path, caplog):
    blocked = tmp_path / "a_file"  # a file where a folder should be: not writable, even for root
    blocked.write_text("")
    with caplog.at_level(logging.WARNING, logger="cifarlab.training.live_curves"):
        result = train(synthetic_files, tmp_path, blocked / "tensorboard")
    warnings = [r for r in caplog.records if r.name == "cifarlab.training.live_curves"]
    assert len(warnings) == 1 and "no live curves" in warnings[0].getMessage()
    assert len(result["history"]) == RUN["epochs"]
    assert torch.load(tmp_path / "model.pt", weights_only=False)["status"] == "ok"


def test_without_tensorboard_it_still_trains(synthetic_files, tmp_path, caplog, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    with caplog.at_level(logging.WARNING, logger="cifarlab.training.live_curves"):
        result = train(synthetic_files, tmp_path, tmp_path / "tensorboard")
    assert sum(r.name == "cifarlab.training.live_curves" for r in caplog.records) == 1
    assert len(result["history"]) == RUN["epochs"]
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.slow
def test_switching_them_off_or_on_retrains_nothing(tmp_path):
    """The switch is read by scripts/train.py from the config, not a param of the train rule:
    on a finished demo study, a dry run with `tensorboard=false` (or true) plans no job."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dry_run import finished_study, snakemake

    project = tmp_path / "project"
    project.mkdir()
    finished_study(ROOT, project, ["config/demo.yaml"], [])
    for value in ("false", "true"):
        args = [
            "-n",
            "--cores",
            "1",
            "report",
            "--configfile",
            "config/demo.yaml",
            "--config",
            f"tensorboard={value}",
        ]
        done = snakemake(ROOT, project, args)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Nothing to be done" in done.stdout + done.stderr, value
