"""The workflow layer is light: the Snakefile and the .smk files import no torch, torchvision or matplotlib.

Every Snakemake call (a dry run, each cluster job's inner Snakemake) parses them; torch alone
costs seconds to import. The modules are found by reading the import lines of the workflow
files, so a heavy import added there, or to a module they import, fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
HEAVY = ("torch", "torchvision", "matplotlib")
# Imported by a .smk file today and heavy; each entry says who makes it light. An entry that the
# workflow no longer imports fails test_pending_entries_are_still_imported: remove it then.
PENDING: dict[str, str] = {}
# `import a, b.c` and `from a.b import c, d` (parenthesised over several lines too), at any indent
IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]+)|import[ \t]+([^\n#]+))", re.M
)


def workflow_imports() -> dict[str, str]:
    """{import statement (on one line): the module it names} of the workflow files, sorted.

    The statement is what is run, not only its module: `from cifarlab.study import estimate` imports
    cifarlab.study.estimate.
    """
    found = {}
    for path in WORKFLOW_FILES:
        for module, names, plain in IMPORT.findall(path.read_text()):
            if module:
                names = ", ".join(
                    n.strip() for n in names.strip("()").replace("\n", " ").split(",") if n.strip()
                )
                found[f"from {module} import {names}"] = module
            else:
                found.update({f"import {n.strip()}": n.split(" as ")[0].strip() for n in plain.split(",")})
    return dict(sorted(found.items()))


def heavy_after_import(statement: str) -> list[str]:
    """Which of HEAVY are in sys.modules after running `statement` in a fresh interpreter."""
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_the_import_lines_are_found():
    statements = workflow_imports()
    # each form, in files that have them today
    assert {
        "import re",
        "from cifarlab.study import estimate",
        "from snakemake.utils import min_version",
    } <= set(statements)
    # common.smk's: the study's plan (its validation included) and what only Snakemake needs
    assert statements["from cifarlab.study.plan import Study, file_content"] == "cifarlab.study.plan"
    assert statements["from cifarlab.data.sources import source_fingerprint"] == "cifarlab.data.sources"
    validate = "from cifarlab.config.validate import apply_command_line_overrides, in_study_order"
    assert statements[validate] == "cifarlab.config.validate"


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(s, marks=pytest.mark.xfail(reason=PENDING[m], strict=True)) if m in PENDING else s
        for s, m in workflow_imports().items()
    ],
)
def test_what_the_workflow_imports_needs_no_torch(statement):
    assert heavy_after_import(statement) == [], f"`{statement}` imports them: the workflow must stay light"


def test_pending_entries_are_still_imported():
    stale = sorted(set(PENDING) - set(workflow_imports().values()))
    assert not stale, f"the workflow no longer imports {stale}: remove them from PENDING"


@pytest.mark.slow
@pytest.mark.xfail(reason="the PENDING modules are still imported", strict=True, condition=bool(PENDING))
def test_a_dry_run_imports_no_torch(tmp_path):
    """The whole chain as Snakemake runs it: `snakemake -n` of the demo imports none of HEAVY."""
    for part in ("Snakefile", "workflow", "scripts", "config", "profiles", "environment.yaml"):
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / part)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--cores", "1", "report"]
        + ["--configfile", "config/demo.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert [m for m in HEAVY if m in imported] == []


def test_a_simple_cnn_job_imports_no_torchvision():
    # Every torch job pays its imports (benchmarks/README.md, job start-up): torchvision (1-2 s)
    # only where a torchvision model is built. The train and evaluate modules, a simple CNN built
    # and put in training mode (set_train_mode lives beside the torchvision backbones) and a
    # frozen head's load path must not import it; building resnet18 then does.
    statement = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "import cifarlab.training.loop, cifarlab.training.evaluate, cifarlab.training.features\n"
        "from cifarlab.models import build_model, set_train_mode, load_head\n"
        "from conftest import lab_run\n"
        "model = build_model(lab_run(), 10); set_train_mode(model)"
    )
    assert heavy_after_import(statement) == ["torch"]
    resnet = f"{statement}\nbuild_model(lab_run(model='resnet18'), 10)"
    assert heavy_after_import(resnet) == ["torch", "torchvision"]
