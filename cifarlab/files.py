"""Writing outputs atomically: a failed or killed step never leaves a half-written file.

Every step writes through `atomic_path`, so that a file under results/ is either complete or
absent, and Snakemake never mistakes a partial output for a result.
"""

from __future__ import annotations

import contextlib
import json
import os
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
    """torch.save to `path`, atomically: a kill mid-write never leaves a truncated tensor file."""
    import torch  # here, not at the top: the plotting and report steps write files without torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
