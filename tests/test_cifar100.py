"""CIFAR-100 (issue 14): its official python archive through the same download -> prepare path as
CIFAR-10's, fine or coarse labels, a 100-class set trained end to end, and a source's sizes known
before anything is downloaded (cifarlab.data.sources.source_sizes)."""

from __future__ import annotations

import io
import pickle
import runpy
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, lab_run
from test_data import cifar_batch, make_cifar_python, make_image_folder, zip_folder

from cifarlab.data import fetch, sources
from cifarlab.data import prepare as data
from cifarlab.data.catalog import BUILTIN, study_datasets
from cifarlab.data.prepare import DataError
from cifarlab.training.loop import train_run

FINE_NAMES = [f"fine_{i:02d}" for i in range(100)]
COARSE_NAMES = [f"coarse_{i:02d}" for i in range(20)]


def cifar100_files(train: int = 200, test: int = 100, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """The pickles of a tiny CIFAR-100 python archive, as the official one has them (bytes keys and
    names, numpy 1's module names); and {split: {"images", "fine", "coarse"}} that they hold.

    Every fine class appears in both splits; fine class f is in superclass f // 5, as in CIFAR-100.
    """
    rng = np.random.default_rng(seed)
    files, truth = {}, {}
    for split, n in (("train", train), ("test", test)):
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        fine = rng.permutation(np.arange(n) % 100)
        coarse = fine // 5
        labels = {b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()}
        files[split] = cifar_batch(images, labels, split)
        truth[split] = {"images": images, "fine": fine, "coarse": coarse}
    meta = {
        b"fine_label_names": [n.encode() for n in FINE_NAMES],
        b"coarse_label_names": [n.encode() for n in COARSE_NAMES],
    }
    files["meta"] = pickle.dumps(meta, protocol=2)
    files["file.txt~"] = b"the official archive has this file too"
    return files, truth


def make_cifar100_python(target: Path, **sizes) -> dict:
    """A tiny `cifar-100-python.tar.gz` in the official layout; returns what it holds (cifar100_files)."""
    files, truth = cifar100_files(**sizes)
    with tarfile.open(target, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return truth


def download_and_prepare(source: str, tmp_path: Path, labels: str = "fine") -> tuple[dict, dict]:
    """The two functions the download and prepare rules call; returns the prepared train and test dicts."""
    resources, results = tmp_path / "resources", tmp_path / "results"
    archive = resources / sources.archive_name(source)
    fetch.download(source, archive, resources / "source.json")
    data.prepare(
        archive,
        results / "train.pt",
        results / "test.pt",
        results / "samples.png",
        source=source,
        labels=labels,
    )
    return torch.load(results / "train.pt"), torch.load(results / "test.pt")


# --- Reading the archive ------------------------------------------------------------------


@pytest.mark.parametrize(("labels", "names"), [("fine", FINE_NAMES), ("coarse", COARSE_NAMES)])
def test_cifar100_archive_from_a_file_url(tmp_path, labels, names):
    truth = make_cifar100_python(tmp_path / "cifar-100-python.tar.gz")
    source = (tmp_path / "cifar-100-python.tar.gz").as_uri()
    train, test = download_and_prepare(source, tmp_path, labels)
    for split, prepared in (("train", train), ("test", test)):
        assert torch.equal(prepared["images"], torch.from_numpy(truth[split]["images"]))
        assert prepared["labels"].tolist() == truth[split][labels].tolist()
        assert prepared["classes"] == names and prepared["source"] == source
    assert (tmp_path / "results" / "samples.png").stat().st_size > 0


def test_unpacked_cifar100_folder_is_packed_and_read(tmp_path):
    files, truth = cifar100_files(train=100, test=100)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    train, _ = download_and_prepare(str(folder), tmp_path, "coarse")
    assert train["labels"].tolist() == truth["train"]["coarse"].tolist() and len(train["classes"]) == 20


@pytest.mark.parametrize("kind", ["cifar10", "image folder"])
def test_coarse_labels_need_cifar100(tmp_path, kind):
    if kind == "cifar10":
        make_cifar_python(tmp_path / "cifar-10-python.tar.gz")
        source, what = str(tmp_path / "cifar-10-python.tar.gz"), "CIFAR-10 python archive"
    else:
        source, what = str(make_image_folder(tmp_path / "images")), "an image folder"
    with pytest.raises(DataError, match=rf"labels: coarse needs .*CIFAR-100.*{what}.*set labels: fine"):
        download_and_prepare(source, tmp_path, "coarse")


def test_cifar100_is_known_by_its_meta_file_beside_its_batches(tmp_path):
    """`meta` with `train` but no `test` is an incomplete CIFAR-100 archive; a stray file called
    `meta` in an image folder (a generic name) does not make it one."""
    files, _ = cifar100_files()
    with tarfile.open(tmp_path / "c.tar", "w") as tar:
        for name in ("meta", "train"):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    with pytest.raises(DataError, match=r"lacks \['test'\] of the CIFAR-100 python layout"):
        data.read_dataset(tmp_path / "c.tar", 32)
    folder = make_image_folder(tmp_path / "images")
    (folder / "meta").write_text("notes about these photos")
    classes, splits = data.read_dataset(folder, 32)
    assert classes == ["cat", "dog", "emu"] and len(splits["train"][1]) == 9


def test_labels_beyond_the_class_names_are_refused(tmp_path):
    files, _ = cifar100_files()
    meta = pickle.loads(files["meta"])
    meta[b"fine_label_names"] = meta[b"fine_label_names"][:50]
    files["meta"] = pickle.dumps(meta, protocol=2)
    with tarfile.open(tmp_path / "c.tar", "w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with pytest.raises(
        DataError, match=r"fine_labels run from 0 to 99, but fine_label_names names 50 classes"
    ):
        data.read_dataset(tmp_path / "c.tar", 32)


# --- The rules' scripts take one dataset's settings -------------------------------------------


def run_script(name: str, **snakemake) -> None:
    """Run scripts/<name> as Snakemake's `script:` does: with a `snakemake` object in its globals."""
    runpy.run_path(str(ROOT / "scripts" / name), init_globals={"snakemake": SimpleNamespace(**snakemake)})


def test_download_and_prepare_scripts_take_the_dataset_settings(tmp_path):
    make_cifar100_python(tmp_path / "cifar-100-python.tar.gz")
    source = (tmp_path / "cifar-100-python.tar.gz").as_uri()
    config = {"datasets": [{"name": "c100", "source": source, "labels": "coarse", "image_size": 16}]}
    settings = study_datasets(config)["c100"]
    archive, record = tmp_path / "resources" / "c.tar.gz", tmp_path / "resources" / "source.json"
    out = SimpleNamespace(train=tmp_path / "train.pt", test=tmp_path / "test.pt", samples=tmp_path / "s.png")
    params = SimpleNamespace(dataset=settings)
    # both read the source from the config (a local one is a param by its content only)
    study = {"config": config, "wildcards": SimpleNamespace(dataset="c100")}
    run_script("download.py", params=params, output=SimpleNamespace(archive=archive, record=record),
               log=[tmp_path / "download.log"], **study)  # fmt: skip
    run_script("prepare.py", params=params, input=SimpleNamespace(archive=archive, record=record),
               output=out, threads=1, log=[tmp_path / "prepare.log"], **study)  # fmt: skip
    train = torch.load(out.train)
    assert train["classes"] == COARSE_NAMES and train["images"].shape == (200, 3, 16, 16)
    assert train["source"] == source


# --- A 100-class set trains end to end ----------------------------------------------------------


@pytest.mark.parametrize(("labels", "classes"), [("fine", 100), ("coarse", 20)])
def test_a_cifar100_set_trains_with_its_number_of_classes(tmp_path, labels, classes):
    make_cifar100_python(tmp_path / "cifar-100-python.tar.gz")
    train, test = download_and_prepare(str(tmp_path / "cifar-100-python.tar.gz"), tmp_path, labels)
    run = lab_run(epochs=1, batch_size=64, optimizer="adam", lr=3e-3)
    result = train_run(run, train, test, device=torch.device("cpu"), lr=run["lr"])
    assert result["status"] == "ok" and result["classes"] == train["classes"]
    with torch.no_grad():
        logits = result["model"].eval()(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, classes)


# --- Sizes from the listing ---------------------------------------------------------------------


def test_sizes_of_an_image_folder_and_its_archives(tmp_path):
    folder = make_image_folder(tmp_path / "images")  # 3 classes, 3 train and 2 test images each
    (folder / "train" / "cat" / "README.txt").write_text("not an image")
    (folder / "train" / "cat" / ".DS_Store").write_bytes(b"")
    with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="images")
    expected = {"train": 9, "test": 6, "classes": 3}
    for source in (
        folder,
        zip_folder(folder, tmp_path / "images.zip", top="top/"),
        tmp_path / "images.tar.gz",
    ):
        assert sources.source_sizes(str(source)) == expected, source
    assert sources.source_sizes((tmp_path / "images.zip").as_uri()) == expected


def test_sizes_of_the_cifar_archives_from_their_layout(tmp_path):
    make_cifar_python(tmp_path / "cifar-10-python.tar.gz")
    make_cifar100_python(tmp_path / "cifar-100-python.tar.gz")
    cifar10, cifar100 = str(tmp_path / "cifar-10-python.tar.gz"), str(tmp_path / "cifar-100-python.tar.gz")
    assert sources.source_sizes(cifar10) == {"train": 50_000, "test": 10_000, "classes": 10}
    assert sources.source_sizes(cifar100) == {"train": 50_000, "test": 10_000, "classes": 100}
    assert sources.source_sizes(cifar100, labels="coarse") == {"train": 50_000, "test": 10_000, "classes": 20}
    with pytest.raises(DataError, match=r"labels: coarse needs .*CIFAR-10 python archive.*set labels: fine"):
        sources.source_sizes(cifar10, labels="coarse")


def test_sizes_of_a_folder_without_a_layout_is_the_error_prepare_gives(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no dataset layout found"):
        sources.source_sizes(str(tmp_path / "notes"))


def test_sizes_without_a_listing(tmp_path):
    assert sources.source_sizes("https://example.org/data.zip") is None
    assert sources.source_sizes("synthetic") is None
    assert sources.source_sizes(str(tmp_path / "not-yet-there.zip")) is None
    builtin = BUILTIN["cifar100"].source
    assert sources.source_sizes(builtin, labels="coarse") == {"train": 50_000, "test": 10_000, "classes": 20}


def pack(folder: Path, archive: Path) -> Path:
    """`folder` as a .zip or .tar.gz (by `archive`'s name) inside a top folder `images/`."""
    if archive.suffix == ".zip":
        return zip_folder(folder, archive, top="images/")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="images")
    return archive


@pytest.mark.parametrize("name", ["images.tar.gz", "images.zip"])
def test_an_archive_listing_is_cached_by_size_and_mtime(tmp_path, monkeypatch, name):
    folder = make_image_folder(tmp_path / "images")
    archive, cache = pack(folder, tmp_path / name), tmp_path / "cache" / "sizes.json"
    first = sources.source_sizes(str(archive), cache=cache)
    assert first == {"train": 9, "test": 6, "classes": 3} and cache.exists()

    def not_again(*args, **kwargs):
        raise AssertionError("the unchanged archive was opened again")

    with monkeypatch.context() as patched:
        for module, function in ((sources.tarfile, "is_tarfile"), (sources.zipfile, "is_zipfile")):
            patched.setattr(module, function, not_again)
        assert sources.source_sizes(str(archive), cache=cache) == first
    make_image_folder(folder, {"train": 4, "test": 2})  # one more training image per class
    pack(folder, archive)
    assert sources.source_sizes(str(archive), cache=cache) == {"train": 12, "test": 6, "classes": 3}


@pytest.mark.parametrize("name", ["images.tar.gz", "images.zip"])
def test_sizes_of_a_truncated_archive_name_it_with_the_fix(tmp_path, name):
    archive = pack(make_image_folder(tmp_path / "images"), tmp_path / name)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{name} is incomplete or damaged.*download it again"):
        sources.source_sizes(str(archive))


def test_source_sizes_needs_no_torch(tmp_path):
    folder = make_image_folder(tmp_path / "images")
    code = (
        "import sys\nfrom cifarlab.data.sources import source_sizes\n"
        f"print(source_sizes({str(folder)!r})['train'], [m for m in ('torch', 'torchvision', 'numpy') "
        "if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split(maxsplit=1) == ["9", "[]\n"]
