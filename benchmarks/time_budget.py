"""A `time_budget` against the wall time it really took, from a fresh clone (issue 25).

    python benchmarks/time_budget.py --data ../shared/datasets/cifar10-jpeg.zip --budget 10m 30m \
        [--cores 2] [--configfile config/quick.yaml] [--before-ref 08659dd] [--dry-run]

For each budget: `git clone` of this repository's HEAD into a temporary folder (no results, no
.snakemake/, so no calibration file and no kept plan: the first estimate on this machine), then
`snakemake --cores N report --config time_budget=B data_source=DATA pretrained=false` there
with that clone's own `cifarlab` (PYTHONPATH), timed. Prints the plan and the estimate it printed
first, and a markdown row: budget, the plan's estimate, Snakemake's printed estimate, the
measured wall time, measured / budget, estimate / measured, what each run trained (epochs x
train images, seeds) and its test accuracy (metrics.json, mean over seeds); then the runs'
accuracies side by side, one column per budget.

--before-ref REF: also the first-time estimate of an older tree (REF, e.g. 08659dd: before
time budgets) for the same study without a budget (`snakemake -n` of `--before-configfile`,
default config/quick.yaml, with no calibration file), the "before" of the first estimate;
--before-run also runs that study and measures it. --dry-run: plan only (no training), to check
the script or see a plan. Without --data the study's own data is used (config/demo.yaml:
generated shapes). --keep DIR keeps the clones there (their results, logs and terminal output).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cifarlab.config.budgets import parse_time_budget  # noqa: E402 (torch-free; also reads '18.5 min')
from cifarlab.core.progress import duration  # noqa: E402


def clone(ref: str, into: Path) -> Path:
    """A fresh clone of this repository at `ref` in `into`/clone."""
    target = into / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    subprocess.run(["git", "checkout", "--quiet", ref], cwd=target, check=True)
    return target


def snakemake(workdir: Path, args: list[str], log: Path) -> tuple[float, str, int]:
    """Run Snakemake in `workdir` with its own cifarlab; (wall seconds, terminal text, exit code)."""
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    start = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "snakemake", *args],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return time.monotonic() - start, log.read_text(), done.returncode


def first_estimate(terminal: str) -> tuple[float | None, float | None]:
    """(the plan's wall seconds, Snakemake's printed estimate's) from the terminal, None if absent."""
    plan = re.search(r"planned to ([\d.]+ (?:s|min|h)) wall time", terminal)
    printed = re.search(r"Estimate: ([\d.]+ (?:s|min|h)) wall time", terminal)
    return (
        parse_time_budget(plan.group(1)) if plan else None,
        parse_time_budget(printed.group(1)) if printed else None,
    )


def plan_block(terminal: str) -> str:
    """The plan's printed lines (from 'Time budget' to the first non-indented line after its table)."""
    lines, inside = [], False
    for line in terminal.splitlines():
        if line.startswith("Time budget"):
            inside = True
        elif inside and not line.startswith("  "):
            break
        if inside:
            lines.append(line)
    return "\n".join(lines)


def trained(workdir: Path) -> dict[str, dict]:
    """Run -> {"epochs", "train_images", "seeds", "accuracy" (mean test accuracy, %)} from metrics.json."""
    found: dict[str, dict] = {}
    for path in sorted(workdir.glob("results/*/runs/*/seed*/metrics.json")):
        metrics = json.loads(path.read_text())
        run = found.setdefault(
            path.parent.parent.name,
            {"epochs": metrics.get("epochs"), "train_images": metrics.get("train_images"), "accuracies": []},
        )
        if metrics.get("test_accuracy") is not None:
            run["accuracies"].append(metrics["test_accuracy"])  # already in %
    for run in found.values():
        run["seeds"] = len(run["accuracies"])
        run["accuracy"] = statistics.fmean(run["accuracies"]) if run["accuracies"] else None
    return found


def one_budget(budget: str, args: argparse.Namespace, folder: Path) -> dict:
    """Clone, run (or plan) the study with `budget`, and measure it."""
    workdir = clone("HEAD", folder)
    study = [
        "report",
        "--cores",
        str(args.cores),
        *(["--configfile", *args.configfile] if args.configfile else []),
    ]
    config = [
        f"time_budget={budget}",
        "pretrained=false",
        *([f"data_source={Path(args.data).resolve()}"] if args.data else []),
    ]
    wall, terminal, code = snakemake(
        workdir, [*study, *(["-n"] if args.dry_run else []), "--config", *config], folder / "terminal.txt"
    )
    plan, printed = first_estimate(terminal)
    print(plan_block(terminal) or terminal[-3000:], flush=True)
    return {
        "budget": budget,
        "plan": plan,
        "printed": printed,
        "wall": wall,
        "code": code,
        "runs": trained(workdir),
    }


def before(args: argparse.Namespace, folder: Path) -> None:
    """The first-time estimate of the older tree (and, with --before-run, its measured wall time)."""
    workdir = clone(args.before_ref, folder)
    config = ["pretrained=false", *([f"data_source={Path(args.data).resolve()}"] if args.data else [])]
    study = [
        "report",
        "--cores",
        str(args.cores),
        "--configfile",
        *args.before_configfile,
        "--config",
        *config,
    ]
    _, terminal, _ = snakemake(workdir, [*study, "-n"], folder / "before-dry.txt")
    _, printed = first_estimate(terminal)
    line = f"before ({args.before_ref}, {' '.join(args.before_configfile)}): first estimate {fmt(printed)}"
    if args.before_run:
        wall, _, code = snakemake(workdir, study, folder / "before-run.txt")
        line += f"; measured {fmt(wall)} (exit {code}); estimate / measured {printed / wall:.2f}x"
    print(line, flush=True)


def fmt(seconds: float | None) -> str:
    """A measured or estimated time as the report's tables show it ('?' when unknown)."""
    return "?" if seconds is None else duration(seconds, exact=True)


def report(results: list[dict]) -> None:
    """The markdown table of the budgets, then the runs' accuracies side by side."""
    columns = (
        "budget",
        "plan's estimate",
        "printed estimate",
        "measured",
        "measured / budget",
        "estimate / measured",
        "runs (epochs x train images, seeds)",
    )
    print("\n| " + " | ".join(columns) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        budget = parse_time_budget(r["budget"])
        runs = "; ".join(
            f"{name} {run['epochs']}x{run['train_images']:,}"
            + (f", {run['seeds']} seeds" if run["seeds"] > 1 else "")
            for name, run in r["runs"].items()
            if run["train_images"] is not None
        )
        ratio = f"{r['printed'] / r['wall']:.2f}x" if r["printed"] else "?"
        measured = f"{fmt(r['wall'])} (exit {r['code']})"
        cells = (
            r["budget"],
            fmt(r["plan"]),
            fmt(r["printed"]),
            measured,
            f"{r['wall'] / budget:.2f}",
            ratio,
            runs or "-",
        )
        print("| " + " | ".join(cells) + " |")
    names = sorted({name for r in results for name in r["runs"]})
    if names:
        print("\n| run | " + " | ".join(r["budget"] for r in results) + " |")
        print("| --- |" + " --- |" * len(results))
        for name in names:
            cells = []
            for r in results:
                acc = r["runs"].get(name, {}).get("accuracy")
                cells.append("-" if acc is None else f"{acc:.2f} %")
            print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", nargs="+", required=True, help="time budgets, e.g. 10m 30m")
    parser.add_argument(
        "--data", help="data_source (e.g. ../shared/datasets/cifar10-jpeg.zip); default: the study's"
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile", nargs="*", default=[], help="overlays (e.g. config/demo.yaml)")
    parser.add_argument(
        "--before-ref", help="an older commit whose first-time estimate to print (e.g. 08659dd)"
    )
    parser.add_argument("--before-configfile", nargs="+", default=["config/quick.yaml"])
    parser.add_argument(
        "--before-run", action="store_true", help="also run the older tree's study and time it"
    )
    parser.add_argument("--dry-run", action="store_true", help="plan only (snakemake -n)")
    parser.add_argument("--keep", type=Path, help="keep the clones in this folder")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="time-budget-"))
    base.mkdir(parents=True, exist_ok=True)
    if args.before_ref:
        (base / "before").mkdir()
        before(args, base / "before")
    results = []
    for budget in args.budget:
        folder = base / f"budget-{budget}"
        folder.mkdir(parents=True, exist_ok=False)
        results.append(one_budget(budget, args, folder))
    report(results)


if __name__ == "__main__":
    main()
