"""Each step's code, pinned: the cifarlab modules that each rule's code digest covers, written out.

tests/code_closures.yaml lists, per script of scripts/ (the `code` param of its rules), per figure
(its plot rule's `code`: scripts/plot.py and the figure's module) and per built-in model family
(the `model_code` param of a run's jobs), the modules whose code reruns it
(cifarlab.core.code_version.closure_modules). A new import into a step's code changes its list, so it
shows in review as a change of that file; after reviewing it, write the file again with

    PYTHONPATH=. python tests/test_code_closures.py

(in the project's root: PYTHONPATH makes it read this checkout's cifarlab).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from cifarlab.core.code_version import NOT_A_RESULT_MODULES, closure_modules
from cifarlab.models.specs import BUILTIN
from cifarlab.plots.figures import FIGURES

ROOT = Path(__file__).resolve().parent.parent
PINNED = Path(__file__).with_name("code_closures.yaml")
REGENERATE = f"PYTHONPATH=. python {Path(__file__).relative_to(ROOT)}"


def computed_closures() -> dict[str, list[str]]:
    """{"scripts/x.py" | "figure <name>" | "model <name>": the modules its digest covers}."""
    closures = {
        f"scripts/{script.name}": closure_modules(script)
        for script in sorted((ROOT / "scripts").glob("*.py"))
    }
    for figure in FIGURES:
        closures[f"figure {figure.name}"] = closure_modules(ROOT / "scripts" / "plot.py", [figure.module])
    for name, spec in BUILTIN.items():
        closures[f"model {name}"] = closure_modules(modules=[spec.module])
    return closures


def as_yaml(closures: dict[str, list[str]]) -> str:
    lines = [
        "# The cifarlab modules whose code each rule's digest covers (tests/test_code_closures.py).",
        f"# Written by `{REGENERATE}`: review the change, then write it again.",
    ]
    for key, modules in closures.items():
        lines.append(f"{key}:")
        lines.extend(f"  - {module}" for module in modules)
    return "\n".join(lines) + "\n"


def test_each_rules_code_closure_is_the_pinned_one():
    pinned = yaml.safe_load(PINNED.read_text())
    computed = computed_closures()
    changes = []
    for key in sorted(set(pinned) | set(computed)):
        old, new = set(pinned.get(key) or []), set(computed.get(key) or [])
        if key not in computed or key not in pinned:
            changes.append(f"{key}: {'new' if key in computed else 'gone'}")
        elif old != new:
            added, removed = sorted(new - old), sorted(old - new)
            changes.append(f"{key}: now also {added or 'nothing'}; no longer {removed or 'nothing'}")
    assert not changes, (
        f"the code that these steps run is not what {PINNED.name} says:\n  "
        + "\n  ".join(changes)
        + f"\nIf that is meant (a reviewed import), write the file again: {REGENERATE}"
    )


def test_the_pinned_file_is_what_the_command_writes():
    """So that a regenerated file is the only diff an import makes (sorted, one module a line)."""
    assert PINNED.read_text() == as_yaml(yaml.safe_load(PINNED.read_text()))


def digests_of_a_copy(tree: Path, scripts: list[str]) -> dict[str, str]:
    """{script: code_digest} computed by the cifarlab of `tree` (a copy), in a fresh interpreter."""
    code = (
        "from cifarlab.core.code_version import code_digest\n"
        f"for s in {scripts!r}: print(s, code_digest({str(tree)!r} + '/scripts/' + s))"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tree, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(line.split() for line in done.stdout.splitlines())


def test_modules_that_cannot_change_a_result_are_in_no_steps_code(tmp_path):
    """Editing the code (not a message) of live_curves (TensorBoard), messages (cut values in
    error messages) or gpu_slots (which GPU a job takes) reruns nothing; editing training code
    next to them still reruns training."""
    # the set is pinned: a module added to it is a reviewed change (the cost model and the estimate
    # are tested by the rerun table's cost rows)
    assert NOT_A_RESULT_MODULES == {
        "cifarlab.core.messages",
        "cifarlab.training.live_curves",
        "cifarlab.study.estimate",
        "cifarlab.models.cost",
        "cifarlab.core.gpu_slots",
    }
    for part in ("cifarlab", "scripts"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    scripts = ["train.py", "prepare.py", "download.py"]
    before = digests_of_a_copy(tmp_path, scripts)
    for module in ("training/live_curves.py", "core/messages.py", "core/gpu_slots.py"):
        path = tmp_path / "cifarlab" / module
        path.write_text(path.read_text() + "\nA_CHANGE = 1\n\n\ndef another(x):\n    return x + 1\n")
    assert digests_of_a_copy(tmp_path, scripts) == before
    augment = tmp_path / "cifarlab" / "training" / "augment.py"
    augment.write_text(augment.read_text() + "\nA_CHANGE = 1\n")
    after = digests_of_a_copy(tmp_path, scripts)
    assert after["train.py"] != before["train.py"]
    assert after["prepare.py"] == before["prepare.py"]


if __name__ == "__main__":
    import cifarlab

    if not Path(cifarlab.__file__).resolve().is_relative_to(ROOT):
        sys.exit(f"this reads {cifarlab.__file__}, not {ROOT}'s cifarlab: run `{REGENERATE}` in {ROOT}")
    PINNED.write_text(as_yaml(computed_closures()))
    print(f"wrote {PINNED}")
