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

import sys
from pathlib import Path

import yaml

from cifarlab.core.code_version import closure_modules
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


if __name__ == "__main__":
    import cifarlab

    if not Path(cifarlab.__file__).resolve().is_relative_to(ROOT):
        sys.exit(f"this reads {cifarlab.__file__}, not {ROOT}'s cifarlab: run `{REGENERATE}` in {ROOT}")
    PINNED.write_text(as_yaml(computed_closures()))
    print(f"wrote {PINNED}")
