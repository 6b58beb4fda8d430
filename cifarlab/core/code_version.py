"""Which code made a result: the digest of the package code a step runs, and the version of the tree.

Code is an input of a step. `code_digest(script)` is the sha256 over a Snakemake script and every
cifarlab module it imports, transitively; a rule passes it as a param, so Snakemake's params
trigger reruns the step when that code changes, and only then.

A file counts by its syntax tree, not its bytes (`canonical_source`): Python's `ast` of the file,
without attributes (line and column numbers), so formatting (`ruff format`), comments and blank
lines change nothing; and with the texts that only people read taken out:
- docstrings (module, class, function) and every other bare string statement;
- the message of an `assert` and the string arguments of `raise X(...)`;
- the string arguments of the calls that print for people: logging (`log.info(...)`,
  `logger.warning(...)`, `logging.getLogger(...).error(...)`: debug, info, warning, warn, error,
  exception, critical on a receiver named like a logger), `print(...)`, `warnings.warn(...)`,
  `sys.exit(...)`, and the project's progress lines (`progress.Steps(name, total, unit)`).
A "string argument" is a literal, an f-string, or a literal formatted with `%`, `+` or
`.format(...)`: it is replaced by an empty string, while the other arguments (the values a line
shows, the exception class, `file=`) still count. A string anywhere else is data and counts: a
key, a path pattern, a format that is parsed back (`progress.epoch_line` returns the epoch line
that `status` parses: a return value, not a logging call's argument), a message built by a helper
function (its body counts). So the data files of the project are written through
`cifarlab.core.files`, never with `print(..., file=...)`. The tree is Python's, so a new Python whose
`ast` has new fields changes every digest once (a new interpreter is a new environment anyway).

The imports are read from the same tree, at module level and inside functions, so a module
imported only where it is used counts too (and those under `if TYPE_CHECKING:`, which is how
`cifarlab.models` names the modules it loads on first use).

A few modules are not followed either (NOT_A_RESULT_MODULES): those that only write side outputs
or message text, so that an edit to them reruns nothing. They are skipped where an import names
them, never where a rule names them itself.

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
from typing import NamedTuple

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


# --- What counts of a file: its syntax tree, less the texts for people -----------------------

# Methods that write a log line, on a receiver named like a logger (`log`, `logger`, `logging`,
# `progress.log`, `logging.getLogger(...)`): their string arguments are texts for people.
LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical"})
# Calls by name whose string arguments are texts for people: the terminal (print), a warning, an
# exit message and the project's progress lines (cifarlab.core.progress.Steps: name, unit).
MESSAGE_CALLS = frozenset({"print", "warn", "exit", "Steps"})
# The receivers of MESSAGE_CALLS called as methods (`warnings.warn`, `sys.exit`, `progress.Steps`).
MESSAGE_MODULES = frozenset({"warnings", "sys", "progress"})


def _name(node: ast.expr) -> str | None:
    """The last name of `a.b.c` or `c` (None for any other expression)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_logger(node: ast.expr) -> bool:
    """Whether `node` names a logger: `log`, `logger`, `logging`, `progress.log`, `getLogger(...)`."""
    if isinstance(node, ast.Call):
        return _name(node.func) == "getLogger"
    name = (_name(node) or "").lower()
    return name in ("log", "logger", "logging") or name.endswith(("_log", "_logger"))


def _prints_for_people(call: ast.Call) -> bool:
    """Whether `call` writes a message only: a logging call, print, warnings.warn, sys.exit, Steps."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in MESSAGE_CALLS
    if isinstance(func, ast.Attribute):
        if func.attr in LOG_METHODS and _is_logger(func.value):
            return True
        return func.attr in MESSAGE_CALLS and _name(func.value) in MESSAGE_MODULES
    return False


def _is_text(node: ast.expr | None) -> bool:
    """A literal string, an f-string, or one formatted with `%`, `+` or `.format(...)`."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return _is_text(node.left)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _is_text(node.func.value)
    return False


def _blank_texts(args: list[ast.expr]) -> list[ast.expr]:
    """`args` with each text (_is_text) replaced by an empty string literal."""
    return [ast.Constant(value="") if _is_text(arg) else arg for arg in args]


class _LessTextsForPeople(ast.NodeTransformer):
    """Takes docstrings, bare strings and message texts out of a tree (see the module's docstring),
    and notes the module names its import statements name, wherever they are (`names`; relative
    imports resolved from `here`, the file's module): one pass over the tree does both.
    """

    def __init__(self, here: str | None = None, package_file: bool = False) -> None:
        self.here, self.package_file, self.names = here, package_file, set[str]()

    def visit_Import(self, node: ast.Import) -> ast.AST:
        self.names.update(alias.name for alias in node.names)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level:  # relative: from the package this file is in
            if self.here is None:
                return node
            package = self.here if self.package_file else self.here.rpartition(".")[0]
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        self.names.add(module)
        self.names.update(f"{module}.{alias.name}" for alias in node.names)
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None  # a docstring, or a string statement used as a comment
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if _prints_for_people(node):
            node.args = _blank_texts(node.args)
        return node

    def visit_Raise(self, node: ast.Raise) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.exc, ast.Call):
            node.exc.args = _blank_texts(node.exc.args)
        return node

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        self.generic_visit(node)
        if _is_text(node.msg):
            node.msg = None
        return node


def canonical_source(source: str | bytes, filename: str = "<code>") -> str:
    """What of a Python file counts for the code digest: `ast.dump` (no line numbers) of its tree
    without docstrings and message texts (the rule: this module's docstring)."""
    return _canonical(ast.parse(source, filename=filename))


def _canonical(tree: ast.Module, reader: _LessTextsForPeople | None = None) -> str:
    """canonical_source of a parsed file (the tree is changed in place; `reader` notes its imports)."""
    reader = reader or _LessTextsForPeople()
    return ast.dump(reader.visit(tree), annotate_fields=True, include_attributes=False)


class _File(NamedTuple):
    imports: frozenset[str]  # the names an import statement of the file names (not yet resolved)
    canonical_sha256: str  # sha256 hex of canonical_source


@functools.cache
def _read(path: Path) -> _File:
    """A file parsed once: the module names its import statements name, and its canonical digest."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    here = _module_name(path) if path.is_relative_to(PACKAGE_DIR) else None
    reader = _LessTextsForPeople(here, path.name == "__init__.py")
    canonical = _canonical(tree, reader)
    return _File(frozenset(reader.names), hashlib.sha256(canonical.encode()).hexdigest())


@functools.cache
def imported_modules(path: Path) -> frozenset[str]:
    """The cifarlab modules a file imports directly, wherever the import statement is.

    `import cifarlab.x`, `from cifarlab.x import y` (and `cifarlab.x.y` when y is a module),
    `from cifarlab import x`, and relative imports inside the package; importing `cifarlab.x.y`
    runs the packages above it too, so they count.
    """
    found = set()
    for name in _read(path).imports:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if module_file(prefix) is not None:
                found.add(prefix)
    return frozenset(found)


# Modules whose code cannot change a result, so importing them does not make them part of a step's
# code: the closure walk does not follow an import of one (nor what it imports in turn). The rule for
# adding one: it only writes side outputs (files no rule declares and no result is read from) or
# the text of messages, and returns nothing that a result depends on. Never a module that computes,
# reads or writes a value that a step's outputs hold; when in doubt, leave it out (an unneeded
# rerun costs time, a missed one gives a wrong result).
NOT_A_RESULT_MODULES = frozenset(
    {
        # Cuts long values short in error messages (a config error's text); nothing else uses it.
        "cifarlab.core.messages",
        # Writes the live TensorBoard curves of a training, a side output no rule reads; a failure
        # there is a warning, never a stopped training (the module's promise).
        "cifarlab.training.live_curves",
        # The cost model and the time estimate built on it: the report states from them how long
        # more seeds would take, advice that also depends on this machine's calibration file (not
        # an input either); no measured number comes from them. A cost edit shows in the report
        # when it is next written, and reruns nothing (issue 21's table).
        "cifarlab.study.estimate",
        "cifarlab.models.cost",
        # Which of a machine's GPUs a local job takes (a lock file per GPU) and the GPU count the
        # workflow plans with: where a job runs, never what it computes.
        "cifarlab.core.gpu_slots",
    }
)


def _closure(files: Iterable[Path]) -> list[Path]:
    """The files and every cifarlab module they import, transitively, sorted; an import of one of
    NOT_A_RESULT_MODULES is not followed (the files given are always kept)."""
    seen: set[Path] = set()
    todo = [Path(f).resolve() for f in files]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(name) for name in imported_modules(path) if name not in NOT_A_RESULT_MODULES)
    return sorted(seen)


def _digest(files: list[Path], script: Path | None = None) -> str:
    """sha256 hex over (name, sha256 of canonical_source) of each file; names do not depend on where
    the project lives (a module by its dotted name, the script as `script`), so two clones agree."""
    total = hashlib.sha256()
    for path in files:
        name = "script" if path == script else _module_name(path)
        total.update(f"{name}\0{_read(path).canonical_sha256}\n".encode())
    return total.hexdigest()


@functools.cache
def code_digest(script: str | Path) -> str:
    """sha256 hex of a script and the cifarlab modules it imports, transitively (cached per process).

    The value of a rule's `code` param (workflow/rules/*.smk): it changes when the canonical
    source (syntax tree less docstrings and message texts) of any of those files changes, and
    only then.
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


def closure_modules(script: str | Path | None = None, modules: Iterable[str] = ()) -> list[str]:
    """The cifarlab modules (dotted names, sorted) whose code a rule's digest covers: those of
    `code_digest(script)`, of `code_digest_of_modules(modules)`, or of both (a plot rule's `code`
    is both). The script itself is not named. tests/code_closures.yaml pins them per rule.
    """
    files = [Path(script).resolve()] if script is not None else []
    for name in modules:
        path = module_file(name)
        if path is None:
            raise ValueError(f"closure_modules: {name!r} is not a module of {PACKAGE} ({PACKAGE_DIR})")
        files.append(path)
    return sorted(_module_name(path) for path in _closure(files) if path.is_relative_to(PACKAGE_DIR))


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
