"""Code is an input: editing package code replans the steps that run it, judged by content.

Unit tests of cifarlab.core.code_version on a copy of the package, then Snakemake dry runs of a
finished demo study (its outputs made by benchmarks/dry_run.py's `finished_study`: empty files
marked done with `snakemake --touch`, metadata and all) whose cifarlab is a copy that the tests
edit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cifarlab
from cifarlab.core import code_version

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from dry_run import finished_study, snakemake  # noqa: E402

STUDY = ["config/demo.yaml"]


def run_python(tree: Path, code: str) -> str:
    """`code` in a fresh interpreter importing `tree`'s cifarlab (run there: Python puts the current
    folder first on its path); its stdout."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tree, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def digests(tree: Path, scripts: list[str]) -> dict[str, str]:
    """{script: code_digest} computed by `tree`'s own cifarlab."""
    code = (
        "from cifarlab.core.code_version import code_digest\n"
        f"for s in {scripts!r}: print(s, code_digest({str(tree)!r} + '/scripts/' + s))"
    )
    return dict(line.split() for line in run_python(tree, code).splitlines())


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the package and the scripts, to edit."""
    for part in ("cifarlab", "scripts"):
        shutil.copytree(ROOT / part, tmp_path / "tree" / part, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "tree"


def _step_code(script: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in code_version._closure([ROOT / "scripts" / script])}


def test_a_steps_code_is_what_its_script_imports_and_a_runs_model_or_a_figure_is_its_own():
    """cifarlab.models names its shared torch side under TYPE_CHECKING: every training step's
    code. A model family (a spec's constructor) and a figure's function are code of their own
    jobs only (the rules' `model_code` and per-figure `code`), and no step runs plotting code."""
    train = _step_code("train.py")
    assert {"cifarlab/models/build.py", "cifarlab/models/backbones.py", "cifarlab/training/loop.py"} <= train
    assert not train & {"cifarlab/models/vit.py", "cifarlab/models/lab.py", "cifarlab/models/airbench.py"}
    for step in ("download.py", "prepare.py", "train.py", "evaluate.py", "lr_find.py", "saliency.py"):
        code = _step_code(step)
        assert not code & {
            "cifarlab/plots/style.py",
            "cifarlab/plots/confusion.py",
            "cifarlab/report/write.py",
        }, step
    assert "cifarlab/plots/confusion.py" not in _step_code("plot.py")
    vit, cnn = (
        code_version.code_digest_of_modules([m]) for m in ("cifarlab.models.vit", "cifarlab.models.lab")
    )
    assert vit != cnn


def test_imports_are_followed_wherever_they_are(tree):
    """Module level, inside functions (lr_finder imports training.optim there),
    `from cifarlab.core import paths` (a module imported from its package); never into one of
    NOT_A_RESULT_MODULES (status imports the estimate, which is not followed)."""
    found = {p.name for p in code_version._closure([ROOT / "scripts" / "lr_find.py"])}
    assert {"lr_find.py", "lr_finder.py", "optim.py", "build.py", "backbones.py", "__init__.py"} <= found
    assert "write.py" not in found and "saliency.py" not in found
    figures = {p.name for p in code_version._closure([ROOT / "cifarlab" / "plots" / "figures.py"])}
    assert "paths.py" in figures  # `from cifarlab.core import paths`
    status = {p.name for p in code_version._closure([ROOT / "cifarlab" / "study" / "status.py"])}
    assert {"validate.py", "progress.py", "files.py"} <= status
    assert "estimate.py" not in status  # `from cifarlab.study import estimate`: not a result


def test_the_digest_changes_with_the_code_a_script_runs_and_only_that(tree):
    scripts = ["train.py", "lr_find.py", "prepare.py", "saliency_sample.py"]
    before = digests(tree, scripts)
    for path in tree.rglob("*.py"):  # new mtimes, same bytes
        path.touch()
    assert digests(tree, scripts) == before
    train = tree / "cifarlab" / "training" / "optim.py"  # shared by train and lr_find
    original = train.read_bytes()
    train.write_bytes(original + b"\nA_CHANGE = 1\n")
    after = digests(tree, scripts)
    assert after["train.py"] != before["train.py"] and after["lr_find.py"] != before["lr_find.py"]
    assert after["prepare.py"] == before["prepare.py"]
    assert after["saliency_sample.py"] == before["saliency_sample.py"]
    train.write_bytes(original)  # as a `git checkout` of the old version would
    assert digests(tree, scripts) == before
    prepare = tree / "scripts" / "prepare.py"
    prepare.write_text(prepare.read_text() + "\nA_CHANGE = 1\n")
    assert digests(tree, scripts)["prepare.py"] != before["prepare.py"]  # the script is code too


MODULE = '''"""A module."""

import logging

log = logging.getLogger(__name__)
KEY = "lr"


class Runner:
    """Runs."""

    def step(self, x: int) -> int:
        """One step."""
        if x < 0:
            raise ValueError(f"negative x: {x}")
        assert x < 100, "x too large"
        log.info("step %d", x)
        return x + 1
'''
# (what the edit does, old text, new text): none can change what the code computes
NO_CHANGE = [
    ("a comment", 'KEY = "lr"', 'KEY = "lr"  # the key'),
    ("the module's docstring", '"""A module."""', '"""A module, said otherwise."""'),
    ("a class's docstring", '"""Runs."""', '"""Runs, and more."""'),
    ("a function's docstring", '"""One step."""', '"""One step: x -> x + 1."""'),
    ("a docstring added", "        if x < 0:", '        """New."""\n        if x < 0:'),
    ("formatting", "return x + 1", "return (\n            x+1\n        )"),
    ("an error message", 'f"negative x: {x}"', 'f"x must be >= 0, got {x}; give a positive x"'),
    ("an assert's message", '"x too large"', 'f"x is {x}, over 100"'),
    ("a log line", '"step %d"', '"one step of %d done"'),
    ("a log line's format", '"step %d"', 'f"step {1}" + " of %d"'),
]
# ... and each of these can
CHANGES = [
    ("a constant", "return x + 1", "return x + 2"),
    ("a key", 'KEY = "lr"', 'KEY = "lr_max"'),
    ("an operator", "if x < 0:", "if x <= 0:"),
    ("a new statement", "return x + 1", "x = abs(x)\n        return x + 1"),
    ("the exception class", "raise ValueError(", "raise TypeError("),
    ("a value a log line reads", 'log.info("step %d", x)', 'log.info("step %d", x + 1)'),
]


@pytest.mark.parametrize(("what", "old", "new"), NO_CHANGE, ids=[e[0] for e in NO_CHANGE])
def test_texts_for_people_and_formatting_leave_the_canonical_source_as_it_was(what, old, new):
    assert old in MODULE
    assert code_version.canonical_source(MODULE.replace(old, new)) == code_version.canonical_source(MODULE)


@pytest.mark.parametrize(("what", "old", "new"), CHANGES, ids=[e[0] for e in CHANGES])
def test_code_that_can_change_a_result_changes_the_canonical_source(what, old, new):
    assert old in MODULE
    assert code_version.canonical_source(MODULE.replace(old, new)) != code_version.canonical_source(MODULE)


def test_strings_that_are_data_count():
    """A dict key, a path pattern, a parsed format (an epoch line is returned, then logged), a
    print's `file=`: only the string arguments of message calls are texts for people."""
    data = [
        ("x = {'lr': 1}", "x = {'lr_max': 1}"),
        ("PATH = 'results/{run}/model.pt'", "PATH = 'results/{run}/weights.pt'"),
        ("def line(e):\n    return f'train epoch {e}'", "def line(e):\n    return f'train ep {e}'"),
        ("log.info(line(3))", "log.info(line(4))"),
        ("print('a', file=out)", "print('a', file=err)"),
        ("catalog.info('a')", "catalog.info('b')"),  # not a logger
        ("raise Stop from ValueError('a')", "raise Stop from ValueError('b')"),  # a cause is an object
    ]
    for old, new in data:
        assert code_version.canonical_source(old) != code_version.canonical_source(new), old


def test_the_package_digest_ignores_formatting_and_messages_and_sees_code(tree):
    """Through the files of a copy of the package: ruff-format-like reflowing, a comment, a
    docstring and an error message in train.py leave train's digest; a constant changes it."""
    scripts = ["train.py", "prepare.py"]
    before = digests(tree, scripts)
    train = tree / "cifarlab" / "training" / "loop.py"
    original = train.read_text()
    docstring = original.index('"""') + 3
    edited = original[:docstring] + "Said otherwise. " + original[docstring:] + "\n# a comment\n"
    edited = edited.replace("raise ", "raise  ", 1)  # formatting
    message = re.search(r'raise \w+\(\s*f?"([^"]+)"', original)
    assert message is not None
    edited = edited.replace(message.group(1), "a message said otherwise", 1)
    train.write_text(edited)
    assert digests(tree, scripts) == before
    train.write_text(original.replace("import ", "import  ", 1) + "\nNEW_CONSTANT = 1\n")
    after = digests(tree, scripts)
    assert after["train.py"] != before["train.py"] and after["prepare.py"] == before["prepare.py"]


def test_the_digest_does_not_depend_on_where_the_project_is(tree, tmp_path):
    elsewhere = tmp_path / "clone"
    shutil.copytree(tree, elsewhere)
    assert digests(tree, ["train.py"]) == digests(elsewhere, ["train.py"])


def test_digest_of_modules_for_a_rule_that_runs_part_of_the_package():
    evaluate = code_version.code_digest_of_modules(["cifarlab.training.evaluate"])
    assert evaluate == code_version.code_digest_of_modules(
        ["cifarlab.training.evaluate", "cifarlab.training.evaluate"]
    )
    assert evaluate != code_version.code_digest_of_modules(["cifarlab.analysis.lr_finder"])
    with pytest.raises(ValueError, match="'cifarlab.nothing' is not a module of cifarlab"):
        code_version.code_digest_of_modules(["cifarlab.nothing"])


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_version_names_the_commit_and_whether_the_tree_was_dirty(tree):
    version = "from cifarlab.core.code_version import code_version; print(code_version())"
    outside = {"commit": None, "dirty": None, "package_version": cifarlab.__version__}
    assert run_python(tree, version) == str(outside)  # not a git checkout
    git(tree, "init", "-q")
    (tree / ".gitignore").write_text("__pycache__/\n")  # as the project's own
    git(tree, "add", ".gitignore", "cifarlab", "scripts")
    git(tree, "commit", "-qm", "the code")
    head = git(tree, "rev-parse", "HEAD")
    clean = {"commit": head, "dirty": False, "package_version": cifarlab.__version__}
    assert run_python(tree, version) == str(clean)
    (tree / "cifarlab" / "training" / "loop.py").write_text("# edited\n")
    assert run_python(tree, version) == str({**clean, "dirty": True})


# --- Through Snakemake --------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """(tree: a copy of the project whose cifarlab the tests edit, project: its finished demo study)."""
    tree = tmp_path_factory.mktemp("tree")
    for part in ("cifarlab", "Snakefile", "workflow", "scripts", "config", "profiles", "environment.yaml"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tree / part)
    project = tmp_path_factory.mktemp("project")
    finished_study(tree, project, STUDY, [])
    return tree, project


def dry_run(tree: Path, project: Path) -> list[str]:
    """The lines a dry run of the report prints."""
    done = snakemake(tree, project, ["-n", "--cores", "1", "report", "--configfile", *STUDY])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return (done.stdout + done.stderr).splitlines()


def planned(tree: Path, project: Path) -> set[str]:
    """The rules a dry run of the report plans ("rule train:" / "localrule report:" lines)."""
    lines = dry_run(tree, project)
    return {line.split()[-1].rstrip(":") for line in lines if line.startswith(("rule ", "localrule "))}


def planned_outputs(tree: Path, project: Path) -> set[str]:
    """The files a dry run of the report would write (its jobs' "output:" lines)."""
    outputs = (line.split(":", 1)[1] for line in dry_run(tree, project) if line.strip().startswith("output:"))
    return {f.strip() for files in outputs for f in files.split(", ")}


@contextlib.contextmanager
def edited(path: Path) -> Iterator[None]:
    """`path` with a statement appended; afterwards the old bytes are back (a new mtime, same content)."""
    original = path.read_bytes()
    path.write_bytes(original + b"\n_EDITED = True\n")
    try:
        yield
    finally:
        path.write_bytes(original)


@pytest.mark.slow
def test_a_finished_study_plans_nothing_and_touching_its_code_changes_nothing(study):
    tree, project = study
    assert planned(tree, project) == set()
    for path in [*(tree / "cifarlab").rglob("*.py"), *(project / "scripts").glob("*.py")]:
        path.touch()
    assert planned(tree, project) == set()


@pytest.mark.slow
def test_editing_the_training_module_plans_train_and_what_follows(study):
    tree, project = study
    with edited(tree / "cifarlab" / "training" / "loop.py"):
        plan = planned(tree, project)
    assert {"train", "evaluate", "report"} <= plan, plan
    assert not plan & {"download", "prepare", "saliency_sample"}, plan  # upstream: not its code
    assert planned(tree, project) == set()  # the old content back: nothing to redo


@pytest.mark.slow
def test_editing_one_model_family_retrains_its_runs_only(study):
    """models/vit.py is the ViT runs' code (their spec's constructor), not the CNNs'."""
    tree, project = study
    with edited(tree / "cifarlab" / "models" / "vit.py"):
        outputs = planned_outputs(tree, project)
    # results/<dataset>/runs/<run>/seed<seed>/model.pt
    trained = {f.split("/")[3] for f in outputs if f.split("/")[2:3] == ["runs"] and f.endswith("/model.pt")}
    assert trained == {"vit", "vit_recipe"}, sorted(outputs)


@pytest.mark.slow
def test_editing_the_evaluation_module_re_evaluates_without_retraining(study):
    tree, project = study
    with edited(tree / "cifarlab" / "training" / "evaluate.py"):
        plan = planned(tree, project)
    assert {"evaluate", "report"} <= plan and not plan & {"train", "lr_find", "prepare", "download"}, plan


@pytest.mark.slow
def test_editing_the_report_code_plans_report_jobs_only(study):
    tree, project = study
    with edited(tree / "cifarlab" / "report" / "write.py"):
        plan = planned(tree, project)
    assert "report" in plan and all(rule == "report" or rule.startswith("plot_") for rule in plan), plan
