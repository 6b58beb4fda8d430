"""Which code made a result: the digest of the package code a step runs, and the version of the tree.

Code is an input of a step. `code_digest(script)` is the sha256 over the contents of a
Snakemake script and of every cifarlab module it imports, transitively; a rule passes it as a
param, so Snakemake's params trigger reruns the step when that code changes, and only then:
the digest is of the files' bytes, so a `git checkout` or `touch` that leaves them as they were
reruns nothing. The imports are read statically (`ast`), at module level and inside
functions, so a module imported only where it is used counts too (and those under
`if TYPE_CHECKING:`, which is how `cifarlab.models` names the modules it loads on first use).

Code that a step finds by name at run time is not followed: a model's constructor
(`ModelSpec.constructor`, "module:function") and a figure's drawing function (`Figure.draw`).
It is the code of one run or one figure, not of every job whose script imports the table that
names it, so the rules add it per job with `code_digest_of_modules` (a run's model module:
editing models/vit.py reruns the ViT runs only).

`code_version()` says which commit, whether the tree was dirty, and the package version: it is
written into results (metrics.json, the report), never a param (a new commit alone must not
rerun anything).

The workflow layer computes the digests while it plans, on every Snakemake call: this module
imports the standard library only (tests/test_workflow_imports.py checks).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path

import cifarlab

PACKAGE = "cifarlab"
PACKAGE_DIR = Path(cifarlab.__file__).resolve().parent
GIT_TIMEOUT_S = 10


def module_file(name: str) -> Path | None:
    """The source file of cifarlab module `name` (`cifarlab.x.y` -> x/y.py or x/y/__init__.py), or
    None when it is not a module of the package (a class or function imported by name)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    candidates = (base / "__init__.py", base.with_suffix(".py")) if parts[1:] else (base / "__init__.py",)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    """`cifarlab.x.y` of a file of the package (its package for an __init__.py)."""
    parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
    return ".".join((PACKAGE, *(parts[:-1] if parts[-1] == "__init__" else parts)))


@functools.cache
def _source(path: Path) -> bytes:
    return path.read_bytes()


@functools.cache
def imported_modules(path: Path) -> frozenset[str]:
    """The cifarlab modules a file imports directly, wherever the import statement is.

    `import cifarlab.x`, `from cifarlab.x import y` (and `cifarlab.x.y` when y is a module),
    `from cifarlab import x`, and relative imports inside the package; importing `cifarlab.x.y`
    runs the packages above it too, so they count.
    """
    inside = path.is_relative_to(PACKAGE_DIR)
    here = _module_name(path) if inside else None
    names: set[str] = set()
    for node in ast.walk(ast.parse(_source(path), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this file is in
                if here is None:
                    continue
                package = here if path.name == "__init__.py" else here.rpartition(".")[0]
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if module_file(prefix) is not None:
                found.add(prefix)
    return frozenset(found)


def _closure(files: Iterable[Path]) -> list[Path]:
    """The files and every cifarlab module they import, transitively, sorted."""
    seen: set[Path] = set()
    todo = [Path(f).resolve() for f in files]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(name) for name in imported_modules(path))
    return sorted(seen)


def _digest(files: list[Path], script: Path | None = None) -> str:
    """sha256 hex over (name, sha256 of content) of each file; names do not depend on where the
    project lives (a module by its dotted name, the script as `script`), so two clones agree."""
    total = hashlib.sha256()
    for path in files:
        name = "script" if path == script else _module_name(path)
        total.update(f"{name}\0{hashlib.sha256(_source(path)).hexdigest()}\n".encode())
    return total.hexdigest()


@functools.cache
def code_digest(script: str | Path) -> str:
    """sha256 hex of a script and the cifarlab modules it imports, transitively (cached per process).

    The value of a rule's `code` param (workflow/rules/*.smk): it changes when the bytes of any
    of those files change, and only then.
    """
    path = Path(script).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"code_digest: no script at {path}")
    return _digest(_closure([path]), script=path)


def code_digest_of_modules(modules: Iterable[str]) -> str:
    """sha256 hex of cifarlab modules (dotted names) and what they import, transitively: for a rule
    whose script runs only part of the package (one figure's module, say)."""
    files = []
    for name in sorted(set(modules)):
        path = module_file(name)
        if path is None:
            raise ValueError(f"code_digest_of_modules: {name!r} is not a module of {PACKAGE} ({PACKAGE_DIR})")
        files.append(path)
    return _digest(_closure(files))


def _git(root: Path, *args: str) -> str | None:
    """The output of `git -C root args`, or None where git is missing or fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(root: str | Path | None = None) -> dict:
    """{"commit": hex or None, "dirty": bool or None, "package_version": str} of the code.

    root: a folder of the git checkout the code comes from (default: the package's own folder,
    which is right wherever Snakemake's working directory is). "commit" and "dirty" are None
    where that is not a git checkout holding the package (an installed copy, no git). "dirty"
    means tracked files differ from the commit or files git does not ignore were added.
    """
    root = Path(root) if root is not None else PACKAGE_DIR
    commit = dirty = None
    # The package must be tracked there: a copy installed inside some other repository's folder
    # (a virtual environment in a project) is not that repository's code.
    tracked = _git(root, "ls-files", "--error-unmatch", "--", str(PACKAGE_DIR / "__init__.py"))
    head = _git(root, "rev-parse", "HEAD") if tracked is not None else None
    if head is not None:
        status = _git(root, "status", "--porcelain")
        commit = head.strip()
        dirty = None if status is None else bool(status.strip())
    return {"commit": commit, "dirty": dirty, "package_version": cifarlab.__version__}


def describe(version: dict) -> str:
    """One line of a code_version(): `cifarlab 0.1.0, commit 1a2b3c4d5e6f (dirty)`."""
    text = f"cifarlab {version.get('package_version')}"
    if version.get("commit"):
        text += f", commit {version['commit'][:12]}" + (" (dirty)" if version.get("dirty") else "")
    else:
        text += ", not a git checkout"
    return text
