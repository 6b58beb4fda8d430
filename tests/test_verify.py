"""`python -m cifarlab verify` (cifarlab.analysis.verify): a small run, trained and evaluated as the
study does it, retrains bit for bit (whole and its first epoch), and a record with a changed
setting is reported as not reproduced, naming the setting."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, lab_run

from cifarlab.analysis import verify
from cifarlab.core import paths
from cifarlab.core.code_version import code_digest, code_digest_of_modules
from cifarlab.core.environment import environment
from cifarlab.models import model_spec
from cifarlab.training import evaluate as evaluation
from cifarlab.training import loop as training

DATASET, SEED = "synth", 0
RUN = lab_run(name="tiny", epochs=2, batch_size=64, optimizer="adam", lr=3e-3, train_subset=400,
              test_subset=200, seed=SEED, dataset=DATASET)  # fmt: skip
LABEL = f"{DATASET}/tiny/seed{SEED}"


def fill(pattern: str) -> str:
    return paths.fill(pattern, dataset=DATASET, run="tiny", seed=SEED)


@pytest.fixture(scope="module")
def project(tmp_path_factory, synthetic_files) -> Path:
    """A project folder holding one trained and evaluated model, as the train and evaluate steps
    write them (model.pt records its code digests and inputs, as scripts/train.py gives them)."""
    root = tmp_path_factory.mktemp("project")
    inputs = {"train": paths.fill(paths.TRAIN_DATA, dataset=DATASET),
              "test": paths.fill(paths.TEST_DATA, dataset=DATASET)}  # fmt: skip
    for split, relative in inputs.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synthetic_files[split], root / relative)
    record = {
        "code_digest": code_digest(ROOT / "scripts" / "train.py"),
        "model_code": code_digest_of_modules([model_spec("simple_cnn").module]),
        "inputs": inputs,
    }
    training.main(
        train_path=root / inputs["train"], test_path=root / inputs["test"],
        model_path=root / fill(paths.MODEL), history_path=root / fill(paths.HISTORY), run=RUN,
        device="cpu", threads=1, precision="fp32", record=record,
    )  # fmt: skip
    evaluation.main(
        model_path=root / fill(paths.MODEL), history_path=root / fill(paths.HISTORY),
        test_path=root / inputs["test"], metrics_path=root / fill(paths.METRICS), dataset=DATASET,
        seed=SEED, device="cpu", threads=1, precision="fp32",
    )  # fmt: skip
    return root


def run_verify(root: Path, *args: str, capsys) -> tuple[int, str]:
    code = verify.main([LABEL, "--directory", str(root), "--device", "cpu", *args])
    return code, capsys.readouterr().out


def test_a_run_reproduces_bit_for_bit(project, capsys):
    code, out = run_verify(project, capsys=capsys)
    assert code == 0, out
    assert "retrained 2 of 2 epochs" in out
    assert "reproduced bit for bit: the history of 2 epoch(s) and the weights" in out
    assert "settings, code and environment as recorded" in out


def test_its_first_epoch_reproduces(project, capsys, tmp_path):
    code, out = run_verify(project, "--epochs", "1", "--scratch", str(tmp_path), capsys=capsys)
    assert code == 0, out
    assert "retrained 1 of 2 epochs" in out and "reproduced bit for bit: the history of 1 epoch(s)\n" in out
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 2  # header and epoch 1


def test_a_changed_setting_is_not_reproduced(project, tmp_path, capsys):
    changed = tmp_path / "changed"
    shutil.copytree(project, changed)
    model = changed / fill(paths.MODEL)
    saved = torch.load(model, weights_only=False)
    saved["run"]["batch_size"] = 32  # the record says it trained at 32: it did at 64
    torch.save(saved, model)
    code, out = run_verify(changed, capsys=capsys)
    assert code == 1, out
    assert "not reproduced: accuracies differ by up to" in out
    assert "- settings: batch_size: 32 in model.pt, 64 in metrics.json" in out


def test_changed_code_is_named(project):
    record, now = verify.read_record(LABEL, project), environment(diffs=None)
    assert verify.code_differences(record, now) == []
    record.saved["code_digest"] = "0" * 64
    record.saved["model_code"] = "1" * 64
    record.metrics["environment"]["diff_sha256"] = "2" * 64
    found = verify.code_differences(record, now)
    assert len(found) == 3, found
    assert (
        "training code" in found[0]
        and "model's code" in found[1]
        and f"diff results/diffs/{'2' * 64}.diff, now" in found[2]
    )


def test_the_kind_of_gpu_is_compared_not_which_one(project, monkeypatch):
    """A retraining on another GPU of the kind recorded is no difference, also against a model.pt
    written before the GPU's id had its own field ('cuda:<id> (<name>)'); another kind is one."""
    record, now = verify.read_record(LABEL, project), environment(diffs=None)
    monkeypatch.setattr(verify, "describe", lambda device: "cuda (NVIDIA H200)")  # retrained on a GPU
    for recorded in ("cuda (NVIDIA H200)", "cuda:3 (NVIDIA H200)", "cuda:GPU-ab (NVIDIA H200)"):
        record.saved.update(device=recorded, gpu_id="5")
        found = verify.environment_differences(record, torch.device("cpu"), now)
        assert not [f for f in found if "device" in f], found
    record.saved["device"] = "cuda:3 (NVIDIA A100)"
    found = verify.environment_differences(record, torch.device("cpu"), now)
    assert "device: trained on cuda (NVIDIA A100), retrained on cuda (NVIDIA H200)" in found, found


def test_without_the_train_script_the_training_code_is_said_not_compared(project, monkeypatch, tmp_path):
    record, now = verify.read_record(LABEL, project), environment(diffs=None)
    monkeypatch.setattr(verify, "TRAIN_SCRIPT", tmp_path / "scripts" / "train.py")  # an installed package
    assert verify.code_differences(record, now) == ["scripts/train.py not found: training code not compared"]


def test_a_diverged_history_reproduced_exactly_is_bit_for_bit(tmp_path):
    """history.csv holds `inf` of a diverged epoch, which read_history reads as NaN; the retraining's
    rows hold inf: the same numbers, so the same verdict as any exact reproduction."""
    rows = [
        {"epoch": 1, "train_loss": 2.3, "train_accuracy": 10.0, "val_loss": 2.2, "val_accuracy": 11.0,
         "test_loss": 2.2, "test_accuracy": 12.0, "lr": 0.5, "seconds": 1.0},
        {"epoch": 2, "train_loss": math.inf, "train_accuracy": 10.0, "val_loss": math.inf,
         "val_accuracy": 10.0, "test_loss": math.nan, "test_accuracy": 10.0, "lr": 0.5, "seconds": 1.0},
    ]  # fmt: skip
    training.write_history(rows, tmp_path / "history.csv")
    recorded = verify.read_history(tmp_path / "history.csv")
    assert math.isnan(recorded[1]["train_loss"])  # as read_history reads `inf`
    record = verify.Record(LABEL, tmp_path, {"status": "diverged", "model_state": {}}, recorded, None)
    comparison = verify.compare(record, verify.Retrained(rows, None, None, 0.0), 2)
    assert verify.verdict(comparison, 0.5) == (True, "reproduced bit for bit: the history of 2 epoch(s)")
    finite = [dict(rows[0]), {**rows[1], "train_loss": 2.3}]  # a number where the record diverged
    assert verify.compare(record, verify.Retrained(finite, None, None, 0.0), 2).gaps["train_loss"] == math.inf


def test_settings_are_set_against_the_config_when_given(project):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    del config["datasets"]
    config["dataset"] = {"name": DATASET, "source": "synthetic"}
    keys = ("model", "epochs", "optimizer", "lr", "train_subset", "test_subset")
    config["runs"]["tiny"] = {**{k: RUN[k] for k in keys}, "batch_size": 32}  # trained at 64
    found = verify.config_differences(verify.read_record(LABEL, project), config, project)
    assert "batch_size: 64 in model.pt, 32 in the config now" in found
    assert not any(line.startswith(("lr:", "epochs:", "optimizer:")) for line in found), found


def test_verdicts():
    zero = dict.fromkeys(verify.COMPARED, 0.0)
    same = verify.Comparison(2, zero, 0.0, [])
    bit_for_bit = "reproduced bit for bit: the history of 2 epoch(s) and the weights"
    assert verify.verdict(same, 0.5) == (True, bit_for_bit)
    close = verify.Comparison(2, {**zero, "test_accuracy": 0.2, "train_loss": 1e-4}, 3e-6, [])
    reproduced, line = verify.verdict(close, 0.5)
    assert reproduced
    assert line == (
        "reproduced within 0.2 accuracy points over 2 epoch(s) (largest differences: losses and lr 0.0001, "
        "weights 3e-06)"
    )
    assert not verify.verdict(verify.Comparison(2, {**zero, "test_accuracy": 0.6}, None, []), 0.5)[0]
    one_nan = verify.Comparison(2, {**zero, "val_accuracy": math.inf}, None, [])
    assert not verify.verdict(one_nan, 0.5)[0]
    diverged = verify.Comparison(2, zero, 0.0, ["status diverged, recorded ok"])
    assert verify.verdict(diverged, 0.5) == (
        False, "not reproduced: status diverged, recorded ok; accuracies differ by up to 0 points "
        "(tolerance 0.5; losses and lr 0, weights 0)",
    )  # fmt: skip


def test_the_command_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cifarlab", "verify", "nosuch/run/seed0", "--directory", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "results/nosuch/runs/run/seed0/model.pt does not exist: train the run first" in done.stderr
