"""The no-op dry run of a finished study (`snakemake -n --cores 4 report`), timed, for one or two trees.

    python benchmarks/dry_run.py TREE [TREE_B] [--repeats 5] [--configfile config/quick.yaml] \
        [--config data_source=../shared/datasets/cifar10-jpeg.zip pretrained=false] \
        [--configfile-b /tmp/one-seed.yaml]

`--configfile-b` adds overlays for tree B only (after --configfile; an absolute path is used
where it is): to plan the same jobs in a tree whose config means more (a newer tree whose study
trains 3 seeds per run, with an overlay `defaults: {seeds: 1}`).

A TREE is a checkout of this project (its Snakefile, workflow/, scripts/, config/, profiles/ and
cifarlab/). For each, the study is made "finished" without running it, in a temporary copy of the
workflow (nothing is written into the tree): every output and benchmark file of its DAG (as
`snakemake -n` lists them) is created empty, then `snakemake --touch` marks them done in DAG
order and records their metadata, as a real run would. Then `snakemake -n --cores 4 report`
runs there with the tree's own `cifarlab` (PYTHONPATH) and must say "Nothing to be done"; it is
timed --repeats times per tree, the trees alternating (A, B, A, B, ...) so that a change of
machine load hits both alike. Prints each tree's median wall and CPU seconds, whether its dry
run imported torch, and B / A.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config", "profiles", "environment.yaml")
HEAVY = ("torch", "torchvision", "matplotlib")


def snakemake(
    tree: Path, project: Path, args: list[str], importtime: bool = False
) -> subprocess.CompletedProcess:
    """`python -m snakemake ARGS` in `project`, importing `tree`'s cifarlab."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_WAIT_POLICY": "PASSIVE"}
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, "-m", "snakemake", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )


def checked(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        sys.exit(f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def study_args(configfiles: list[str], config: list[str]) -> list[str]:
    """Snakemake's flags for the study; targets go before these (--configfile takes what follows)."""
    args = ["--configfile", *configfiles] if configfiles else []
    return args + (["--config", *config] if config else [])


def finished_study(tree: Path, project: Path, configfiles: list[str], config: list[str]) -> None:
    """A copy of `tree`'s workflow in `project` whose whole `report` DAG is done (empty outputs)."""
    for part in WORKFLOW_PARTS:
        source = tree / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, project / part)
    for overlay in configfiles:  # e.g. tests/e2e_study.yaml, outside config/
        if Path(overlay).is_absolute():
            continue  # used where it is
        (project / overlay).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tree / overlay, project / overlay)
    study = study_args(configfiles, config)
    plan = checked(snakemake(tree, project, ["-n", "report", "--cores", "1", *study]), "the first dry run")
    for line in plan.stdout.splitlines():  # each planned job's "output: a, b" and "benchmark: c"
        key, _, files = line.strip().partition(": ")
        for name in files.split(", ") if key in ("output", "benchmark") else []:
            path = project / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    # --forceall: every job, also those whose files look up to date already (they have no metadata yet)
    checked(snakemake(tree, project, ["--touch", "--forceall", "report", "--cores", "1", *study]), "--touch")


def dry_run(tree: Path, project: Path, configfiles: list[str], config: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `snakemake -n --cores 4 report`, which must plan nothing.

    CPU seconds (user + system of the child) are what the work costs; on a shared machine the
    wall time also counts waiting for a core.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = snakemake(tree, project, ["-n", "--cores", "4", "report", *study_args(configfiles, config)])
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    checked(done, "the dry run")
    if "Nothing to be done" not in done.stdout + done.stderr:
        sys.exit(f"{tree}: the study is not finished; the dry run plans:\n{done.stdout[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heavy_imports(tree: Path, project: Path, configfiles: list[str], config: list[str]) -> list[str]:
    """Which of HEAVY the dry run imports (python -X importtime)."""
    done = snakemake(tree, project, ["-n", "--cores", "4", "report", *study_args(configfiles, config)], True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    return [name for name in HEAVY if name in imported]


def absolute_sources(config: list[str]) -> list[str]:
    """`data_source=PATH` relative to here, made absolute: the dry runs run in temporary copies."""
    out = []
    for item in config:
        key, _, value = item.partition("=")
        if key == "data_source" and "://" not in value and value != "synthetic" and Path(value).exists():
            item = f"{key}={Path(value).resolve()}"
        out.append(item)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trees", nargs="+", type=Path, help="one or two checkouts of the project (A, B)")
    parser.add_argument("--repeats", type=int, default=5, help="timed dry runs per tree")
    parser.add_argument(
        "--configfile", nargs="*", default=["config/quick.yaml"], help="overlays, in the tree"
    )
    parser.add_argument("--config", nargs="*", default=[], help="KEY=VALUE settings, as for snakemake")
    parser.add_argument("--configfile-b", nargs="*", default=[], help="more overlays for tree B only")
    args = parser.parse_args()
    if len(args.trees) > 2:
        parser.error("give one or two trees")
    trees = [tree.resolve() for tree in args.trees]
    config = absolute_sources(args.config)
    configfiles = [args.configfile, args.configfile + args.configfile_b]
    with tempfile.TemporaryDirectory(prefix="cifarlab-dry-run-") as scratch:
        projects = []
        for index, tree in enumerate(trees):
            projects.append(Path(scratch) / f"tree{index}")
            projects[-1].mkdir()
            finished_study(tree, projects[-1], configfiles[index], config)
        runs: list[list[tuple[float, float]]] = [[] for _ in trees]
        for _ in range(args.repeats):
            for index, (tree, project) in enumerate(zip(trees, projects, strict=True)):
                runs[index].append(dry_run(tree, project, configfiles[index], config))
        heavy = [
            heavy_imports(tree, project, files, config)
            for tree, project, files in zip(trees, projects, configfiles, strict=False)
        ]
    study = " ".join(study_args(args.configfile, args.config))
    print(f"no-op `snakemake -n --cores 4 report {study}`, {args.repeats} runs per tree, alternating:")
    if args.configfile_b:
        print(f"  tree B also with --configfile {' '.join(args.configfile_b)}")
    medians = []
    for label, tree, timed, modules in zip("AB", trees, runs, heavy, strict=False):
        wall, cpu = ([run[i] for run in timed] for i in (0, 1))
        medians.append((statistics.median(wall), statistics.median(cpu)))
        print(
            f"  {label} {tree}: median {medians[-1][0]:.2f} s wall (min {min(wall):.2f}, "
            f"max {max(wall):.2f}), {medians[-1][1]:.2f} s CPU; "
            f"imports {', '.join(modules) or 'none'} of {', '.join(HEAVY)}"
        )
    if len(trees) == 2:
        print(f"  B / A: {medians[1][0] / medians[0][0]:.2f} wall, {medians[1][1] / medians[0][1]:.2f} CPU")


if __name__ == "__main__":
    main()
