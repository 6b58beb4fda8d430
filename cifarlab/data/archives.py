"""Reading a dataset's archive safely, never extracting it: the regular files of a folder, zip or
tar(.gz) by name, each entry checked (no `..`, absolute paths, links or devices) and its declared size
bounded; and the image-folder layout of its names, with the notes `prepare` logs.

Shared by fetching (cifarlab.data.fetch checks a folder before packing it) and preparing
(cifarlab.data.prepare reads the archive): neither imports the other.
"""

from __future__ import annotations

import logging
import stat
import tarfile
import zipfile
from pathlib import Path

from cifarlab.data.sources import (
    ARCHIVE_ERRORS,
    DataError,
    damaged,
    image_folder_layout,
    is_junk,
    walk_folder,
)

log = logging.getLogger(__name__)

# The largest file an archive may declare: each member is read whole into memory, and a zip or
# .tar.gz of a few kilobytes can declare gigabytes. The largest official member (CIFAR-100's
# `train` batch) is 155 MB.
MAX_MEMBER_BYTES = 1 << 30


def check_member_size(entry: str, size: int) -> None:
    """Refuse a file of a source (`entry`, as messages name it) that declares more than
    MAX_MEMBER_BYTES: it would be read whole into memory."""
    if size > MAX_MEMBER_BYTES:
        raise DataError(
            f"{entry} declares {size:,} bytes, more than the limit of {MAX_MEMBER_BYTES:,} "
            "(cifarlab.data.archives.MAX_MEMBER_BYTES) for one file of a dataset: refusing the source "
            "before reading it (an archive bomb, or not a dataset of small images). Remove that file "
            "from the archive, or raise cifarlab.data.archives.MAX_MEMBER_BYTES"
        )


class UnsafeArchiveError(DataError):
    """An archive entry would land outside the target folder (`..`, absolute path, link, device)."""


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
            for name, info in listed:  # a folder is checked as an archive is (walk_folder's stat)
                self._check_size(name, info.st_size)
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
        check_member_size(self.entry(name), size)

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
