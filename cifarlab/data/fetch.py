"""Fetching a source into one verified archive: download an http(s) URL, copy a local archive, pack an
image folder into a deterministic .tar, or write the synthetic dataset as a zip (docs/data.md).

What the `download` rule runs: it imports no image decoding (cifarlab.data.prepare), so an edit there
reruns `prepare` and what follows, not the download.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import shutil
import socket
import ssl
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from cifarlab.core.files import atomic_path
from cifarlab.data.archives import check_member_size, find_image_folder
from cifarlab.data.sources import archive_name, file_digests, find_cifar_python, local_path, walk_folder

log = logging.getLogger(__name__)

# Fixed timestamp of packed archives, so that the same images give the same bytes (and md5).
PACK_MTIME = 0
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Downloads (docs/data.md gives the worst case): attempts in all, the wait before the second
# (doubling after), and the seconds a connection may stay silent. Only transient failures retry.
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_BACKOFF_S = 2.0
DOWNLOAD_TIMEOUT_S = 30.0
# Where the download's error message suggests putting an archive fetched by hand.
MANUAL_DIR = "resources/manual"


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
    for name, info in listed:  # before copying anything: a file is read whole once packed
        check_member_size(f"{str(folder).rstrip('/')}/{name}", info.st_size)
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
