"""How planning time grows with the number of runs: `snakemake -n` of the demo study plus a sweep.

    python benchmarks/planning.py TREE [TREE ...] [--runs 1000 2000 8000] [--timeout 900]

For each N, an overlay over config/demo.yaml adds one entry, `scale`, whose `lr` sweep makes N
runs (the demo's own 27 runs stay), and says `confirm_large_study: true` where the TREE knows
that key (a study above cifarlab.study.plan.LARGE_STUDY_MODELS models asks for it). Each TREE (a
checkout of this project) plans it with `snakemake -n -F --cores 1 --quiet rules all` in the
tree itself, with its own cifarlab (PYTHONPATH): nothing is written but Snakemake's .snakemake/
metadata folder. Prints one line per (N, tree): runs, planned jobs, wall and CPU seconds (the
child's), or "timeout" past --timeout seconds (Snakemake prints nothing while it builds the DAG).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

# the demo's simple CNN; the values are lrs around 1e-3, distinct in run names (`{value:g}`)
BASE_LR = 1e-3
STEP_LR = 1e-7


def overlay(runs: int, confirm: bool) -> dict:
    """The config overlay (over config/demo.yaml) that adds a sweep of `runs` runs."""
    values = [round(BASE_LR + i * STEP_LR, 10) for i in range(runs)]
    extra: dict = {"runs": {"scale": {"model": "simple_cnn", "sweep": {"lr": values}}}}
    if confirm:
        extra["confirm_large_study"] = True
    return extra


def knows_confirmation(tree: Path) -> bool:
    """Whether the tree's schema has `confirm_large_study` (trees before issue 26 do not)."""
    return "confirm_large_study:" in (tree / "cifarlab/config/config.schema.yaml").read_text()


def planned_jobs(output: str) -> int | None:
    """The `total` of the job table Snakemake prints (`--quiet rules`)."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return None


def time_plan(tree: Path, overlay_file: Path, timeout: float) -> tuple[int | None, float, float]:
    """(jobs, wall seconds, CPU seconds of the child) of one dry run; jobs None on a timeout."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = ["all", "-n", "-F", "--cores", "1", "--quiet", "rules"]
    args += ["--configfile", "config/demo.yaml", str(overlay_file)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "snakemake", *args],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - start, float("nan")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if done.returncode != 0:
        sys.exit(f"snakemake -n failed in {tree}:\n{done.stderr[-3000:]}")
    return planned_jobs(done.stdout + done.stderr), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--runs", nargs="+", type=int, default=[1000, 2000, 8000])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per dry run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print("sweep runs  tree  jobs  wall s  CPU s")
        for runs in args.runs:
            for tree in args.trees:
                tree = tree.resolve()
                path = Path(folder) / f"scale-{runs}.yaml"
                path.write_text(yaml.safe_dump(overlay(runs, knows_confirmation(tree))))
                jobs, wall, cpu = time_plan(tree, path, args.timeout)
                shown = "timeout" if jobs is None else str(jobs)
                print(f"{runs:>10}  {tree.name}  {shown}  {wall:.1f}  {cpu:.1f}", flush=True)


if __name__ == "__main__":
    main()
