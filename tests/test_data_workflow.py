"""End to end: `download` + `prepare` through Snakemake on an official-layout archive from a file:// URL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_data import make_cifar_python

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_download_and_prepare_through_snakemake(tmp_path):
    archive = tmp_path / "source" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    truth = make_cifar_python(archive, per_batch=6)
    workdir = tmp_path / "work"  # a fresh project directory: nothing of the repository's results/
    data = "results/data/cifar-10-python"
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(ROOT / "config" / "config.yaml"),
        "--config", f"data_source={archive.as_uri()}",
        "--cores", "2",
        f"{data}/train.pt", f"{data}/test.pt",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    record = json.loads((workdir / "resources/cifar-10-python/source.json").read_text())
    assert record["source"] == archive.as_uri() and record["bytes"] == archive.stat().st_size
    train, test = torch.load(workdir / data / "train.pt"), torch.load(workdir / data / "test.pt")
    assert torch.equal(train["images"], torch.from_numpy(truth["train_images"]))
    assert torch.equal(test["images"], torch.from_numpy(truth["test_images"]))
    assert train["labels"].tolist() == truth["train_labels"].tolist()
    assert test["labels"].tolist() == truth["test_labels"].tolist()
    assert train["classes"] == test["classes"] and len(train["classes"]) == 10
    torch.testing.assert_close(train["mean"], (train["images"].float() / 255).mean(dim=(0, 2, 3)))
    assert train["source"] == archive.as_uri()
    assert (workdir / "results/figures/data/cifar-10-python-samples.png").stat().st_size > 0
    assert (workdir / "logs/prepare/cifar-10-python.log").exists()
