"""Where the data comes from, without torch: a source's archive name, its local path, its content,
its layout and its sizes.

The workflow layer (workflow/rules/common.smk) reads these while it plans, on every Snakemake call,
so this module imports nothing heavier than the standard library (tests/test_workflow_imports.py
checks; Pillow's list of image formats is imported only when an image folder is listed).
cifarlab.data.fetch fetches the data, cifarlab.data.prepare reads and prepares it, with the layouts
recognised here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tarfile
import zipfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse
from urllib.request import url2pathname

from cifarlab.core.files import write_json
from cifarlab.data.catalog import BUILTIN


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


def is_hidden(part: str) -> bool:
    """A hidden file or folder (`.DS_Store`, `.git`, `.ipynb_checkpoints`): left out as junk.

    A name of dots only or starting with two dots (`...`, `..a`) is not the usual hidden file: it
    is kept, so that image_folder_layout refuses it by name instead of dropping it unseen.
    """
    return part.startswith(".") and not part.startswith("..")


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
                if is_hidden(entry.name):
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


# What a damaged archive raises while its members are listed or read.
ARCHIVE_ERRORS = (EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, OSError)


def damaged(where: str, error: Exception, entry: str | None = None) -> str:
    """The message for an archive that ends early or is corrupt: which file, why, and the fix."""
    at = f" (at {entry})" if entry else ""
    return (
        f"{where} is incomplete or damaged{at}: {type(error).__name__}: {error}. The archive was cut "
        "short or corrupted in transfer: download it again (or copy it again from its source)"
    )


# --- Layouts: what `prepare` reads, recognised from the names of the files alone -------------

# The kinds of label a dataset entry may ask for (`labels:`); only CIFAR-100 has the second.
LABEL_KINDS = ("fine", "coarse")


@dataclass(frozen=True)
class CifarLayout:
    """One of the official CIFAR python archives: which pickles it has and which keys hold what."""

    dataset: str  # its built-in name (cifarlab.data.catalog.BUILTIN: published sizes)
    title: str  # for messages: "CIFAR-10"
    folder: str  # its top folder in the official archive: "cifar-10-batches-py/"
    meta: str  # the pickle of class names
    train: tuple[str, ...]
    test: tuple[str, ...]
    # label kind -> (key of the labels in a batch, key of the class names in `meta`)
    labels: dict[str, tuple[str, str]]
    # whether the meta file's name alone recognises the layout; CIFAR-100's plain `meta` needs
    # one of its batches beside it, so that a stray file called `meta` is not taken for it
    meta_says_it: bool

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.meta)


CIFAR10 = CifarLayout(
    dataset="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py/",
    meta="batches.meta",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    labels={"fine": ("labels", "label_names")},
    meta_says_it=True,
)
CIFAR100 = CifarLayout(
    dataset="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python/",
    meta="meta",
    train=("train",),
    test=("test",),
    labels={"fine": ("fine_labels", "fine_label_names"), "coarse": ("coarse_labels", "coarse_label_names")},
    meta_says_it=False,
)
CIFAR_LAYOUTS = (CIFAR10, CIFAR100)


def is_junk(parts: list[str]) -> bool:
    """Files that archivers and desktops add next to the data (macOS forks, .DS_Store, Thumbs.db)."""
    return any(is_hidden(p) or p == "__MACOSX" for p in parts) or parts[-1] in (
        "Thumbs.db",
        "desktop.ini",
    )


def find_cifar_python(names: list[str], where: str) -> tuple[CifarLayout, str] | None:
    """(layout, folder prefix such as `cifar-100-python/`) of an official CIFAR python archive, or None.

    names: the files of the source (relative POSIX names). A layout whose meta file is there but
    not all of its batches is a DataError naming what is missing.
    """
    present = set(names)
    for layout in CIFAR_LAYOUTS:
        for name in names:
            parts = name.split("/")
            if parts[-1] != layout.meta or is_junk(parts):
                continue
            prefix = name[: -len(layout.meta)]
            if not layout.meta_says_it and not any(prefix + f in present for f in layout.train + layout.test):
                continue
            missing = [f for f in layout.files if prefix + f not in present]
            if missing:
                raise DataError(f"{where} has {name} but lacks {missing} of the {layout.title} python layout")
            return layout, prefix
    return None


@functools.cache
def image_extensions() -> frozenset[str]:
    """The file extensions (lower case, with the dot) of every image format Pillow reads."""
    # Imported here: planning a study of built-in datasets lists no image folder and needs no Pillow.
    from PIL import Image

    return frozenset(ext.lower() for ext in Image.registered_extensions())


class ImageFolderLayout(NamedTuple):
    """An image folder found among a source's files (see image_folder_layout)."""

    root: str  # the top folder holding train/ and test/ ("" at the top of the source)
    classes: list[str]  # the training folders' names, sorted: label i is classes[i]
    splits: dict[str, dict[str, list[str]]]  # {"train": {class: [names, sorted]}, "test": {...}}
    skipped: list[str]  # files under a class folder that are not images


def image_folder_layout(names: list[str], where: str) -> ImageFolderLayout:
    """The `train/<class>/<image>`, `test/<class>/<image>` layout (possibly inside one top folder).

    Classes are the training folders' names, sorted (as torchvision's ImageFolder does); a test
    class without training images is a DataError, as are no layout and several of them. Files
    whose extension is not an image format are skipped (and listed); names are sorted per class.
    """
    roots: dict[str, dict[str, dict[str, list[str]]]] = {}
    skipped = []
    extensions = image_extensions()
    for name in names:
        parts = name.split("/")
        if len(parts) < 3 or parts[-3] not in ("train", "test") or is_junk(parts):
            continue
        if os.path.splitext(parts[-1])[1].lower() not in extensions:
            skipped.append(name)
            continue
        root = roots.setdefault("/".join(parts[:-3]), {"train": {}, "test": {}})
        root[parts[-3]].setdefault(parts[-2], []).append(name)
    complete = {r: s for r, s in roots.items() if s["train"] and s["test"]}
    if not complete:
        example = ", ".join(names[:5]) or "(no files)"
        folders = ", ".join(layout.folder for layout in CIFAR_LAYOUTS)
        raise DataError(
            f"no dataset layout found in {where}: expected train/<class>/<image> and test/<class>/<image> "
            f"(optionally inside one top folder) or an official CIFAR-10 or CIFAR-100 python archive "
            f"({folders}); found e.g. {example}"
        )
    if len(complete) > 1:
        raise DataError(
            f"{where} holds several image-folder datasets (top folders {sorted(complete)}); give one of them"
        )
    ((root, splits),) = complete.items()
    dotted = sorted({cls for split in splits.values() for cls in split if cls.startswith("..")})
    if dotted:  # `...`, `..a`: hidden on Unix, and `..` reads as the folder above; never dropped unseen
        raise DataError(
            f"{where}: class folder name(s) {dotted} start with '..'; such names are hidden on Unix "
            "and read as the folder above in paths, so they are refused rather than dropped: rename "
            "the folder(s) under train/ and test/ (e.g. `dots`)"
        )
    classes = sorted(splits["train"])
    unknown = sorted(set(splits["test"]) - set(classes))
    if unknown:
        raise DataError(
            f"{where}: test class(es) {unknown} have no training images; every test class needs a "
            f"train/<class>/ folder (training classes: {classes})"
        )
    for split in splits.values():
        for files in split.values():
            files.sort()
    return ImageFolderLayout(root, classes, splits, skipped)


def check_labels(labels: str, kinds: Collection[str], where: str, what: str) -> None:
    """Refuse a `labels:` setting that the source cannot give (DataError naming the setting and the fix).

    kinds: the label kinds the source has; what: the source's layout in words ("an image folder").
    """
    if labels in kinds:
        return
    if labels not in LABEL_KINDS:
        raise DataError(f"labels: {labels!r} is not a kind of label; use one of {list(LABEL_KINDS)}")
    raise DataError(
        f"labels: {labels} needs the official CIFAR-100 python archive (its {labels}_labels), and {where} "
        f"is {what}, which has the labels {list(kinds)}: set labels: fine (or leave labels out), or point "
        "the dataset's source at CIFAR-100 (source: cifar100)"
    )


# --- Sizes: what the workflow plans with, before anything is downloaded ---------------------


def source_sizes(source: str, labels: str = "fine", cache: str | Path | None = None) -> dict[str, int] | None:
    """{"train": images, "test": images, "classes": n} of a source, from its listing alone, or None.

    No image is decoded and no pickle read: a built-in dataset's URL has its published sizes; a
    local folder or archive is listed: an image folder's files are counted per split and class, an
    official CIFAR python archive is known from its layout (50,000 / 10,000 images; 10, 100 or,
    with labels "coarse", 20 classes). None when that cannot be known before downloading: an
    http(s) URL that is not built in, `synthetic` (its settings give its sizes), a path that does
    not exist (yet). A source that `prepare` would refuse (no layout, a damaged archive, `labels`
    it does not have) raises the DataError `prepare` would give.

    cache: a JSON file keeping an archive's sizes under its path, size and mtime, so that an
    unchanged archive costs one stat: listing a .tar.gz decompresses all of it, and even a zip's
    table of contents of 60,000 images takes 0.3-0.6 s to read and sort into classes.
    """
    if source == "synthetic":
        return None
    path = local_path(source)
    if path is None:
        builtin = next((name for name, b in BUILTIN.items() if b.source == source), None)
        return None if builtin is None else _pick(_builtin_summary(builtin), labels, source)
    if not path.exists():
        return None
    if path.is_dir():
        names = [name for name, _ in walk_folder(path)[0]]
        return _pick(_summary(names, str(path)), labels, str(path))
    return _pick(_archive_summary(path, cache), labels, str(path))


def _builtin_summary(name: str) -> dict:
    """The summary (see _summary) of a built-in dataset's official archive: its published sizes."""
    builtin = BUILTIN[name]
    (layout,) = (layout for layout in CIFAR_LAYOUTS if layout.dataset == name)
    return {
        "train": builtin.train_images,
        "test": builtin.test_images,
        "classes": builtin.classes,
        "kind": f"the {layout.title} python archive",
    }


def _summary(names: list[str], where: str) -> dict:
    """{"train", "test", "classes": {label kind: n}, "kind": the layout in words} of a source's files."""
    found = find_cifar_python(names, where)
    if found is not None:
        return _builtin_summary(found[0].dataset)
    layout = image_folder_layout(names, where)
    return {
        **{split: sum(map(len, layout.splits[split].values())) for split in ("train", "test")},
        "classes": {"fine": len(layout.classes)},
        "kind": "an image folder",
    }


def _archive_summary(path: Path, cache: str | Path | None) -> dict:
    where = os.path.abspath(path)
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    saved = _read_cache(cache)
    if saved.get("source") == where and saved.get("stamp") == stamp:
        return saved["summary"]
    try:
        if zipfile.is_zipfile(path):  # the central directory: read without decompressing
            with zipfile.ZipFile(path) as zf:
                names = [info.filename for info in zf.infolist() if not info.is_dir()]
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as tar:
                names = [member.name for member in tar.getmembers() if member.isfile()]
        elif path.name.lower().endswith(
            (".zip", ".tar", ".tar.gz", ".tgz")
        ):  # as cifarlab.data.archives.Archive
            raise zipfile.BadZipFile("its table of contents is missing or unreadable")
        else:
            raise DataError(f"{path} is neither a folder, a zip nor a tar(.gz) archive")
    except ARCHIVE_ERRORS as error:
        raise DataError(damaged(str(path), error)) from None
    summary = _summary(names, str(path))
    if cache is not None:
        write_json({"source": where, "stamp": stamp, "summary": summary}, cache, indent=None)
    return summary


def _pick(summary: dict, labels: str, where: str) -> dict[str, int]:
    check_labels(labels, summary["classes"], where, summary["kind"])
    return {"train": summary["train"], "test": summary["test"], "classes": summary["classes"][labels]}
