"""End to end through Snakemake: `download` + `prepare` of each kind of source, and their failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_data import _Server, closed_port_url, make_cifar_python, make_image_folder, zip_folder

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

    record = json.loads((workdir / "resources/cifar-10-python/cifar-10-python.tar.gz.json").read_text())
    assert record["source"] == archive.as_uri() and record["bytes"] == archive.stat().st_size
    train, test = torch.load(workdir / data / "train.pt"), torch.load(workdir / data / "test.pt")
    assert torch.equal(train["images"], torch.from_numpy(truth["train_images"]))
    assert torch.equal(test["images"], torch.from_numpy(truth["test_images"]))
    assert train["labels"].tolist() == truth["train_labels"].tolist()
    assert test["labels"].tolist() == truth["test_labels"].tolist()
    assert train["classes"] == test["classes"] and len(train["classes"]) == 10
    torch.testing.assert_close(train["mean"], (train["images"].float() / 255).mean(dim=(0, 2, 3)))
    assert train["source"] == archive.as_uri()
    assert (workdir / "results/figures/cifar-10-python/samples.png").stat().st_size > 0
    assert (workdir / "logs/prepare/cifar-10-python.log").exists()


def snakemake(workdir: Path, source: str, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on `args` (targets, flags) in `workdir`, with `--config data_source=source` last."""
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(ROOT / "config" / "config.yaml"),
        "--cores", "1",
        *args,
        "--config", f"data_source={source}",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def planned(done: subprocess.CompletedProcess) -> set[str]:
    """The rules a dry run would run ("localrule download:" / "rule prepare:" lines)."""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    return {line.split()[-1].rstrip(":") for line in lines if line.startswith(("rule ", "localrule "))}


@pytest.mark.slow
def test_local_folder_is_known_by_its_content(tmp_path):
    """A non-ASCII folder name works; fixing, touching or adding images is seen by its content."""
    folder = make_image_folder(tmp_path / "données")
    broken = folder / "train" / "dog" / "broken.png"
    broken.write_bytes(b"no image")
    workdir, target = tmp_path / "work", "results/data/donnees/train.pt"
    source = str(folder)

    failed = snakemake(workdir, source, target)
    assert failed.returncode != 0
    assert f"cannot read image {broken}" in failed.stderr, failed.stderr[-3000:]
    assert "donnees.tar:" not in failed.stderr and "Traceback" not in failed.stderr

    broken.unlink()  # what the message advises
    assert planned(snakemake(workdir, source, target, "-n")) == {"download", "prepare"}
    done = snakemake(workdir, source, target)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(workdir / target)["images"].shape[0] == 9
    assert planned(snakemake(workdir, source, target, "-n")) == set()

    for path in folder.rglob("*.png"):  # same content, new mtimes: nothing to redo
        path.touch()
    assert planned(snakemake(workdir, source, target, "-n")) == set()

    shutil.copy(folder / "train" / "cat" / "000.png", folder / "train" / "cat" / "new.png")
    assert planned(snakemake(workdir, source, target, "-n")) == {"download", "prepare"}
    assert snakemake(workdir, source, target).returncode == 0
    assert torch.load(workdir / target)["images"].shape[0] == 10


@pytest.mark.slow
def test_replaced_archive_is_read_again(tmp_path):
    good = zip_folder(make_image_folder(tmp_path / "images"), tmp_path / "good.zip")
    archive = tmp_path / "mine.zip"
    archive.write_bytes(good.read_bytes()[:-40])  # truncated in transfer
    workdir, target, source = tmp_path / "work", "results/data/mine/train.pt", str(archive)
    failed = snakemake(workdir, source, target)
    assert failed.returncode != 0 and f"{archive} is incomplete or damaged" in failed.stderr
    shutil.copy(good, archive)
    assert planned(snakemake(workdir, source, target, "-n")) == {"download", "prepare"}
    assert snakemake(workdir, source, target).returncode == 0


@pytest.mark.slow
def test_the_same_bytes_under_another_path_rerun_nothing(tmp_path):
    """Data is known by its content: another folder, a symbolic link, a file:// URL or a touch
    of the same bytes plans nothing (the dataset's name, from the file name, stays `mine`); new
    bytes under the same path rerun download and prepare."""
    (tmp_path / "a").mkdir()
    first = zip_folder(make_image_folder(tmp_path / "images"), tmp_path / "a" / "mine.zip")
    workdir, target = tmp_path / "work", "results/data/mine/train.pt"
    assert snakemake(workdir, str(first), target).returncode == 0
    assert planned(snakemake(workdir, str(first), target, "-n")) == set()
    moved = tmp_path / "b" / "mine.zip"
    moved.parent.mkdir()
    shutil.copy(first, moved)
    linked = tmp_path / "c" / "mine.zip"
    linked.parent.mkdir()
    linked.symlink_to(first)
    for source in (moved, linked, moved.as_uri()):
        assert planned(snakemake(workdir, str(source), target, "-n")) == set(), source
    first.touch()
    assert planned(snakemake(workdir, str(first), target, "-n")) == set()
    shutil.copy(folder_zip(tmp_path), moved)  # other images under the new path
    assert planned(snakemake(workdir, str(moved), target, "-n")) == {"download", "prepare"}


def folder_zip(tmp_path: Path) -> Path:
    """A zip of an image folder with one more image than make_image_folder's."""
    folder = make_image_folder(tmp_path / "more")
    shutil.copy(folder / "train" / "cat" / "000.png", folder / "train" / "cat" / "extra.png")
    return zip_folder(folder, tmp_path / "more.zip")


@pytest.mark.slow
def test_download_failures_are_not_multiplied_by_snakemake(tmp_path):
    """404 and a closed port fail at once, even under --retries: no traceback, the way forward."""
    target = "resources/cifar-10-python/cifar-10-python.tar.gz"
    with _Server(b"", status=404) as server:
        done = snakemake(tmp_path / "a", server.url, "--retries", "2", target)
        assert done.returncode != 0 and "HTTP 404" in done.stderr
        assert server.requests == 1
    url = closed_port_url()
    started = time.monotonic()
    done = snakemake(tmp_path / "b", url, "--retries", "2", target)
    assert done.returncode != 0 and time.monotonic() - started < 45
    assert "Traceback" not in done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("DownloadError:"))
    assert url in line and "offline" in line and "--config data_source=" in line, done.stderr[-3000:]
    log = (
        (tmp_path / "b" / "logs/download/cifar-10-python/cifar-10-python.tar.gz.log").read_text().splitlines()
    )
    assert len(log) == 1 and url in log[0] and "offline" in log[0]  # one attempt, one line


@pytest.mark.slow
def test_a_damaged_prepared_tensor_is_reported_once_in_our_words(tmp_path):
    """A prepared tensor cut short: the train job's failure names the file, what it is and the fix,
    once in the terminal and without torch's text; the job's log keeps torch's detail."""
    archive = zip_folder(make_image_folder(tmp_path / "images"), tmp_path / "mine.zip")
    workdir, data = tmp_path / "work", "results/data/mine"
    assert snakemake(workdir, str(archive), f"{data}/train.pt", f"{data}/test.pt").returncode == 0
    prepared = workdir / data / "train.pt"
    prepared.write_bytes(prepared.read_bytes()[: prepared.stat().st_size // 2])  # a copy cut short

    failed = snakemake(workdir, str(archive), "results/mine/runs/simple_cnn-sgd/seed0/model.pt")
    terminal = failed.stdout + failed.stderr
    assert failed.returncode != 0
    message = f"{data}/train.pt (prepared data) is incomplete or damaged"
    assert terminal.count(message) == 1, terminal[-4000:]
    assert "delete it and rerun" in terminal and "logs/train/mine/simple_cnn-sgd/seed0.log" in terminal
    for torch_text in ("high likelihood", "checkpoint file", "PytorchStreamReader", "Traceback"):
        assert torch_text not in terminal
    log = (workdir / "logs/train/mine/simple_cnn-sgd/seed0.log").read_text()
    assert message in log and f"torch could not read {data}/train.pt" in log
