"""The rerun table: on a finished study, each one-line edit plans exactly the jobs that run that code.

Issue 21's table through Snakemake: a finished demo study (config/demo.yaml on a small image
folder zipped as a local `data_source`, its outputs made by benchmarks/dry_run.py's
`finished_study`: empty files marked done with `snakemake --touch`) whose cifarlab is a copy that
each row edits, then puts back. `snakemake -n` must plan nothing for edits that cannot change a
result, and exactly the named steps for those that can.

The edits are ONE table, EDITS. A row names its file by a module name (found with
cifarlab.core.code_version.module_file, so a module map of moved modules rewrites only the names) or
by a project path, a line to find in it (a regex, e.g. `^def train_run\\b`), and the edit.
Rows marked NEEDS_SPLIT expect the outcome issue 21 asks for, which needs the package's layout
split (a model's colour and cost out of its spec, the training loop out of `features`' code, a
figure's function in a module of its own, fetching apart from decoding): remove the mark once
it holds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_data import make_image_folder, zip_folder

from cifarlab.core.code_version import module_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from dry_run import finished_study, snakemake  # noqa: E402

STUDY = ["config/demo.yaml"]
NEEDS_SPLIT = pytest.mark.xfail(strict=True, reason="needs the i21layout split")
NOTHING = frozenset()
FIGURES_AND_REPORT = "plot_* and report"  # `only`: the report and some plot rules


@dataclass(frozen=True)
class Edit:
    where: str  # a module (cifarlab.x.y) or a project path (workflow/report/x.rst)
    line: str  # regex of the line the edit is at (re.M)
    how: str  # comment, docstring, reformat, text (of the line's first string), statement, replace
    old: str = ""  # for replace: in the line
    new: str = ""


@dataclass(frozen=True)
class Expect:
    only: frozenset | str | None = None  # the planned rules are among these (NOTHING: none)
    includes: frozenset = field(default_factory=frozenset)
    excludes: frozenset = field(default_factory=frozenset)
    trained: frozenset | None = None  # the runs whose model.pt is planned


DOWNSTREAM_OF_TRAIN = frozenset({"train", "evaluate", "report"})
UPSTREAM = frozenset({"download", "prepare"})

# (id, edit, expected): the table
EDITS = [
    (
        "comment in the training module",
        Edit("cifarlab.training.loop", r"^def train_run\b", "comment"),
        Expect(NOTHING),
    ),
    ("docstring of sources", Edit("cifarlab.data.sources", "", "docstring"), Expect(NOTHING)),
    ("docstring of paths", Edit("cifarlab.core.paths", "", "docstring"), Expect(NOTHING)),
    ("docstring of config", Edit("cifarlab.config.validate", "", "docstring"), Expect(NOTHING)),
    ("ruff format of the training module", Edit("cifarlab.training.loop", "", "reformat"), Expect(NOTHING)),
    (
        "a log line's text",
        # the divergence message: a log.error argument, text only people read
        Edit("cifarlab.training.loop", r'^\s+"%s diverged in epoch', "text"),
        Expect(NOTHING),
    ),
    (
        "an error message's text",
        Edit("cifarlab.data.prepare", r"raise DataError\(f?\"", "text"),
        Expect(NOTHING),
    ),
    (
        "the cost estimate",
        Edit("cifarlab.study.estimate", r"^def ", "statement"),
        # The report states the time more seeds would take from the estimate, advice and not a
        # result: the estimate is one of code_version.NOT_A_RESULT_MODULES, so nothing reruns.
        Expect(NOTHING),
    ),
    ("the status command", Edit("cifarlab.study.status", r"^def ", "statement"), Expect(NOTHING)),
    (
        "a model's cost",
        Edit("cifarlab.models.cost", r'"vit": ModelCost\(\(2\.0, 30\.0\)', "replace", "2.0", "2.5"),
        # as the estimate above: no result depends on the cost model
        Expect(NOTHING),
    ),
    (
        "a model's colour",
        Edit("cifarlab.models.style", r"#CC79A7", "replace", "#CC79A7", "#CC79A8"),
        Expect(FIGURES_AND_REPORT, includes=frozenset({"report"})),
    ),
    (
        "a caption",
        Edit("workflow/report/accuracy_vs_params.rst", r"\S", "replace", "", ""),
        Expect(FIGURES_AND_REPORT, includes=frozenset({"report"})),
    ),
    (
        "the training loop",
        Edit("cifarlab.training.loop", r"^def train_one_epoch\b", "statement"),
        Expect(includes=DOWNSTREAM_OF_TRAIN, excludes=UPSTREAM | {"features"}),
    ),
    (
        "augmentation",
        Edit("cifarlab.training.augment", r"^def crop_flip\b", "statement"),
        Expect(includes=DOWNSTREAM_OF_TRAIN, excludes=UPSTREAM | {"features"}),
    ),
    (
        "a model family",
        Edit("cifarlab.models.vit", r"^def ", "statement"),
        Expect(excludes=UPSTREAM | {"features"}, trained=frozenset({"vit", "vit_recipe"})),
    ),
    (
        "evaluation",
        Edit("cifarlab.training.evaluate", r"^def ", "statement"),
        Expect(
            includes=frozenset({"evaluate", "report"}), excludes=UPSTREAM | {"train", "lr_find", "features"}
        ),
    ),
    (
        "decoding images",
        Edit("cifarlab.data.prepare", r"^def decode_image\b", "statement"),
        # download runs cifarlab.data.fetch, which imports nothing of cifarlab.data.prepare
        Expect(includes=frozenset({"prepare"}) | DOWNSTREAM_OF_TRAIN, excludes=frozenset({"download"})),
    ),
    pytest.param(
        "a figure's function",
        Edit("cifarlab.plots.confusion", r"^def plot_confusion\b", "statement"),
        Expect(frozenset({"plot_confusion", "report"}), includes=frozenset({"plot_confusion", "report"})),
    ),
]


def edited_text(text: str, edit: Edit, path: Path) -> str:
    """`text` with `edit` made (a file's whole text)."""
    if edit.how == "docstring":
        at = text.index('"""') + 3
        return text[:at] + "Said otherwise. " + text[at:]
    if edit.how == "reformat":  # ruff's formatter at another line length: every long line moves
        done = subprocess.run(
            [sys.executable, "-m", "ruff", "format", "--line-length", "60", "--stdin-filename", str(path),
             "-"],  # the venv's ruff, on PATH or not
            input=text, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert done.stdout != text
        return done.stdout
    match = re.search(edit.line, text, re.M)
    assert match is not None, f"{path}: no line matches {edit.line!r}: the table needs updating"
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    line = text[start:end]
    if edit.how == "comment":
        return text[:start] + "# a comment about what follows\n" + text[start:]
    if edit.how == "statement":  # module level, before the found line: code of that module
        return text[:start] + "_EDITED = 1\n\n\n" + text[start:]
    if edit.how == "text":
        quote = re.search(r"f?\"", line)
        assert quote is not None, line
        cut = start + quote.end()
        return text[:cut] + "said otherwise: " + text[cut:]
    if edit.how == "replace":
        if not edit.old:  # a text file: one more line
            return text + "\nOne more sentence.\n"
        assert edit.old in line, line
        return text[:start] + line.replace(edit.old, edit.new, 1) + text[end:]
    raise ValueError(edit.how)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """{"tree": a copy of the project whose cifarlab is edited, "project": its finished demo study,
    "data": the local source (an image folder zipped), "config": Snakemake's --config}."""
    tree = tmp_path_factory.mktemp("tree")
    for part in ("cifarlab", "Snakefile", "workflow", "scripts", "config", "profiles", "environment.yaml"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tree / part)
    data_dir = tmp_path_factory.mktemp("data")
    data = zip_folder(make_image_folder(data_dir / "images"), data_dir / "shapes.zip")
    project = tmp_path_factory.mktemp("project")
    finished_study(tree, project, STUDY, [f"data_source={data}"])
    return {"tree": tree, "project": project, "data": data}


def dry_run(study: dict, data: Path | None = None) -> list[str]:
    source = data or study["data"]
    args = ["-n", "--cores", "1", "report", "--configfile", *STUDY, "--config", f"data_source={source}"]
    done = snakemake(study["tree"], study["project"], args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return (done.stdout + done.stderr).splitlines()


def rules_of(lines: list[str]) -> set[str]:
    return {line.split()[-1].rstrip(":") for line in lines if line.startswith(("rule ", "localrule "))}


def trained_runs(lines: list[str]) -> set[str]:
    """The runs whose results/<dataset>/runs/<run>/seed<seed>/model.pt a dry run plans."""
    outputs = (line.split(":", 1)[1] for line in lines if line.strip().startswith("output:"))
    files = [f.strip() for files in outputs for f in files.split(", ")]
    return {f.split("/")[3] for f in files if f.split("/")[2:3] == ["runs"] and f.endswith("/model.pt")}


def file_of(study: dict, where: str) -> Path:
    if where.startswith("cifarlab"):
        found = module_file(where)
        assert found is not None, f"no module {where}: map it to its new name"
        return study["tree"] / found.relative_to(ROOT)
    return study["project"] / where


@pytest.mark.slow
def test_a_finished_study_plans_nothing(study):
    assert rules_of(dry_run(study)) == set()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("what", "edit", "expect"), EDITS, ids=[e.values[0] if hasattr(e, "values") else e[0] for e in EDITS]
)
def test_an_edit_plans_the_jobs_that_run_that_code(study, what, edit, expect):
    path = file_of(study, edit.where)
    original = path.read_text()
    path.write_text(edited_text(original, edit, path))
    try:
        lines = dry_run(study)
    finally:
        path.write_text(original)
    plan = rules_of(lines)
    if expect.only == FIGURES_AND_REPORT:
        assert all(rule == "report" or rule.startswith("plot_") for rule in plan), (what, plan)
    elif expect.only is not None:
        assert plan <= expect.only, (what, plan)
    assert expect.includes <= plan, (what, plan)
    assert not plan & expect.excludes, (what, plan)
    if expect.trained is not None:
        assert trained_runs(lines) == expect.trained, (what, plan)


@pytest.mark.slow
def test_the_same_data_under_another_path_plans_nothing(study, tmp_path):
    moved = tmp_path / "elsewhere" / study["data"].name  # same name: the same dataset
    moved.parent.mkdir()
    shutil.copy(study["data"], moved)
    assert rules_of(dry_run(study, moved)) == set()
    link = tmp_path / "link" / study["data"].name
    link.parent.mkdir()
    link.symlink_to(study["data"])
    assert rules_of(dry_run(study, link)) == set()


@pytest.mark.slow
def test_new_bytes_of_the_data_rerun_download_prepare_and_everything(study, tmp_path):
    other = tmp_path / "other" / study["data"].name
    other.parent.mkdir()
    zip_folder(make_image_folder(tmp_path / "more", {"train": 4, "test": 2}), other)
    plan = rules_of(dry_run(study, other))
    assert {"download", "prepare", "train", "evaluate", "report"} <= plan, plan
