"""The data stage: verified downloads, safe archives, both layouts, decoding and the prepared files."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import pickle
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.data import archives, fetch, sources
from cifarlab.data import prepare as data
from cifarlab.data.archives import UnsafeArchiveError
from cifarlab.data.fetch import DownloadError
from cifarlab.data.prepare import DataError

# Distinct solid colours: they survive PNG, resizing and the layout round trip exactly.
COLOURS = {"cat": (200, 30, 40), "dog": (20, 180, 60), "emu": (10, 40, 220)}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_image_folder(root: Path, per_class: dict[str, int] | None = None, size: int = 32) -> Path:
    """train/<class>/*.png and test/<class>/*.png of solid-coloured images; returns root."""
    per_class = per_class or {"train": 3, "test": 2}
    for split, n in per_class.items():
        for cls, colour in COLOURS.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), colour).save(folder / f"{i:03d}.png")
    return root


def zip_folder(folder: Path, target: Path, top: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}{path.relative_to(folder).as_posix()}")
    return target


def cifar_batch(images: np.ndarray, labels: list[int] | dict[bytes, list[int]], name: str) -> bytes:
    """A batch pickled as the official archive has it: bytes keys, numpy 1's module names.

    labels: CIFAR-10's `labels`, or {key: labels} (CIFAR-100's `fine_labels` and `coarse_labels`).
    """
    batch = {
        b"batch_label": name.encode(),
        **(labels if isinstance(labels, dict) else {b"labels": labels}),
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
    }
    raw = pickle.dumps(batch, protocol=2)
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def make_cifar_python(target: Path, per_batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny `cifar-10-python.tar.gz` in the official layout; returns the images and labels it holds."""
    rng = np.random.default_rng(seed)
    classes = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    files, splits = {}, {"train": ([], []), "test": ([], [])}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        files[name] = cifar_batch(images, labels, name)
        split = splits["test" if name == "test_batch" else "train"]
        split[0].append(images)
        split[1].extend(labels)
    meta = {b"label_names": classes, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    files["batches.meta"] = pickle.dumps(meta, protocol=2)
    files["readme.html"] = b"<html></html>"
    with tarfile.open(target, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return {
        "train_images": np.concatenate(splits["train"][0]),
        "train_labels": np.array(splits["train"][1]),
        "test_images": np.concatenate(splits["test"][0]),
        "test_labels": np.array(splits["test"][1]),
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- Naming and sources -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz"),
        ("file:///data/my-images.zip", "my-images.zip"),
        ("/data/my_images/", "my_images.tar"),
        ("synthetic", "synthetic.zip"),
    ],
)
def test_archive_name(source, name):
    assert sources.archive_name(source) == name


def test_unsupported_scheme_is_named():
    with pytest.raises(DataError, match="ftp://x/y.zip"):
        sources.local_path("ftp://x/y.zip")


# --- Download: checksums, atomic writes, truncation -------------------------------------


def test_local_copy_verified_and_recorded(tmp_path):
    source = tmp_path / "src" / "data.zip"
    source.parent.mkdir()
    zip_folder(make_image_folder(tmp_path / "images"), source)
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    out = tmp_path / "resources"
    record = fetch.download(source.as_uri(), out / "data.zip", out / "source.json", md5=md5)
    assert (out / "data.zip").read_bytes() == source.read_bytes()
    assert json.loads((out / "source.json").read_text()) == record
    assert record["md5"] == md5 == record["md5_expected"]
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["bytes"] == source.stat().st_size
    assert leftovers(out) == ["data.zip", "source.json"]  # no temp file left


def test_checksum_mismatch_leaves_nothing(tmp_path):
    source = tmp_path / "data.tar.gz"
    source.write_bytes(b"not the archive you are looking for")
    out = tmp_path / "resources"
    wrong = "0" * 32
    with pytest.raises(DownloadError) as error:
        fetch.download(str(source), out / "data.tar.gz", out / "source.json", md5=wrong)
    message = str(error.value)
    assert wrong in message and hashlib.md5(source.read_bytes()).hexdigest() in message
    assert leftovers(out) == []


def test_missing_source_is_named(tmp_path):
    with pytest.raises(DownloadError, match="does not exist"):
        fetch.download(str(tmp_path / "nowhere.zip"), tmp_path / "o" / "a.zip", tmp_path / "o" / "s.json")
    assert leftovers(tmp_path / "o") == []


class _Server:
    """A local HTTP server in a thread; `lie` > 0 announces that many bytes more than it sends."""

    def __init__(self, body: bytes, lie: int = 0, status: int = 200):
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) + lie))
                self.end_headers()
                if status == 200:
                    self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/cifar-10-python.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_http_download_verified(tmp_path):
    body = bytes(range(256)) * 5000  # 1.28 MB: more than one read block
    out = tmp_path / "resources"
    with _Server(body) as server:
        record = fetch.download(
            server.url, out / "a.tar.gz", out / "source.json", md5=hashlib.md5(body).hexdigest()
        )
    assert (out / "a.tar.gz").read_bytes() == body
    assert record["bytes"] == len(body)
    assert leftovers(out) == ["a.tar.gz", "source.json"]


def test_truncated_download_is_retried_then_fails_cleanly(tmp_path):
    body = b"x" * 10_000
    out = tmp_path / "resources"
    with _Server(body, lie=500) as server:
        with pytest.raises(DownloadError) as error:
            fetch.download(server.url, out / "a.tar.gz", out / "source.json", attempts=3, backoff=0)
        assert server.requests == 3
    assert "10500" in str(error.value) and "10000" in str(error.value)
    assert leftovers(out) == []


def test_client_error_is_not_retried(tmp_path):
    with _Server(b"", status=404) as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            fetch.download(server.url, tmp_path / "a.tar.gz", tmp_path / "s.json", attempts=3, backoff=0)
        assert server.requests == 1


def test_directory_is_packed_deterministically(tmp_path):
    folder = make_image_folder(tmp_path / "mine")
    (folder / ".DS_Store").write_bytes(b"junk")
    first = fetch.download(str(folder), tmp_path / "a" / "mine.tar", tmp_path / "a" / "s.json")
    for path in folder.rglob("*.png"):  # new mtimes, same images: same archive
        path.touch()
    second = fetch.download(str(folder) + "/", tmp_path / "b" / "mine.tar", tmp_path / "b" / "s.json")
    assert first["md5"] == second["md5"]
    with tarfile.open(tmp_path / "a" / "mine.tar") as tar:
        names = tar.getnames()
        assert names == sorted(names) and ".DS_Store" not in names
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_directory_without_layout_fails_before_packing(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="train/<class>/<image>"):
        fetch.download(str(tmp_path / "flat"), tmp_path / "o" / "flat.tar", tmp_path / "o" / "s.json")
    assert leftovers(tmp_path / "o") == []


def test_synthetic_source_is_deterministic_and_prepares(tmp_path):
    cfg = {"seed": 3, "train_per_class": 4, "test_per_class": 2}
    a = fetch.download("synthetic", tmp_path / "a.zip", tmp_path / "a.json", synthetic=cfg, image_size=16)
    b = fetch.download("synthetic", tmp_path / "b.zip", tmp_path / "b.json", synthetic=cfg, image_size=16)
    assert a["md5"] == b["md5"]
    out = data.prepare(tmp_path / "a.zip", tmp_path / "train.pt", tmp_path / "test.pt", None, image_size=16)
    from cifarlab.data.synthetic import CLASSES

    assert out["train"]["classes"] == sorted(CLASSES)
    assert out["train"]["images"].shape == (40, 3, 16, 16)
    assert torch.bincount(out["test"]["labels"]).tolist() == [2] * 10


# --- Refused archive entries ------------------------------------------------------------

UNSAFE = ["../evil.png", "/abs/evil.png", "train/cat/../../../evil.png"]


@pytest.mark.parametrize("name", UNSAFE)
def test_zip_unsafe_name_refused(tmp_path, name):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/cat/ok.png", png_bytes(Image.new("RGB", (4, 4))))
        zf.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(UnsafeArchiveError) as error:
        archives.Archive(path)
    assert repr(name) in str(error.value)


def test_zip_symlink_refused(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("train/cat/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="train/cat/link.png.*symbolic link"):
        archives.Archive(path)


@pytest.mark.parametrize("name", UNSAFE)
def test_tar_unsafe_name_refused(tmp_path, name):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UnsafeArchiveError) as error:
        archives.Archive(path)
    assert repr(name) in str(error.value)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_links_refused(tmp_path, kind):
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("train/cat/link.png")
        info.type, info.linkname = kind, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="train/cat/link.png.*link to '/etc/passwd'"):
        archives.Archive(path)


def test_unsafe_archive_refused_by_prepare(tmp_path):
    """The check guards the whole stage, not only the Archive class."""
    path = zip_folder(make_image_folder(tmp_path / "images"), tmp_path / "data.zip")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("../outside.png", b"x")
    with pytest.raises(UnsafeArchiveError, match="outside.png"):
        data.prepare(path, tmp_path / "train.pt", tmp_path / "test.pt", None)
    assert not (tmp_path / "train.pt").exists()


# --- Image folders ----------------------------------------------------------------------


def check_solid_colours(classes, splits, counts):
    assert classes == sorted(COLOURS)
    for split, n in counts.items():
        images, labels = splits[split]
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert images.shape == (n * len(COLOURS), 3, 32, 32)
        for image, label in zip(images, labels.tolist(), strict=True):
            expected = torch.tensor(COLOURS[classes[label]], dtype=torch.uint8).view(3, 1, 1)
            assert torch.equal(image, expected.expand(3, 32, 32))


def test_image_folder_from_directory(tmp_path):
    folder = make_image_folder(tmp_path / "mine")
    (folder / "train" / "cat" / "notes.txt").write_text("not an image: skipped")
    classes, splits = data.read_dataset(folder, 32)
    check_solid_colours(classes, splits, {"train": 3, "test": 2})


def test_image_folder_from_zip_inside_top_folder(tmp_path):
    path = zip_folder(make_image_folder(tmp_path / "mine"), tmp_path / "mine.zip", top="mine-v1/")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("__MACOSX/mine-v1/train/cat/._000.png", b"resource fork")
    classes, splits = data.read_dataset(path, 32)
    check_solid_colours(classes, splits, {"train": 3, "test": 2})


def test_image_folder_decoded_in_a_process_pool(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "POOL_MIN_IMAGES", 1)
    monkeypatch.setattr(data, "POOL_CHUNK", 4)
    folder = make_image_folder(tmp_path / "mine", {"train": 5, "test": 3})
    classes, splits = data.read_dataset(folder, 32, workers=2)
    check_solid_colours(classes, splits, {"train": 5, "test": 3})


def test_test_class_missing_from_train(tmp_path):
    folder = make_image_folder(tmp_path / "mine")
    (folder / "test" / "yak").mkdir()
    Image.new("RGB", (32, 32)).save(folder / "test" / "yak" / "0.png")
    with pytest.raises(DataError, match=r"\['yak'\] have no training images"):
        data.read_dataset(folder, 32)


def test_two_datasets_in_one_archive(tmp_path):
    make_image_folder(tmp_path / "both" / "a")
    make_image_folder(tmp_path / "both" / "b")
    with pytest.raises(DataError, match="several image-folder datasets"):
        data.read_dataset(tmp_path / "both", 32)


def test_unreadable_image_is_named(tmp_path):
    folder = make_image_folder(tmp_path / "mine")
    (folder / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    path = zip_folder(folder, tmp_path / "mine.zip")
    with pytest.raises(DataError, match=r"mine\.zip:train/dog/broken\.jpg"):
        data.prepare(path, tmp_path / "train.pt", tmp_path / "test.pt", None)
    assert not (tmp_path / "train.pt").exists()


def test_truncated_jpeg_is_named(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    with pytest.raises(DataError, match="cut.jpg"):
        data.decode_image(buffer.getvalue()[:600], 32, "cut.jpg")


@pytest.mark.parametrize(
    ("image", "rgb"),
    [
        (Image.new("L", (48, 40), 77), (77, 77, 77)),
        (Image.new("RGBA", (20, 20), (10, 200, 30, 0)), (10, 200, 30)),  # alpha dropped
        (Image.new("RGB", (100, 64), (1, 2, 3)).convert("P", palette=Image.Palette.ADAPTIVE), (1, 2, 3)),
        (Image.new("CMYK", (32, 32), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.new("L", (40, 40), 128), (128, 128, 128)),
        (Image.new("RGB", (640, 480), (250, 128, 5)), (250, 128, 5)),
    ],
    ids=["L", "RGBA", "P", "CMYK-jpeg", "L-jpeg", "large"],
)
def test_modes_and_sizes_become_rgb_at_image_size(request, image, rgb):
    fmt = "JPEG" if request.node.callspec.id.endswith("jpeg") else "PNG"
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    decoded = data.decode_image(buffer.getvalue(), 32, "x")
    assert decoded.shape == (32, 32, 3) and decoded.dtype == np.uint8
    assert (np.abs(decoded.astype(int) - np.array(rgb)) <= (1 if fmt == "JPEG" else 0)).all()


@pytest.mark.parametrize("size", [64, 32], ids=["own-size", "resized"])
def test_jpeg_fast_path_matches_pil(monkeypatch, size):
    """torchvision's JPEG decoder, when present, must give exactly PIL's pixels."""
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=75)
    fast = data.decode_image(buffer.getvalue(), size, "x.jpg")
    monkeypatch.setattr(data, "decode_jpeg", None)
    assert np.array_equal(fast, data.decode_image(buffer.getvalue(), size, "x.jpg"))


def test_resize_keeps_aspect_ratio_and_centre():
    """A wide image is centre-cropped, not squashed: its left and right quarters are cut off."""
    image = Image.new("RGB", (64, 32), (0, 0, 255))
    image.paste((255, 0, 0), (16, 0, 48, 32))  # red centre square, blue sides
    decoded = data.decode_image(png_bytes(image), 16, "wide.png")
    assert decoded.shape == (16, 16, 3)
    assert (decoded[:, 1:-1] == np.array([255, 0, 0])).all()  # squashing would leave blue columns
    assert decoded[:, :, 0].min() > 200  # the edge columns only blend in the filter's support


# --- The official CIFAR-10 python layout ------------------------------------------------


def test_cifar_python_layout(tmp_path):
    truth = make_cifar_python(tmp_path / "cifar-10-python.tar.gz")
    classes, splits = data.read_dataset(tmp_path / "cifar-10-python.tar.gz", 32)
    assert classes[:3] == ["airplane", "automobile", "bird"] and len(classes) == 10
    for split in ("train", "test"):
        images, labels = splits[split]
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert torch.equal(images, torch.from_numpy(truth[f"{split}_images"]))
        assert labels.tolist() == truth[f"{split}_labels"].tolist()


def test_cifar_python_resized(tmp_path):
    make_cifar_python(tmp_path / "c.tar.gz")
    _, splits = data.read_dataset(tmp_path / "c.tar.gz", 16)
    assert splits["train"][0].shape == (20, 3, 16, 16) and splits["train"][0].dtype == torch.uint8


def test_cifar_batch_cannot_run_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with tarfile.open(tmp_path / "c.tar", "w") as tar:
        for name in sources.CIFAR10.files:
            content = pickle.dumps({b"data": Exploit()}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with pytest.raises(DataError, match=r"print; only numpy arrays are allowed"):
        data.read_dataset(tmp_path / "c.tar", 32)


def test_cifar_layout_incomplete(tmp_path):
    with tarfile.open(tmp_path / "c.tar", "w") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataError, match="data_batch_1"):
        data.read_dataset(tmp_path / "c.tar", 32)


# --- prepare: the files of docs/architecture.md -----------------------------------------


def test_channel_stats_match_torch():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = data.channel_stats(images)
    pixels = images.float() / 255
    torch.testing.assert_close(mean, pixels.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(std, pixels.std(dim=(0, 2, 3)))


def test_prepare_writes_the_contract(tmp_path):
    make_cifar_python(tmp_path / "cifar-10-python.tar.gz")
    out = tmp_path / "results"
    data.prepare(
        tmp_path / "cifar-10-python.tar.gz",
        out / "train.pt",
        out / "test.pt",
        out / "samples.png",
        source="https://example.org/cifar-10-python.tar.gz",
    )
    train, test = torch.load(out / "train.pt"), torch.load(out / "test.pt")
    assert set(train) == {"images", "labels", "classes", "mean", "std", "source"}
    assert train["images"].shape == (20, 3, 32, 32) and test["images"].shape == (4, 3, 32, 32)
    pixels = train["images"].float() / 255
    torch.testing.assert_close(train["mean"], pixels.mean(dim=(0, 2, 3)))
    assert train["mean"].dtype == torch.float32 and train["std"].shape == (3,)
    assert torch.equal(test["mean"], train["mean"]) and torch.equal(test["std"], train["std"])
    assert train["source"] == "https://example.org/cifar-10-python.tar.gz"
    with Image.open(out / "samples.png") as figure:
        assert figure.size[0] > 100 and figure.size[1] > 100
    assert sorted(p.name for p in out.iterdir()) == ["samples.png", "test.pt", "train.pt"]


# --- Issue 15: content identity, links, bit depth, our errors, bounded downloads ----------


def test_content_fingerprint_of_a_folder_judges_content(tmp_path):
    """Same images, new mtimes: same identity; a file removed, added or rewritten: a new one."""
    folder = make_image_folder(tmp_path / "mine")
    cache = tmp_path / "cache.json"
    first = sources.source_fingerprint(str(folder), cache)
    for path in folder.rglob("*.png"):
        path.touch()
    assert sources.source_fingerprint(str(folder), cache) == first
    (folder / "train" / "cat" / "000.png").unlink()
    removed = sources.source_fingerprint(str(folder), cache)
    assert removed != first
    Image.new("RGB", (32, 32), (1, 2, 3)).save(folder / "train" / "cat" / "000.png")
    assert sources.source_fingerprint(str(folder), cache) not in (first, removed)
    (folder / ".DS_Store").write_bytes(b"junk")  # left out of the packed archive: no new identity
    assert sources.source_fingerprint(str(folder), cache) == sources.source_fingerprint(str(folder), None)


def test_content_fingerprint_of_an_archive(tmp_path):
    path = zip_folder(make_image_folder(tmp_path / "mine"), tmp_path / "mine.zip")
    cache = tmp_path / "cache.json"
    first = sources.source_fingerprint(path.as_uri(), cache)
    assert first == sources.source_fingerprint(str(path), None) == sources.file_digests(path)["sha256"]
    path.write_bytes(path.read_bytes()[:-100])
    assert sources.source_fingerprint(str(path), cache) != first
    assert sources.source_fingerprint("https://example.org/x.tar.gz", cache) is None
    assert sources.source_fingerprint("synthetic", cache) is None


def test_unreadable_image_names_the_users_file(tmp_path):
    """The packed copy is an implementation detail: the error names the file the user can remove."""
    folder = make_image_folder(tmp_path / "mine")
    (folder / "train" / "dog" / "broken.png").write_bytes(b"this is no image at all")
    out = tmp_path / "resources"
    fetch.download(str(folder), out / "mine.tar", out / "source.json")
    with pytest.raises(DataError) as error:
        data.prepare(out / "mine.tar", tmp_path / "train.pt", tmp_path / "test.pt", None, source=str(folder))
    message = str(error.value)
    assert f"{folder}/train/dog/broken.png" in message
    assert "mine.tar" not in message and "BytesIO" not in message


def test_symlinked_class_folder_is_read(tmp_path):
    folder = make_image_folder(tmp_path / "mine")
    elsewhere = tmp_path / "elsewhere" / "cat"
    elsewhere.parent.mkdir()
    (folder / "train" / "cat").rename(elsewhere)
    (folder / "train" / "cat").symlink_to(elsewhere, target_is_directory=True)
    classes, splits = data.read_dataset(folder, 32)
    check_solid_colours(classes, splits, {"train": 3, "test": 2})
    fetch.download(str(folder), tmp_path / "o" / "mine.tar", tmp_path / "o" / "s.json")
    classes, splits = data.read_dataset(tmp_path / "o" / "mine.tar", 32)
    check_solid_colours(classes, splits, {"train": 3, "test": 2})


def test_symlink_loop_is_refused(tmp_path):
    folder = make_image_folder(tmp_path / "mine")
    (folder / "train" / "cat" / "again").symlink_to(folder / "train", target_is_directory=True)
    with pytest.raises(DataError, match="again.*loop"):
        fetch.download(str(folder), tmp_path / "o" / "mine.tar", tmp_path / "o" / "s.json")


@pytest.mark.parametrize(
    ("array", "grey"),
    [
        (np.full((8, 8), 32896, dtype=np.uint16), 128),  # 32896 = 128 * 257: mid-grey
        (np.full((8, 8), 65535, dtype=np.uint16), 255),
        (np.full((8, 8), 257, dtype=np.uint16), 1),
    ],
    ids=["mid-grey", "white", "dark"],
)
def test_16_bit_images_are_scaled_not_clipped(array, grey):
    decoded = data.decode_image(png_bytes(Image.fromarray(array)), 8, "deep.png")
    assert decoded.dtype == np.uint8 and (decoded == grey).all()


def test_empty_class_folder_is_noted(tmp_path, caplog):
    folder = make_image_folder(tmp_path / "mine")
    (folder / "train" / "yak").mkdir()
    with caplog.at_level("WARNING", logger="cifarlab.data.archives"):
        classes, _ = data.read_dataset(folder, 32)
    assert "yak" not in classes
    assert any("train/yak" in r.message and "empty" in r.message for r in caplog.records)


def test_truncated_tar_gz_is_named_with_the_fix(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    make_cifar_python(path, per_batch=50)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError) as error:
        data.read_dataset(path, 32)
    assert str(path) in str(error.value) and "incomplete" in str(error.value)
    assert "download it again" in str(error.value)


def test_truncated_zip_is_named_with_the_fix(tmp_path):
    path = zip_folder(make_image_folder(tmp_path / "mine"), tmp_path / "mine.zip")
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"mine\.zip.*incomplete.*again"):
        data.read_dataset(path, 32)


def test_truncated_prepared_tensor_is_named_with_the_fix(tmp_path, synthetic_files):
    from cifarlab.core.files import load_torch

    broken = tmp_path / "train.pt"
    broken.write_bytes(synthetic_files["train"].read_bytes()[:5000])
    with pytest.raises(OSError) as error:
        load_torch(broken)
    assert str(broken) in str(error.value) and "delete it and rerun" in str(error.value)


def test_full_disk_is_named_with_the_fix(tmp_path):
    """torch.save on a full disk says `unexpected pos`; ours names the file and where to free space."""
    import subprocess
    import sys

    code = (
        "import resource, signal, sys, torch\n"
        "from cifarlab.core.files import save_torch\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))\n"
        "save_torch({'x': torch.zeros(100_000)}, sys.argv[1])\n"
    )
    target = tmp_path / "out" / "train.pt"
    done = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert str(target) in last and f"free space in {target.parent}" in last.lower(), last
    assert leftovers(target.parent) == []


def closed_port_url() -> str:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


def test_closed_port_fails_once_with_the_way_forward(tmp_path):
    url = closed_port_url()
    with pytest.raises(DownloadError) as error:
        fetch.download(url, tmp_path / "r" / "a.tar.gz", tmp_path / "r" / "s.json", backoff=30)
    message = str(error.value)
    assert "\n" not in message and url in message and "offline" in message
    assert "--config data_source=" in message and "cifar-10-python.tar.gz" in message


def test_unknown_host_fails_once(tmp_path):
    url = "http://no-such-host.invalid/cifar-10-python.tar.gz"  # .invalid never resolves (RFC 2606)
    with pytest.raises(DownloadError, match=r"no-such-host\.invalid.*offline"):
        fetch.download(url, tmp_path / "a.tar.gz", tmp_path / "s.json", backoff=30)


def test_server_errors_are_retried_a_bounded_number_of_times(tmp_path):
    with _Server(b"", status=503) as server:
        with pytest.raises(DownloadError, match="HTTP 503"):
            fetch.download(server.url, tmp_path / "a.tar.gz", tmp_path / "s.json", backoff=0)
        assert server.requests == fetch.DOWNLOAD_ATTEMPTS


def test_silent_server_times_out_within_the_documented_bound(tmp_path, monkeypatch):
    import socket

    monkeypatch.setattr(fetch, "DOWNLOAD_TIMEOUT_S", 0.5)
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.tar.gz"
        with pytest.raises(DownloadError, match="timed out"):
            fetch.download(url, tmp_path / "a.tar.gz", tmp_path / "s.json", backoff=0)
