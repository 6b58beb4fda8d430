"""Data stage: fetch a source into one verified archive, read images safely from it, pack tensors.

Sources (see docs/data.md): an http(s) URL, a local path or file:// URL of an archive, an
image-folder directory (`train/<class>/*`, `test/<class>/*`, packed once into a deterministic
.tar), or `synthetic`. Archives are never extracted: zip and tar members are checked (no `..`,
absolute paths or links) and decoded straight from the archive.

Two kinds of layout are read (recognised in cifarlab.data.sources): the official CIFAR-10 and CIFAR-100
python archives (`cifar-10-batches-py/`, `cifar-100-python/`; CIFAR-100 with its fine or coarse
labels) and image folders, each possibly inside one top folder of the archive.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import pickle
import re
import shutil
import socket
import ssl
import stat
import tarfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps
from tqdm import tqdm

from cifarlab.core.files import atomic_path, save_torch

# Naming a source, knowing it by its content and recognising its layout live in cifarlab.data.sources
# (torch-free: the workflow reads them while it plans); DataError too, which both raise.
from cifarlab.data.sources import (
    ARCHIVE_ERRORS,
    CifarLayout,
    DataError,
    archive_name,
    check_labels,
    damaged,
    file_digests,
    find_cifar_python,
    image_folder_layout,
    is_junk,
    local_path,
    walk_folder,
)

try:  # JPEG via libjpeg-turbo without PIL's Python-level parsing: 2-3x faster on CIFAR-sized images,
    # the same pixels bit for bit (tests/test_data.py checks). PIL decodes everything else, and all
    # formats once torchvision drops its (deprecated) decoders.
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover
    decode_jpeg = None

log = logging.getLogger(__name__)

# Fixed timestamp of packed archives, so that the same images give the same bytes (and md5).
PACK_MTIME = 0
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Below this many images a process pool costs more than it saves.
POOL_MIN_IMAGES = 4096
POOL_CHUNK = 2000
# Downloads (docs/data.md gives the worst case): attempts in all, the wait before the second
# (doubling after), and the seconds a connection may stay silent. Only transient failures retry.
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_BACKOFF_S = 2.0
DOWNLOAD_TIMEOUT_S = 30.0
# Where the download's error message suggests putting an archive fetched by hand.
MANUAL_DIR = "resources/manual"
# The largest file an archive may declare: each member is read whole into memory, and a zip or
# .tar.gz of a few kilobytes can declare gigabytes. The largest official member (CIFAR-100's
# `train` batch) is 155 MB.
MAX_MEMBER_BYTES = 1 << 30


class UnsafeArchiveError(DataError):
    """An archive entry would land outside the target folder (`..`, absolute path, link, device)."""


class DownloadError(RuntimeError):
    """A download or copy failed (network, truncation, checksum); nothing was left behind."""


# --- Download -----------------------------------------------------------------------------


class _Truncated(OSError):
    """Fewer bytes came than the server announced (retried like a network error)."""


def _http_get_once(url: str, target: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "cifarlab"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(target, "wb") as out:
        length = response.headers.get("Content-Length")
        expected = int(length) if length else None
        received = 0
        bar = tqdm(
            total=expected, unit="B", unit_scale=True, desc=target.name.split(".part")[0], mininterval=1
        )
        with bar:
            while True:
                try:
                    block = response.read(1 << 20)
                except http.client.IncompleteRead as error:
                    block, received = b"", received + len(error.partial)
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
    if expected is not None and received != expected:
        raise _Truncated(
            f"truncated: the server announced {expected} bytes (Content-Length), {received} came"
        )


def _failure(error: Exception) -> tuple[str, str]:
    """(what went wrong in words, its kind): "offline" (the host cannot be reached), "permanent"
    (a retry cannot help) or "transient" (it may go away by itself: retried)."""
    if isinstance(error, urllib.error.HTTPError):
        transient = error.code >= 500 or error.code in (408, 429)
        return f"HTTP {error.code} {error.reason}", "transient" if transient else "permanent"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, socket.gaierror):
        return f"the host name does not resolve ({reason.strerror or reason})", "offline"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused", "offline"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"certificate check failed ({reason.verify_message})", "permanent"
    if isinstance(reason, TimeoutError):
        return f"timed out: nothing came for {DOWNLOAD_TIMEOUT_S:g} s", "transient"
    # resets, truncation, 5xx-like network trouble
    return str(reason) or type(reason).__name__, "transient"


def offline_hint(url: str, problem: str) -> str:
    """One line for a host that cannot be reached: what failed and the two ways forward."""
    name = archive_name(url)
    return (
        f"cannot download {url}: {problem}; this machine seems offline (or the host is down). "
        f"Fetch {name} elsewhere, put it e.g. at {MANUAL_DIR}/{name}, and run with "
        f"--config data_source={MANUAL_DIR}/{name}"
    )


def http_get(url: str, target: Path, attempts: int | None = None, backoff: float | None = None) -> None:
    """Download `url` into `target` with a progress bar; only transient failures are retried.

    Transient: 5xx, 408, 429, a timeout, a reset or truncated transfer; they are tried
    `attempts` times in all (DOWNLOAD_ATTEMPTS), waiting backoff, 2 x backoff, ... seconds
    between. Deterministic: any other 4xx, a refused connection, a name that does not resolve,
    a bad certificate; they fail at once. A connection silent for DOWNLOAD_TIMEOUT_S fails its attempt.
    """
    attempts = DOWNLOAD_ATTEMPTS if attempts is None else attempts
    backoff = DOWNLOAD_BACKOFF_S if backoff is None else backoff
    for attempt in range(1, attempts + 1):
        try:
            _http_get_once(url, target, DOWNLOAD_TIMEOUT_S)
            return
        except (OSError, http.client.HTTPException) as error:
            problem, kind = _failure(error)
        if kind == "offline":
            raise DownloadError(offline_hint(url, problem))
        if kind == "permanent":
            raise DownloadError(f"download of {url} failed: {problem} (not retried: it will not go away)")
        if attempt == attempts:
            raise DownloadError(f"download of {url} failed after {attempts} attempts; last error: {problem}")
        wait = backoff * 2 ** (attempt - 1)
        log.warning(
            "download attempt %d/%d of %s failed (%s); retrying in %.0f s",
            attempt,
            attempts,
            url,
            problem,
            wait,
        )
        time.sleep(wait)


def pack_directory(folder: Path, target: Path) -> None:
    """Pack a source directory (an image folder, or an unpacked CIFAR python archive) into an
    uncompressed tar with sorted entries and fixed metadata.

    The same images give the same bytes, so the archive's checksum (and everything downstream)
    changes only when the images do. Hidden files (`.DS_Store`, `.git/`) are left out; links
    to files are stored as the files they point to.
    """
    listed, dirs = walk_folder(folder)
    files = [name for name, _ in listed]
    if find_cifar_python(files, str(folder)) is None:  # a wrong layout fails here, before packing
        find_image_folder(files, str(folder), dirs)
    with tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as tar:
        for name in files:
            info = tarfile.TarInfo(name)
            info.size = (folder / name).stat().st_size
            info.mtime, info.mode, info.uid, info.gid = PACK_MTIME, 0o644, 0, 0
            with open(folder / name, "rb") as f:
                tar.addfile(info, f)


def write_synthetic_zip(
    target: Path, image_size: int, seed: int = 0, train_per_class: int = 500, test_per_class: int = 100
) -> None:
    """The synthetic shapes dataset (cifarlab.data.synthetic) as an image-folder zip of PNGs,
    deterministic."""
    from cifarlab.data import synthetic

    splits = synthetic.make_dataset(train_per_class, test_per_class, size=image_size, seed=seed)
    entries = []
    for split, (images, labels) in splits.items():
        for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            buffer = io.BytesIO()
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
            entries.append((f"{split}/{synthetic.CLASSES[label]}/{index:05d}.png", buffer.getvalue()))
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:  # PNG is compressed already
        for name, data in sorted(entries):
            zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), data)


def download(
    source: str,
    archive: str | Path,
    record: str | Path,
    md5: str | None = None,
    synthetic: dict | None = None,
    image_size: int = 32,
    attempts: int | None = None,
    backoff: float | None = None,
) -> dict:
    """Fetch `source` into `archive` (verified, atomic) and describe it in `record` (JSON).

    source: an http(s) URL, a file:// URL or path of an archive, an image-folder directory, or
    `synthetic` (settings in `synthetic`: seed, train_per_class, test_per_class; images are
    image_size pixels square). md5: the expected checksum, or None to skip the check.
    A mismatch or truncated download raises DownloadError and leaves no file behind.
    Returns the record: {"source", "kind", "archive", "bytes", "md5", "sha256", "md5_expected"};
    kind is "url", "archive", "folder" or "synthetic".
    """
    archive = Path(archive)
    with atomic_path(archive) as tmp:
        path = None if source == "synthetic" else local_path(source)
        if source == "synthetic":
            kind = "synthetic"
            write_synthetic_zip(tmp, image_size, **(synthetic or {}))
        elif path is None:
            kind = "url"
            http_get(source, tmp, attempts=attempts, backoff=backoff)
        elif path.is_dir():
            kind = "folder"
            pack_directory(path, tmp)
        elif path.is_file():
            kind = "archive"
            shutil.copyfile(path, tmp)
        else:
            raise DownloadError(f"data source {source!r} does not exist (looked for {path.resolve()})")
        digests = file_digests(tmp)
        if md5 and digests["md5"] != md5.lower():
            raise DownloadError(
                f"checksum mismatch for {source}: expected md5 {md5}, got {digests['md5']} "
                f"({digests['bytes']} bytes); the file was not kept. Check the source, or the md5 "
                "in the config (null skips the check)."
            )
    info = {"source": source, "kind": kind, "archive": archive.name, **digests, "md5_expected": md5}
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    log.info("%s -> %s (%d bytes, md5 %s)", source, archive, digests["bytes"], digests["md5"])
    return info


# --- Reading archives safely --------------------------------------------------------------


def check_entry_name(name: str, where: str) -> None:
    """Refuse a member name that would land outside the target folder if it were extracted."""
    posix = name.replace("\\", "/")
    # String tests, not pathlib: this runs for each of 60,000 entries.
    if posix.startswith("/") or posix[1:2] == ":" or "/../" in f"/{posix}/":
        raise UnsafeArchiveError(
            f"unsafe entry {name!r} in {where}: it would land outside the target folder (absolute path "
            "or '..'); refusing the archive. Re-pack it with relative paths only."
        )


class Archive:
    """Read-only access to the regular files of a directory, zip, or tar(.gz), by relative name.

    Every entry is checked on opening: `..`, absolute paths, symbolic and hard links and
    device files are refused with UnsafeArchiveError naming the entry, even where this class
    would not follow them, since such an archive was not made for this purpose.
    """

    def __init__(self, path: str | Path, shown_as: str | None = None, folder: bool | None = None):
        """shown_as: the name messages give instead of `path` (the user's own folder or file, when
        `path` is its packed copy); folder: whether that is a folder (entries then read `<it>/<name>`,
        else `<it>:<name>`)."""
        self.path = Path(path)
        self.where = shown_as or str(self.path)
        self._folder = self.path.is_dir() if folder is None else folder
        self._zip = self._tar = None
        self.dirs: list[str] = []  # folders, so that an empty class folder can be noted
        try:
            self._open()
        except ARCHIVE_ERRORS as error:
            raise DataError(damaged(self.where, error)) from None

    def _open(self) -> None:
        if self.path.is_dir():
            listed, self.dirs = walk_folder(self.path)
            self.names = [name for name, _ in listed]
        elif zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
            for info in infos:
                self._check_zip(info)
            self.names = [info.filename for info in infos if not info.is_dir()]
            self.dirs = [info.filename.rstrip("/") for info in infos if info.is_dir()]
        elif tarfile.is_tarfile(self.path):
            self._tar = tarfile.open(self.path)
            self._members = {}
            for member in self._tar.getmembers():
                self._check_tar(member)
                if member.isfile():
                    self._members[member.name] = member
                elif member.isdir():
                    self.dirs.append(member.name.rstrip("/"))
            self.names = list(self._members)
        elif self.path.name.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz")):
            raise zipfile.BadZipFile("its table of contents is missing or unreadable")
        else:
            raise DataError(f"{self.where} is neither a folder, a zip nor a tar(.gz) archive")

    def entry(self, name: str) -> str:
        """How messages name entry `name`: `folder/name` or `archive.zip:name`."""
        return f"{self.where.rstrip('/')}/{name}" if self._folder else f"{self.where}:{name}"

    def _check_size(self, name: str, size: int) -> None:
        """Refuse a member that declares more than MAX_MEMBER_BYTES (it would be read whole)."""
        if size > MAX_MEMBER_BYTES:
            raise DataError(
                f"{self.entry(name)} declares {size:,} bytes, more than the limit of {MAX_MEMBER_BYTES:,} "
                "(cifarlab.data.prepare.MAX_MEMBER_BYTES) for one file of a dataset: refusing the archive "
                "before reading it (an archive bomb, or not a dataset of small images)"
            )

    def _check_zip(self, info: zipfile.ZipInfo) -> None:
        check_entry_name(info.filename, self.where)
        self._check_size(info.filename, info.file_size)
        mode = info.external_attr >> 16  # Unix mode bits, when the zip was made on Unix
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(
                f"unsafe entry {info.filename!r} in {self.where}: it is a symbolic link; refusing the "
                "archive. Re-pack it with the files the links point to."
            )

    def _check_tar(self, member: tarfile.TarInfo) -> None:
        check_entry_name(member.name, self.where)
        self._check_size(member.name, member.size)
        if member.issym() or member.islnk():
            kind = "symbolic" if member.issym() else "hard"
            raise UnsafeArchiveError(
                f"unsafe entry {member.name!r} in {self.where}: it is a {kind} link to "
                f"{member.linkname!r}; refusing the archive. Re-pack it with the files the links point to."
            )
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"unsafe entry {member.name!r} in {self.where}: a device, fifo or other special file; "
                "refusing the archive."
            )

    def read(self, name: str) -> bytes:
        try:
            return self._read(name)
        except ARCHIVE_ERRORS as error:
            raise DataError(damaged(self.where, error, self.entry(name))) from None

    def _read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        if self._tar is not None:
            return self._tar.extractfile(self._members[name]).read()
        return (self.path / name).read_bytes()

    def read_many(self, names: list[str]) -> list[bytes]:
        """The bytes of `names`, in that order; a tar is read front to back (a .tar.gz cannot seek)."""
        if self._tar is None:
            return [self.read(name) for name in names]
        order = sorted(range(len(names)), key=lambda i: self._members[names[i]].offset_data)
        data: list[bytes] = [b""] * len(names)
        for i in order:
            data[i] = self.read(names[i])
        return data

    def close(self) -> None:
        for handle in (self._zip, self._tar):
            if handle is not None:
                handle.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- Layouts ------------------------------------------------------------------------------


def find_image_folder(
    names: list[str], where: str, dirs: list[str] = ()
) -> tuple[list[str], dict[str, dict[str, list[str]]]]:
    """(classes, {"train": {class: [names]}, "test": {...}}) of an image-folder layout
    (cifarlab.data.sources.image_folder_layout), with the notes `prepare` logs: the files skipped as not
    images, and each class folder among `dirs` (the folders of the source) that has no images.
    """
    root, classes, splits, skipped = image_folder_layout(names, where)
    if skipped:
        log.warning("%s: skipped %d non-image files, e.g. %s", where, len(skipped), skipped[:3])
    for folder in sorted(dirs):
        parts = folder.split("/")
        if (
            len(parts) >= 2 and parts[-2] in ("train", "test") and "/".join(parts[:-2]) == root
            and not is_junk(parts) and parts[-1] not in splits[parts[-2]]
        ):  # fmt: skip
            log.warning(
                "%s: class folder %s/ is empty (no images): class %r is left out of the %s split",
                where, folder, parts[-1], parts[-2],
            )  # fmt: skip
    return classes, splits


# --- Decoding -----------------------------------------------------------------------------


def _decode_rgb(data: bytes) -> np.ndarray:
    """Any format PIL reads -> uint8 H x W x 3, at its own size."""
    if decode_jpeg is not None and data[:3] == b"\xff\xd8\xff":
        with warnings.catch_warnings():  # deprecated in torchvision 0.29, the fallback below remains
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return image.permute(1, 2, 0).numpy()
    with Image.open(io.BytesIO(data)) as image:
        if image.mode.startswith("I"):  # 16-bit (I;16*) or 32-bit integer greyscale
            return _to_8_bit(np.asarray(image), image.mode)
        return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)  # convert copies


def _to_8_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Integer greyscale -> uint8 H x W x 3, scaled (not clipped) from its bit depth.

    PIL's convert("RGB") clips at 255, so a mid-grey 16-bit image would come out white. `I;16*`
    is 16-bit; `I` (32-bit) is taken as 16-bit when its values fit in 16 bits (as PNG and TIFF
    scans give), else as full 32-bit range.
    """
    values = values.astype(np.int64)
    top = 65535 if mode.startswith("I;16") or values.max(initial=0) <= 65535 else 2**32 - 1
    if mode == "I" and values.max(initial=0) <= 255:
        top = 255  # an 8-bit image stored as 32-bit integers
    grey = ((values.clip(0, top) * 255 + top // 2) // top).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


# The most pixels an image may declare before it is decoded: Pillow's default MAX_IMAGE_PIXELS
# (89,478,485, about 9459 x 9459; 256 MiB as 8-bit RGB), stated here so that a change of Pillow's
# global setting elsewhere changes nothing. Checked from the header for every format, JPEG
# included (torchvision's decode_jpeg has no such check: a 629-byte JPEG declaring 60000 x 60000
# pixels would allocate 10 GB).
MAX_IMAGE_PIXELS = 89_478_485
# prepare lists at most this many unreadable images (and says how many there are in all).
MAX_LISTED_BAD_IMAGES = 20


def declared_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels that an image file's header declares, without decoding it.

    Pillow's `Image.open` is lazy: it reads the header only. Its own bomb check (a warning above
    MAX_IMAGE_PIXELS, an error above twice that, without the sizes) is off for this call, as
    `check_declared_size` compares and names the size itself; `prepare` decodes in one thread
    per process, so the global is restored before anything else reads it.
    """
    pillow_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def check_declared_size(data: bytes, name: str, limit: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse an image whose header declares more than `limit` pixels (DataError naming the file
    and its size), before a decoder allocates them: a few hundred bytes can declare gigabytes."""
    width, height = declared_size(data)
    if width * height > limit:
        raise DataError(
            f"image {name} declares {width} x {height} pixels ({width * height / 1e6:,.0f} megapixels, "
            f"{width * height * 3 / 2**30:,.1f} GiB as RGB), more than the limit of {limit:,} pixels "
            "(cifarlab.data.prepare.MAX_IMAGE_PIXELS): refusing to decode it (a decompression bomb, or "
            "a photo far larger than a training image needs). Remove it, or shrink it and rerun"
        )


def decode_image(data: bytes, size: int, name: str) -> np.ndarray:
    """One image file's bytes -> uint8 array size x size x 3 (RGB).

    Grayscale, palette, RGBA (alpha dropped, as torchvision's loader does) and CMYK become RGB.
    Another size is resized keeping the aspect ratio (bilinear, antialiased) and centre-cropped
    to a square. A file whose header declares more than MAX_IMAGE_PIXELS is refused before it is
    decoded. An unreadable or oversized file raises DataError naming it.
    """
    try:
        check_declared_size(data, name)
        pixels = _decode_rgb(data)
        if pixels.shape[:2] != (size, size):
            image = ImageOps.fit(Image.fromarray(pixels), (size, size), method=Image.Resampling.BILINEAR)
            pixels = np.asarray(image)
        return pixels
    except DataError:
        raise
    except Exception as error:  # decoders raise many kinds for a corrupt file; all mean "unreadable"
        # PIL names the in-memory buffer (`<_io.BytesIO object at 0x...>`), not the file: drop it.
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error))
        raise DataError(
            f"cannot read image {name}: {type(error).__name__}: {why}. Remove or replace that file and rerun"
        ) from None


def _decode_chunk(items: list[tuple[str, bytes]], size: int) -> tuple[np.ndarray, list[str]]:
    """(uint8 N x size x size x 3, the messages of the images that could not be read); an
    unreadable image is left black in the array, so that every bad file is found in one pass."""
    array = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    problems = []
    for i, (name, data) in enumerate(items):
        try:
            array[i] = decode_image(data, size, name)
        except DataError as error:
            problems.append(str(error))
    return array, problems


def decode_images(
    items: list[tuple[str, bytes]], size: int, workers: int = 1
) -> tuple[torch.Tensor, list[str]]:
    """(name, bytes) pairs -> (uint8 tensor N x 3 x size x size in order, the messages of the images
    that could not be read: empty when all were); decoded in a process pool when there are many."""
    if not items:
        return torch.empty(0, 3, size, size, dtype=torch.uint8), []
    if workers <= 1 or len(items) < POOL_MIN_IMAGES:
        array, problems = _decode_chunk(items, size)
    else:
        chunks = [items[i : i + POOL_CHUNK] for i in range(0, len(items), POOL_CHUNK)]
        with ProcessPoolExecutor(workers) as pool:
            decoded = list(pool.map(_decode_chunk, chunks, [size] * len(chunks)))
        array = np.concatenate([chunk for chunk, _ in decoded])
        problems = [problem for _, found in decoded for problem in found]
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), problems


def unreadable_images_error(problems: list[str], where: str) -> DataError:
    """One error listing the unreadable images (the first MAX_LISTED_BAD_IMAGES) and their count,
    so that a folder is fixed in one pass."""
    listed = problems[:MAX_LISTED_BAD_IMAGES]
    more = len(problems) - len(listed)
    head = f"{len(problems)} image(s) of {where} cannot be used" + (
        f" (the first {len(listed)} listed, {more} more)" if more else ""
    )
    lines = "\n".join(f"  - {problem}" for problem in listed)
    return DataError(f"{head}:\n{lines}\nRemove or replace those files and rerun")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches but nothing that could run code: only numpy arrays are allowed.

    A pickle can call any importable function; an archive from the internet must not be able
    to, so every global it names is checked against this list.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(
                f"a CIFAR batch refers to {module}.{name}; only numpy arrays are allowed (refusing "
                "to run code from the archive)"
            )
        if module == "numpy.core.multiarray":  # the official batches were pickled by numpy 1
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def _load_batch(data: bytes, name: str) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as error:
        raise DataError(f"{name}: {error}") from None
    except Exception as error:
        raise DataError(f"cannot read CIFAR batch {name}: {type(error).__name__}: {error}") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_split(
    batches: list[dict], names: list[str], size: int, label_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for batch, name in zip(batches, names, strict=True):
        data = np.asarray(batch.get("data"))
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
            raise DataError(f"{name}: 'data' should be uint8 N x 3072, got {data.dtype} {data.shape}")
        if label_key not in batch:
            raise DataError(f"{name}: no {label_key!r} in the batch (it has {sorted(batch)})")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(batch[label_key], dtype=torch.int64))
    images = torch.cat(images)
    if size != 32:
        from torchvision.transforms.v2.functional import resize

        # Bilinear with antialiasing, chunked to bound memory: matches PIL's resize of image folders.
        images = torch.cat([resize(c, [size, size], antialias=True) for c in images.split(4096)])
    return images, torch.cat(labels)


def read_cifar_python(
    archive: Archive, layout: CifarLayout, prefix: str, size: int, labels: str = "fine"
) -> tuple[list[str], dict]:
    """(classes, {"train": (images, labels), "test": ...}) from an official CIFAR python archive.

    layout, prefix: what cifarlab.data.sources.find_cifar_python found; labels: one of `layout.labels`
    (CIFAR-100: "fine", 100 classes, or "coarse", its 20 superclasses), the batches' labels and
    the meta file's class names of that kind.
    """
    check_labels(labels, layout.labels, archive.where, f"the {layout.title} python archive")
    label_key, names_key = layout.labels[labels]
    names = [prefix + f for f in layout.files]
    batches = {
        n: _load_batch(d, archive.entry(n)) for n, d in zip(names, archive.read_many(names), strict=True)
    }
    meta = batches[prefix + layout.meta]
    if names_key not in meta:
        raise DataError(f"{archive.entry(prefix + layout.meta)}: no {names_key!r} (it has {sorted(meta)})")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[names_key]]
    splits = {}
    for split, files in (("train", layout.train), ("test", layout.test)):
        entries = [archive.entry(prefix + f) for f in files]
        splits[split] = _cifar_split([batches[prefix + f] for f in files], entries, size, label_key)
        found = splits[split][1]
        if len(found) and not 0 <= int(found.min()) <= int(found.max()) < len(classes):
            raise DataError(
                f"{', '.join(entries)}: {label_key} run from {int(found.min())} to {int(found.max())}, "
                f"but {names_key} names {len(classes)} classes; the archive is not a consistent "
                f"{layout.title} archive"
            )
    return classes, splits


def read_image_folder(archive: Archive, size: int, workers: int = 1) -> tuple[list[str], dict]:
    """(classes, {"train": (images, labels), "test": ...}) from an image-folder layout."""
    classes, layout = find_image_folder(archive.names, archive.where, archive.dirs)
    splits, problems = {}, []
    for split in ("train", "test"):
        names, labels = [], []
        for label, cls in enumerate(classes):
            files = layout[split].get(cls, [])
            names += files
            labels += [label] * len(files)
        items = [(archive.entry(n), d) for n, d in zip(names, archive.read_many(names), strict=True)]
        images, found = decode_images(items, size, workers)
        problems += found
        splits[split] = (images, torch.tensor(labels, dtype=torch.int64))
    if problems:  # after both splits: every bad file in one message
        raise unreadable_images_error(problems, archive.where)
    return classes, splits


def read_dataset(
    path: str | Path,
    size: int,
    workers: int = 1,
    shown_as: str | None = None,
    folder: bool | None = None,
    labels: str = "fine",
) -> tuple[list[str], dict]:
    """(classes, {"train": (uint8 N x 3 x size x size, int64 N), "test": ...}) of any accepted layout.

    shown_as, folder: how messages name the source (see Archive). labels: "fine", or "coarse"
    (CIFAR-100's 20 superclasses; a DataError for any other layout).
    """
    with Archive(path, shown_as, folder) as archive:
        found = find_cifar_python(archive.names, archive.where)
        if found is not None:
            return read_cifar_python(archive, *found, size, labels)
        check_labels(labels, ("fine",), archive.where, "an image folder")  # before decoding anything
        return read_image_folder(archive, size, workers)


# --- Prepare ------------------------------------------------------------------------------


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (float32 [3], pixel values in [0, 1]) of uint8 N x 3 x H x W.

    From a histogram of the 256 byte values per channel: exact, and no float copy of the data.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].flatten(), minlength=256).to(torch.float64)
        n = counts.sum()
        mean = (counts * values).sum() / n
        means.append(mean)
        stds.append(((counts * (values - mean) ** 2).sum() / (n - 1).clamp_min(1)).sqrt())  # unbiased
    return torch.stack(means).float(), torch.stack(stds).float()


def plot_samples(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    path: str | Path,
    per_class: int = 10,
    max_classes: int = 20,
    seed: int = 0,
    scale: int = 2,
) -> None:
    """A grid of `per_class` random training images (fixed seed) per class, one labelled row each.

    images: uint8 N x 3 x H x W; each image is drawn `scale` x larger (nearest neighbour). Drawn
    with PIL, not matplotlib: `prepare` then runs no plotting code, so a change of the figures'
    style (cifarlab.plots.style) never reruns the data steps and everything after them.
    """
    shown = classes[:max_classes]
    generator = torch.Generator().manual_seed(seed)
    height, width = images.shape[2] * scale, images.shape[3] * scale
    font = ImageFont.load_default()
    label_width = 8 + max(int(font.getlength(c)) for c in shown)
    title_height, gap = 16, 2
    title = "training samples" + (
        f" (first {max_classes} of {len(classes)} classes)" if len(classes) > max_classes else ""
    )
    canvas = Image.new(
        "RGB",
        (
            max(label_width + per_class * (width + gap), int(font.getlength(title)) + 8),
            title_height + len(shown) * (height + gap),
        ),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black", font=font)
    for label, cls in enumerate(shown):
        top = title_height + label * (height + gap)
        draw.text((4, top + height // 2 - 5), cls, fill="black", font=font)
        index = (labels == label).nonzero().flatten()
        index = index[torch.randperm(index.numel(), generator=generator)[:per_class]]
        for k, i in enumerate(index.tolist()):  # a class may have no training images in a tiny dataset
            tile = Image.fromarray(images[i].permute(1, 2, 0).contiguous().numpy()).resize(
                (width, height), Image.NEAREST
            )
            canvas.paste(tile, (label_width + k * (width + gap), top))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def check_classes(classes: list[str], test_labels: torch.Tensor, where: str) -> None:
    """Refuse data of fewer than two classes; warn of each class without test images.

    One class would score 100 % with loss 0 for every model, a result that measures nothing. A
    class without test images is allowed (a small folder may lack them): it is named here, in
    the report ("no test images"), left out of per-class accuracy and skipped by saliency.
    """
    if len(classes) < 2:
        raise DataError(
            f"{where} has {len(classes)} class ({classes}): a classifier needs at least two classes, "
            "or every model scores 100 % and learns nothing. Add a second class folder under train/ "
            "and test/"
        )
    counts = torch.bincount(test_labels, minlength=len(classes)).tolist()
    untested = [cls for cls, n in zip(classes, counts, strict=True) if n == 0]
    if untested:
        log.warning(
            "%s: class(es) %s have no test images: they are trained on, left out of per-class "
            "accuracy and skipped by saliency; add test/<class>/ images to measure them",
            where,
            untested,
        )


def prepare(
    archive: str | Path,
    train_out: str | Path,
    test_out: str | Path,
    samples_out: str | Path | None,
    image_size: int = 32,
    source: str | None = None,
    workers: int = 1,
    labels: str = "fine",
) -> dict[str, dict]:
    """Decode an archive once into the `results/data/<dataset>/{train,test}.pt` files.

    labels: which labels and class names of a CIFAR-100 archive ("fine": 100 classes, "coarse":
    20); other layouts have only "fine". Each file holds {"images": uint8 N x 3 x S x S,
    "labels": int64 N, "classes": list[str], "mean", "std": float32 [3] of the training set in
    [0, 1] units, "source": str} (docs/architecture.md). Both are written atomically. Returns the two dicts.
    """
    start = time.perf_counter()
    # Messages name the user's own folder or archive, not its copy under resources/.
    local = None if source in (None, "synthetic") else local_path(source)
    shown = (str(local), local.is_dir()) if local is not None and local.exists() else (None, None)
    classes, splits = read_dataset(archive, image_size, workers, *shown, labels=labels)
    for split, (images, _) in splits.items():
        if len(images) == 0:
            raise DataError(f"{shown[0] or archive}: the {split} split has no images")
    check_classes(classes, splits["test"][1], shown[0] or str(archive))
    mean, std = channel_stats(splits["train"][0])
    result = {}
    for split, out in (("train", train_out), ("test", test_out)):
        images, labels = splits[split]
        result[split] = {
            "images": images,
            "labels": labels,
            "classes": classes,
            "mean": mean,
            "std": std,
            "source": source or str(archive),
        }
        save_torch(result[split], out)
    if samples_out is not None:
        plot_samples(splits["train"][0], splits["train"][1], classes, samples_out)
    log.info(
        "prepared %s: %d train, %d test images of %d classes at %d px in %.1f s; mean %s std %s",
        archive,
        len(splits["train"][0]),
        len(splits["test"][0]),
        len(classes),
        image_size,
        time.perf_counter() - start,
        [round(v, 4) for v in mean.tolist()],
        [round(v, 4) for v in std.tolist()],
    )
    return result
