"""Issue 21's rerun table on a finished study: each one-line edit, the jobs `snakemake -n` plans.

The edits are tests/test_rerun_table.py's EDITS (one table): this script makes each in PROJECT's
own cifarlab (a checkout whose study has finished), runs the dry run with the study's flags, puts
the file back, and prints one markdown row per edit: the jobs planned and how many train. The
last row names the data through another directory (the same bytes under a new path).

    python benchmarks/rerun_table.py PROJECT --configfile config/quick.yaml config/seeds.yaml \
        --config data_source=../shared/datasets/cifar10-jpeg.zip pretrained=false

The test asserts the outcome on the demo data; this measures it on a real study, for the notes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from dry_run import snakemake  # noqa: E402
from test_rerun_table import EDITS, edited_text  # noqa: E402


def planned(project: Path, flags: list[str]) -> tuple[int, int]:
    """(jobs planned, train jobs planned) by `snakemake -n report FLAGS` in `project`."""
    done = snakemake(project, project, ["-n", "--cores", "2", "report", *flags])
    if done.returncode != 0:
        sys.exit(f"the dry run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    text = done.stdout + done.stderr
    total = re.search(r"^total\s+(\d+)", text, re.M)
    trains = len(re.findall(r"^(?:local)?rule train:", text, re.M))
    return (int(total.group(1)) if total else 0), trains


def the_file(project: Path, where: str) -> Path:
    """A row's file in `project`: a module name (cifarlab.x.y) or a project path."""
    if where.startswith("cifarlab"):
        return project / (where.replace(".", "/") + ".py")
    return project / where


def row(what: str, counts: tuple[int, int]) -> str:
    """One markdown row: the edit, the jobs planned, the train jobs among them."""
    return f"| {what} | {counts[0]} | {counts[1]} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("project", type=Path, help="a checkout whose study has finished")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="the study's Snakemake flags")
    args = parser.parse_args()
    project = args.project.resolve()
    print("| edit | jobs planned | train jobs |\n| --- | ---: | ---: |")
    print(row("(none: the finished study)", planned(project, args.flags)))
    for entry in EDITS:
        what, edit, _ = entry.values if hasattr(entry, "values") else entry
        path = the_file(project, edit.where)
        if not path.is_file():  # a package module: cifarlab/x/__init__.py
            path = path.with_suffix("") / "__init__.py"
        original = path.read_text()
        path.write_text(edited_text(original, edit, path))
        try:
            print(row(what, planned(project, args.flags)))
        finally:
            path.write_text(original)
    source = next((f.split("=", 1)[1] for f in args.flags if f.startswith("data_source=")), None)
    if source:
        with tempfile.TemporaryDirectory() as scratch:
            moved = Path(scratch) / "elsewhere" / Path(source).name
            moved.parent.mkdir()
            shutil.copy(project / source, moved)
            flags = [f"data_source={moved}" if f.startswith("data_source=") else f for f in args.flags]
            print(row("the same data under another path", planned(project, flags)))


if __name__ == "__main__":
    main()
