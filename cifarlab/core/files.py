"""Writing outputs atomically: a failed or killed step never leaves a half-written file.

Every step writes through `atomic_path`, so that a file under results/ is either complete or
absent, and Snakemake never mistakes a partial output for a result.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp file in `path`'s folder, renamed onto `path` only if the block succeeds.

    The temp file lives next to the target so the rename is atomic (same filesystem); on any
    error it is deleted. Its suffix is `.part`: writers that infer a format from the file name
    (matplotlib) must be told the format. The finished file gets the permissions of a plain
    `open(path, "w")` (0666 less the umask), not mkstemp's private 0600, so a group that shares
    results/ on a cluster can read them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(obj: Any, path: str | Path, *, strict: bool = False, indent: int = 2) -> None:
    """JSON to `path`, atomically. strict: refuse NaN/inf (they are not JSON) instead of writing them."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, allow_nan=not strict) + "\n")


def write_text(text: str, path: str | Path) -> None:
    """Text to `path`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_torch(obj: Any, path: str | Path) -> None:
    """torch.save to `path`, atomically: a kill mid-write never leaves a truncated tensor file.

    A write that fails for want of space (torch reports it as `unexpected pos N vs M`) raises
    OSError(ENOSPC) naming the file, the free space and the folder to clear.
    """
    import torch  # here, not at the top: the plotting and report steps write files without torch

    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "unexpected pos" not in str(error):
            raise
        if isinstance(error, OSError) and error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        folder = Path(path).parent
        free = shutil.disk_usage(folder).free / 2**20
        raise OSError(
            errno.ENOSPC,
            f"could not write {path}: the disk (or this process's file-size or quota limit) is full, "
            f"{free:.0f} MiB free in {folder}; nothing was kept. Free space in {folder} and rerun",
        ) from None


class DamagedFileError(OSError):
    """A file a step reads is incomplete or corrupt; the message names it, what it is and the fix."""


# What a torch file of this study is, by a folder or name in its path (cifarlab.core.paths).
_KINDS = (
    ("checkpoints", "a training checkpoint"),
    ("features", "cached features"),
    ("saliency", "saliency maps"),
    ("model.pt", "a trained model"),
    ("data", "prepared data"),
)


def torch_file_kind(path: str | Path) -> str:
    """What the torch file at `path` holds, in words: 'prepared data', 'a trained model', ..."""
    parts = Path(path).parts
    return next((kind for key, kind in _KINDS if key in parts), "a file this study wrote")


def load_torch(path: str | Path, **kwargs: Any) -> Any:
    """torch.load of a file this study wrote (tensors and plain types only), on the CPU.

    The one reader of the study's torch files. A truncated or corrupt file raises
    DamagedFileError naming it, what it is and the fix, without torch's own text (which speaks of
    "your checkpoint file" whatever the file holds); that text goes to the step's log.
    """
    import torch

    kwargs = {"map_location": "cpu", "weights_only": True, **kwargs}
    try:
        return torch.load(path, **kwargs)
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError) as error:
        logging.getLogger(__name__).info("torch could not read %s: %s: %s", path, type(error).__name__, error)
        raise DamagedFileError(
            f"{path} ({torch_file_kind(path)}) is incomplete or damaged: it cannot be read as a torch "
            "file. A step was killed while writing it, or the disk filled: delete it and rerun "
            "(Snakemake makes it again)"
        ) from None
