"""Start-up of the torch jobs: the import of each step's module in a fresh Python, for one or two trees.

    python benchmarks/startup.py TREE [TREE_B] [--repeats 5] [--modules cifarlab.training.loop ...]

Every Snakemake job of a torch step (train, evaluate, features, saliency, lr_find) starts a new
Python that imports its step module before doing any work; with about 70 of a study's 111 torch
jobs taking seconds, that import is a large part of their cost. For each module and tree, a fresh
`python -c "import MODULE"` runs with the tree's `cifarlab` first on PYTHONPATH, --repeats times,
the trees alternating (A, B, A, B, ...) so that a change of machine load hits both alike. Prints
the median wall and CPU seconds (user + system of the child), whether torchvision was imported,
and B / A of both (on a loaded machine compare the CPU). A job's device start-up (CUDA's
context, a few seconds on a GPU) comes on top and is not measured here (no GPU on the
development machine).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODULES = (
    "cifarlab.training.loop",  # train
    "cifarlab.training.evaluate",  # evaluate
    "cifarlab.training.features",  # features
    "cifarlab.analysis.lr_finder",  # lr_find
)
PROBE = "import sys, {module}; print('torchvision' in sys.modules)"


def one_import(tree: Path, module: str) -> tuple[float, float, bool]:
    """(wall s, CPU s of the child, torchvision imported) of `import module` in a fresh Python."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)], env=env, cwd=tree, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"import {module} failed in {tree}:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trees", nargs="+", type=Path, help="one or two checkouts of this project")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modules", nargs="+", default=list(MODULES))
    args = parser.parse_args()
    print(
        "| module | "
        + " | ".join(f"{t} wall s | CPU s | torchvision" for t in args.trees)
        + " | B / A wall |"
    )
    for module in args.modules:
        samples: dict[Path, list[tuple[float, float, bool]]] = {t: [] for t in args.trees}
        one_import(args.trees[0], module)  # warm the file cache for both alike
        for _ in range(args.repeats):
            for tree in args.trees:
                samples[tree].append(one_import(tree, module))
        cells, walls, cpus = [], [], []
        for tree in args.trees:
            wall = statistics.median(s[0] for s in samples[tree])
            cpu = statistics.median(s[1] for s in samples[tree])
            walls.append(wall)
            cpus.append(cpu)
            cells.append(f"{wall:.2f} | {cpu:.2f} | {'yes' if samples[tree][0][2] else 'no'}")
        ratios = [f"{b[1] / b[0]:.2f}x" if len(b) == 2 else "-" for b in (walls, cpus)]
        print(f"| {module} | " + " | ".join(cells) + f" | {' | '.join(ratios)} |", flush=True)


if __name__ == "__main__":
    main()
