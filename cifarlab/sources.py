"""Where the data comes from, without torch: a source's archive name, its local path and its content.

The workflow layer (workflow/rules/common.smk) reads these while it plans, on every Snakemake call,
so this module imports nothing heavier than the standard library (tests/test_workflow_imports.py
checks). cifarlab.data fetches, reads and prepares the data itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from cifarlab.files import write_json


class DataError(ValueError):
    """The data cannot be used as given; the message names the file or entry and the fix."""


def archive_name(source: str) -> str:
    """File name under resources/<dataset>/ of the archive a source yields.

    URLs and archive paths keep their own name; a directory becomes `<name>.tar` (packed once, so
    that the rest of the DAG has one file to depend on); the synthetic source becomes
    `synthetic.zip`.
    """
    if source == "synthetic":
        return "synthetic.zip"
    path = urlparse(source).path if "://" in source else source
    base = path.rstrip("/").split("/")[-1]
    if not base:
        raise ValueError(f"cannot name an archive for data source {source!r}: give a file, folder or URL")
    if base.endswith((".zip", ".tar", ".tar.gz", ".tgz")):
        return base
    return f"{base}.tar"


def local_path(source: str) -> Path | None:
    """The filesystem path of a local source (plain path or file:// URL); None for http(s)."""
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if "://" in source:
        raise DataError(f"unsupported data source {source!r}: use http(s)://, file://, a path or 'synthetic'")
    return Path(source).expanduser()


def file_digests(path: str | Path) -> dict:
    """{"bytes", "md5", "sha256"} of a file, read in 1 MiB blocks."""
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            md5.update(block)
            sha256.update(block)
            size += len(block)
    return {"bytes": size, "md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def walk_folder(folder: str | Path) -> tuple[list[tuple[str, os.stat_result]], list[str]]:
    """([(file, its stat)], [sub-folders]) of a directory, relative POSIX names, sorted; links followed.

    Directory links are followed (a class folder may be a link to another disk); a link that
    leads back into a folder above it is refused. Hidden files and folders are left out.
    """
    files: list[tuple[str, os.stat_result]] = []
    dirs: list[str] = []

    def visit(path: str, rel: str, above: tuple[str, ...]) -> None:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                name = f"{rel}{entry.name}"
                if entry.is_dir():  # follows links
                    real = os.path.realpath(entry.path)
                    if real in above:
                        raise DataError(
                            f"{entry.path}: a directory link that leads back into a folder above it "
                            "(a loop); remove the link or point it elsewhere"
                        )
                    dirs.append(name)
                    visit(entry.path, f"{name}/", (*above, real))
                elif entry.is_file():
                    files.append((name, entry.stat()))

    visit(str(folder), "", (os.path.realpath(folder),))
    return sorted(files), sorted(dirs)


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def source_fingerprint(source: str, cache: str | Path | None = None) -> str | None:
    """The content identity of a local source (sha256 hex), or None for URLs and `synthetic`.

    An archive: the sha256 of its bytes. A directory: the sha256 over each file that would be
    packed (its name and the sha256 of its bytes), so it changes when an image is added,
    removed or rewritten, and not when files are only touched. `cache` (JSON, written
    atomically) keeps each file's hash under its size and mtime: a file whose stat is unchanged
    is not read again, so an unchanged source costs one stat per file.
    """
    path = None if source == "synthetic" else local_path(source)
    if path is None or not path.exists():
        return None
    where = os.path.abspath(path)
    saved = _read_cache(cache)
    known = saved.get("files", {}) if saved.get("source") == where else {}
    fresh: dict[str, list] = {}

    def sha256_of(name: str, file: str, st: os.stat_result) -> str:
        stamp = [st.st_size, st.st_mtime_ns]
        entry = known.get(name)
        digest = entry[2] if entry and entry[:2] == stamp else _sha256(file)
        fresh[name] = [*stamp, digest]
        return digest

    if path.is_dir():
        total = hashlib.sha256()
        for name, st in walk_folder(path)[0]:
            total.update(f"{name}\0{sha256_of(name, os.path.join(where, name), st)}\n".encode())
        digest = total.hexdigest()
    else:
        digest = sha256_of("", where, path.stat())
    if cache is not None and fresh != known:
        write_json({"source": where, "files": fresh}, cache, indent=None)
    return digest


def _read_cache(cache: str | Path | None) -> dict:
    try:
        return json.loads(Path(cache).read_text()) if cache else {}
    except (OSError, ValueError):  # absent or half-written by a killed process: rebuilt
        return {}
