"""`python -m cifarlab status`: the study at a glance, from what is on disk.

Each planned run is done (its test accuracy), running (epoch k/n and time left, from the epoch
lines of its training log), interrupted (a resume checkpoint on disk, nothing running), failed
(the last line of the error in its log) or waiting (the cost model's time, calibrated by the
runs already done). It only reads files, so it works while Snakemake runs, from another shell or
another node of a cluster that shares the project's file system. No torch is imported.
"""

from __future__ import annotations

import argparse
import collections
import copy
import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cifarlab.config.schema import ConfigError
from cifarlab.config.validate import command_line_value
from cifarlab.core import paths
from cifarlab.core.progress import duration, parse_epoch_line
from cifarlab.core.yamlfiles import YamlTooLarge, load_yaml
from cifarlab.study import estimate, time_plan
from cifarlab.study.results import status_text

# A log line written by cifarlab.core.logs.log_to starts with this (logging's asctime).
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ ")
# A log untouched this long is not being written to, whatever else says so (seconds; a longer
# epoch than this is covered by 3 x its seconds per epoch).
STALE_SECONDS = 600.0


# --- The config, as Snakemake merges it -------------------------------------------------


def merge(base: dict, overlay: dict) -> dict:
    """`overlay` merged into a copy of `base`, dicts key by key (as Snakemake merges --configfile)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        both_dicts = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both_dicts else value
    return out


def load_config(configfiles: list[str], overrides: list[str], root: Path) -> dict:
    """config/config.yaml, then each --configfile over it, then --config KEY=VALUE (YAML values)."""
    try:  # sized before it is built: a file of nested aliases is refused, not expanded
        config = load_yaml(root / "config/config.yaml")
        for name in configfiles:
            path = Path(name) if Path(name).is_absolute() else root / name
            if not path.exists():
                raise ConfigError(f"--configfile {name}: no such file (relative paths start at {root})")
            config = merge(config, load_yaml(path) or {})
    except YamlTooLarge as error:
        raise ConfigError(str(error)) from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--config {item!r}: write KEY=VALUE, as for snakemake --config")
        config = merge(config, {key: command_line_value(value)})
    return config


# --- One run's state ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunStatus:
    """state: done, running, interrupted, failed or waiting; detail: one line for the table;
    seconds_left: of its training (None: unknown, or nothing left)."""

    run: str
    state: str
    detail: str
    seconds_left: float | None = None


def read_log(log: Path) -> list[str]:
    """The lines of a log (a log accumulates across reruns of its job); [] if there is none."""
    return log.read_text(errors="replace").splitlines() if log.exists() else []


def failure(lines: list[str]) -> str | None:
    """The error's last line if the log's last attempt ended with a traceback, else None.

    `cifarlab.core.logs.log_to` writes a failure's traceback last; a later attempt logs timestamped
    lines after it.
    """
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if not starts or any(LOG_TIME.match(line) for line in lines[starts[-1] :]):
        return None
    tail = [line.strip() for line in lines[starts[-1] :] if line.strip()]
    return tail[-1] if tail else "a traceback without a message"


def last_epoch(lines: list[str]) -> tuple[dict | None, float | None]:
    """(the last epoch line, parsed; its time as a Unix timestamp) of a training log."""
    for line in reversed(lines):
        parsed = parse_epoch_line(line)
        if parsed is not None:
            stamp = LOG_TIME.match(line)
            when = dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").timestamp() if stamp else None
            return parsed, when
    return None, None


def snakemake_active(root: Path) -> bool:
    """Whether a Snakemake holds this directory (its lock files exist while it runs)."""
    locks = root / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


def run_status(job: dict, run: dict, root: Path, *, active: bool, waiting_seconds: float) -> RunStatus:
    """The state of one trained model (job: its "dataset", "run" and "seed") from its files
    (cifarlab.core.paths, docs/architecture.md) and its logs."""
    label = paths.job_label({"name": job["run"], **job})
    metrics = root / paths.fill(paths.METRICS, **job)
    if metrics.exists():
        result = json.loads(metrics.read_text())
        if result.get("status") == "diverged":
            return RunStatus(label, "done", status_text(result))
        return RunStatus(label, "done", f"test acc {result['test_accuracy']:.2f} %")

    logs = {
        "evaluate": paths.fill(paths.EVALUATE_LOG, **job),
        "lr_find": paths.fill(paths.LR_FIND_LOG, **job),
    }
    for step, log_name in logs.items():
        error = failure(read_log(root / log_name))
        if error:
            return RunStatus(label, "failed", f"{step}: {error} ({log_name})")
    if (root / paths.fill(paths.MODEL, **job)).exists():
        return RunStatus(label, "running" if active else "waiting", "trained; evaluation next", 0.0)

    log_name = paths.fill(paths.TRAIN_LOG, **job)
    log = root / log_name
    lines = read_log(log)
    error = failure(lines)
    if error is not None and "TrainingInterrupted" not in error:
        return RunStatus(label, "failed", f"{error} ({log_name})")
    epoch, when = last_epoch(lines)
    if epoch is None:
        left, where = waiting_seconds, f"epoch 0/{run['epochs']}"
    else:
        left = (epoch["epochs"] - epoch["epoch"]) * epoch["seconds_per_epoch"]
        where = f"epoch {epoch['epoch']}/{epoch['epochs']}, {epoch['seconds_per_epoch']:.1f} s/epoch"
    # Running: a Snakemake holds the directory and the log was written lately without an error.
    fresh = bool(lines) and time.time() - log.stat().st_mtime < max(STALE_SECONDS, 3 * left)
    if active and fresh and error is None:
        if when is not None:
            left = max(0.0, left - (time.time() - when))
        return RunStatus(label, "running", f"{where}, ~{duration(left)} left", left)
    checkpoint = paths.fill(paths.CHECKPOINT, **job)
    if (root / checkpoint).exists():
        detail = f"{where} in {checkpoint}; rerun to resume (~{duration(left)} left)"
        return RunStatus(label, "interrupted", detail, left)
    detail = f"~{duration(waiting_seconds)} of training (cost model)"
    return RunStatus(label, "waiting", detail, waiting_seconds)


def study_status(config: dict, root: Path) -> list[RunStatus]:
    """The RunStatus of every planned model (dataset, run, seed), in the study's order."""
    # the same plan as the workflow's (a time budget's: as last planned)
    study = time_plan.kept_study(config, root)
    runs, jobs = study.runs, study.jobs
    model = study.train_seconds(root)
    done = [
        estimate.Job("train", job["run"], seconds, str(root / paths.fill(paths.TRAIN_BENCHMARK, **job)))
        for job, seconds in zip(jobs, model, strict=True)
        if (root / paths.fill(paths.MODEL, **job)).exists()
    ]
    factor = estimate.calibration(done).get("train", 1.0)
    active = snakemake_active(root)
    return [
        run_status(
            job,
            runs[job["run"]],
            root,
            active=active,
            waiting_seconds=estimate.JOB_START_SECONDS + factor * seconds,
        )
        for job, seconds in zip(jobs, model, strict=True)
    ]


def format_status(statuses: list[RunStatus], active: bool) -> str:
    """The table and the total time left (of training, the runs one after another)."""
    width = max((len(s.run) for s in statuses), default=3)
    lines = [f"{'run':<{width}}  {'state':<11}  detail"]
    lines += [f"{s.run:<{width}}  {s.state:<11}  {s.detail}" for s in statuses]
    counts = collections.Counter(s.state for s in statuses)
    left = sum(s.seconds_left or 0.0 for s in statuses if s.state != "failed")
    lines.append(
        ", ".join(f"{n} {state}" for state, n in counts.items())
        + f"; Snakemake {'is' if active else 'is not'} running here."
    )
    lines.append(f"Time left: ~{duration(left)} of training (one run after another; failed runs not counted)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line: `python -m cifarlab status [--configfile FILE ...] [--config KEY=VALUE ...]`."""
    parser = argparse.ArgumentParser(prog="python -m cifarlab status", description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", nargs="+", default=[], help="config overlays, as given to snakemake")
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="as given to snakemake")
    parser.add_argument("--directory", "-d", default=".", help="the project's directory (default: here)")
    args = parser.parse_args(argv)
    root = Path(args.directory)
    try:
        config = load_config(args.configfile, args.config, root)
        statuses = study_status(config, root)
    except ConfigError as error:
        parser.exit(2, f"status: {error}\n")
    print(format_status(statuses, snakemake_active(root)))
    return 0
