"""`python -m cifarlab verify <dataset>/<run>/seed<k> [--epochs N]`: does a trained model reproduce?

It retrains the run from what its folder records (results/<dataset>/runs/<run>/seed<k>/:
model.pt's settings, the lr it used, its precision and torch threads, the input files it read),
all of it or its first N epochs (the whole run's schedule, stopped after epoch N), in a scratch
folder, and compares the retraining with the record: the history (every loss, accuracy and lr of
each epoch, history.csv's exact floats) and, for a whole retraining, the weights of the chosen
epoch (model.pt). The verdict is one of

    reproduced bit for bit            every compared number identical
    reproduced within x               accuracies within the tolerance (default 0.5 points); x the gaps
    not reproduced                    beyond it, or another status (diverged) or number of epochs

followed by what differs between the record's making and now, the usual reasons for a gap:
settings (model.pt's against metrics.json's copy), code (the train step's code digest and the
model family's, as recorded in model.pt, against the current code's; the git commit and
uncommitted diff of metrics.json's environment against the tree's), and environment (Python,
torch's build, CPU, GPUs, device, threads and every installed distribution). A CPU retrains bit
for bit with the same code, settings, threads and library versions; on a GPU, non-deterministic
kernels make "within x" the expected verdict.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cifarlab.config.schema import ConfigError
from cifarlab.config.validate import job_settings, uses_cached_features, validate_config
from cifarlab.core import paths
from cifarlab.core.code_version import PACKAGE_DIR, code_digest, code_digest_of_modules
from cifarlab.core.device import describe, pick_device
from cifarlab.core.environment import environment
from cifarlab.core.files import load_torch
from cifarlab.models import model_spec, trained_state
from cifarlab.study.results import HISTORY_COLUMNS, read_history, read_json, recorded_device
from cifarlab.study.status import load_config
from cifarlab.training.loop import train_run, write_history

# history.csv's columns a retraining must reproduce (not `epoch`, the key, nor `seconds`, wall time).
COMPARED = tuple(c for c in HISTORY_COLUMNS if c not in ("epoch", "seconds"))
ACCURACIES = tuple(c for c in COMPARED if c.endswith("accuracy"))
# The train step's script: its code digest (cifarlab.core.code_version) is what model.pt records.
TRAIN_SCRIPT = PACKAGE_DIR.parent / "scripts" / "train.py"
# Default largest accuracy gap (percentage points) still called "reproduced within".
TOLERANCE_POINTS = 0.5
LABEL = re.compile(r"(?P<dataset>[^/]+)/(?P<run>[^/]+)/seed(?P<seed>\d+)")


class VerifyError(Exception):
    """A record that cannot be retrained (missing files, a model.pt too old to say what it read)."""


@dataclass
class Record:
    """One trained model's files: model.pt's dict, history.csv's rows, metrics.json (None if absent)."""

    label: str  # <dataset>/<run>/seed<k>
    folder: Path
    saved: dict
    history: list[dict]
    metrics: dict | None


@dataclass
class Retrained:
    """history: rows as train_run makes them; state: the whole model's weights of the chosen epoch
    (None for a partial retraining, which the record holds no weights of); seconds: wall time."""

    history: list[dict]
    state: dict[str, torch.Tensor] | None
    status: str | None
    seconds: float


@dataclass
class Comparison:
    """epochs: compared; gaps: history column -> largest absolute difference (inf: one side NaN);
    weights_gap: the largest absolute weight difference (None: not compared); problems: what makes
    it not a reproduction whatever the gaps (another status, fewer epochs)."""

    epochs: int
    gaps: dict[str, float]
    weights_gap: float | None
    problems: list[str]

    @property
    def identical(self) -> bool:
        gaps = [*self.gaps.values(), *([self.weights_gap] if self.weights_gap is not None else [])]
        return not self.problems and all(g == 0 for g in gaps)


# --- The record ---------------------------------------------------------------------------


def read_record(label: str, root: Path) -> Record:
    """The files of `<dataset>/<run>/seed<k>` (or of its folder, results/<dataset>/runs/<run>/seed<k>)."""
    match = LABEL.fullmatch(label.strip("/"))
    try:
        wildcards = match.groupdict() if match else paths.wildcards_of(paths.RUN, label.strip("/"))
    except ValueError:
        raise VerifyError(f"{label!r}: name a trained model as <dataset>/<run>/seed<k>") from None
    model, history, metrics_path = (
        root / paths.fill(p, **wildcards) for p in (paths.MODEL, paths.HISTORY, paths.METRICS)
    )
    for needed in (model, history):
        if not needed.exists():
            raise VerifyError(f"{needed} does not exist: train the run first (snakemake {model})")
    metrics = read_json(metrics_path) if metrics_path.exists() else None
    folder = root / paths.fill(paths.RUN, **wildcards)
    name = f"{wildcards['dataset']}/{wildcards['run']}/seed{wildcards['seed']}"
    return Record(name, folder, load_torch(model), read_history(history), metrics)


def input_files(record: Record, root: Path) -> dict[str, Path]:
    """{"train", "test"[, "cached_train", "cached_test"]}: the files the training read, as model.pt
    records them (older records: the prepared data's paths; a cached-features run needs the record)."""
    recorded = record.saved.get("inputs")
    if recorded is None:
        if uses_cached_features(record.saved["run"]):
            raise VerifyError(
                f"{record.folder}/model.pt does not record which cached features it trained on "
                "(it predates verify); retrain it (delete model.pt and rerun snakemake) to verify it"
            )
        dataset = record.label.split("/")[0]
        recorded = {"train": paths.fill(paths.TRAIN_DATA, dataset=dataset),
                    "test": paths.fill(paths.TEST_DATA, dataset=dataset)}  # fmt: skip
    wanted = ("train", "test", "cached_train", "cached_test")  # not a user's model file: code, compared
    files = {key: root / path for key, path in recorded.items() if key in wanted}
    for key, path in files.items():
        if not path.exists():
            raise VerifyError(f"{path} ({key}, an input of the training) does not exist: rebuild it first")
    return files


# --- Retraining -------------------------------------------------------------------------


class _EnoughEpochs(Exception):
    """Raised by the epoch hook of a partial retraining once its last epoch is done."""


def retrain(record: Record, root: Path, *, epochs: int | None, device: torch.device) -> Retrained:
    """Train the recorded run again (its first `epochs` epochs, or all), as the train step did."""
    saved = record.saved
    run = saved["run"]
    files = input_files(record, root)
    train, test = load_torch(files["train"]), load_torch(files["test"])
    cached = None
    if "cached_train" in files:
        cached = {"train": load_torch(files["cached_train"]), "test": load_torch(files["cached_test"])}
    if saved.get("threads"):
        torch.set_num_threads(saved["threads"])  # sums on a CPU group by thread
    last = run["epochs"] if epochs is None else min(epochs, run["epochs"])
    rows: list[dict] = []

    def on_epoch(row: dict, _model: torch.nn.Module) -> None:
        rows.append(dict(row))
        if row["epoch"] >= last and last < run["epochs"]:
            raise _EnoughEpochs

    started = time.perf_counter()
    try:
        result = train_run(
            run, train, test, device=device, lr=saved["lr"], lr_source=saved["lr_source"],
            cached_features=cached, checkpoint=None, precision=saved.get("precision", "fp32"),
            on_epoch=on_epoch,
        )  # fmt: skip
    except _EnoughEpochs:
        return Retrained(rows, None, None, time.perf_counter() - started)
    state = trained_state(result["model"], result["model_part"])  # the weights model.pt keeps
    return Retrained(result["history"], state, result["status"], time.perf_counter() - started)


# --- Comparison ---------------------------------------------------------------------------


def _gap(a: float, b: float) -> float:
    """|a - b|; 0 when both are not finite, inf when one only is.

    Any value that is not finite (NaN, inf) counts as the same: history.csv's rows (read_history)
    hold NaN where the retraining's rows hold the inf of a diverged epoch, and an exact
    reproduction of that epoch must count as one.
    """
    if math.isfinite(a) and math.isfinite(b):
        return abs(a - b)
    return math.inf if math.isfinite(a) or math.isfinite(b) else 0.0


def weights_gap(recorded: dict[str, torch.Tensor], retrained: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts' tensors (inf: other keys or shapes)."""
    if recorded.keys() != retrained.keys():
        return math.inf
    gap = 0.0
    for key, a in recorded.items():
        b = retrained[key]
        if a.shape != b.shape:
            return math.inf
        if not torch.equal(a, b):
            gap = max(gap, float((a.double() - b.double()).abs().max()))
    return gap


def compare(record: Record, retrained: Retrained, epochs: int) -> Comparison:
    """The retraining against the record, over their first `epochs` epochs."""
    problems = []
    recorded_rows = record.history[:epochs]
    if len(retrained.history) != len(recorded_rows):
        problems.append(f"{len(retrained.history)} epochs retrained, {len(recorded_rows)} recorded")
    pairs = list(zip(recorded_rows, retrained.history, strict=False))
    gaps = {c: max((_gap(float(a[c]), float(b[c])) for a, b in pairs), default=0.0) for c in COMPARED}
    gap_of_weights = None
    if retrained.state is not None:
        if retrained.status != record.saved["status"]:
            problems.append(f"status {retrained.status}, recorded {record.saved['status']}")
        gap_of_weights = weights_gap(record.saved["model_state"], retrained.state)
    return Comparison(len(pairs), gaps, gap_of_weights, problems)


def verdict(comparison: Comparison, tolerance: float) -> tuple[bool, str]:
    """(reproduced, the verdict's line)."""
    if comparison.identical:
        weights = "" if comparison.weights_gap is None else " and the weights"
        return True, f"reproduced bit for bit: the history of {comparison.epochs} epoch(s){weights}"
    accuracy = max(comparison.gaps[c] for c in ACCURACIES)
    others = f"losses and lr {max(g for c, g in comparison.gaps.items() if c not in ACCURACIES):.3g}"
    if comparison.weights_gap is not None:
        others += f", weights {comparison.weights_gap:.3g}"
    if comparison.problems or accuracy > tolerance:
        gaps = f"accuracies differ by up to {accuracy:.3g} points (tolerance {tolerance:g}; {others})"
        return False, "not reproduced: " + "; ".join([*comparison.problems, gaps])
    return True, (
        f"reproduced within {accuracy:.3g} accuracy points over {comparison.epochs} epoch(s) "
        f"(largest differences: {others})"
    )


# --- What differs from the record's making ------------------------------------------------


def setting_differences(record: Record) -> list[str]:
    """Settings in which model.pt and metrics.json's copy (written from it by evaluate) disagree."""
    if record.metrics is None or "settings" not in record.metrics:
        return []
    trained, evaluated = record.saved["run"], record.metrics["settings"]
    return [
        f"{key}: {trained.get(key)!r} in model.pt, {evaluated.get(key)!r} in metrics.json"
        for key in sorted(set(trained) | set(evaluated))
        if trained.get(key) != evaluated.get(key)
    ]


def config_differences(record: Record, config: dict, root: Path) -> list[str]:
    """The recorded settings against those `config` (as Snakemake merges it: cifarlab.study.status
    .load_config) gives this job now: has the study's config changed since the run was trained?"""
    runs = validate_config(config, root)
    dataset, name, seed = LABEL.fullmatch(record.label).groups()
    if name not in runs:
        return [f"the config has no run {name!r} (its runs: {', '.join(runs)})"]
    now, trained = job_settings(runs[name], dataset, int(seed)), record.saved["run"]
    return [  # the recorded keys only: evaluation's settings (tta) are not training's
        f"{key}: {trained[key]!r} in model.pt, {now.get(key)!r} in the config now"
        for key in sorted(trained)
        if trained[key] != now.get(key)
    ]


def code_differences(record: Record, now: dict) -> list[str]:
    """The recorded code digests (model.pt) and git state (metrics.json) against the current code's
    (`now`: cifarlab.core.environment.environment() of this process)."""
    saved, found = record.saved, []
    if "code_digest" not in saved:
        found.append("model.pt records no code digest (trained before verify existed): code not compared")
    elif not TRAIN_SCRIPT.exists():  # an installed (not editable) package has no scripts/ beside it
        found.append("scripts/train.py not found: training code not compared")
    elif saved["code_digest"] != code_digest(TRAIN_SCRIPT):
        found.append("the training code (scripts/train.py and the cifarlab modules it imports) has changed")
    model_code = saved.get("model_code")
    if isinstance(model_code, list):  # a user's model: [the family's digest, the file's content]
        model_code = model_code[0]
    module = model_spec(saved["run"]["model"]).module
    if model_code is not None and model_code != code_digest_of_modules([module]):
        found.append(f"the model's code ({module}) has changed")
    recorded = (record.metrics or {}).get("environment") or {}
    then_git = (recorded.get("code_version") or {}).get("commit"), recorded.get("diff_sha256")
    now_git = now["code_version"].get("commit"), now["diff_sha256"]
    if recorded and then_git != now_git:
        found.append(f"git: made at {_tree(*then_git)}, now {_tree(*now_git)}")
    return found


def _tree(commit: str | None, diff: str | None) -> str:
    """A git tree in words: its commit, and its uncommitted diff (evaluate saves it by its sha256)."""
    return f"commit {commit}" + (f" + the uncommitted diff results/diffs/{diff}.diff" if diff else " (clean)")


def _distribution_changes(recorded: dict[str, str], now: dict[str, str]) -> str | None:
    changed = [
        f"{name} {recorded.get(name, '-')} -> {now.get(name, '-')}"
        for name in sorted(set(recorded) | set(now))
        if recorded.get(name) != now.get(name)
    ]
    if not changed:
        return None
    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    return f"{len(changed)} installed distribution(s) differ: {shown}"


def environment_differences(record: Record, device: torch.device, now: dict) -> list[str]:
    """Python, platform, torch's build, CPU, GPUs, device and distributions: recorded against `now`."""
    found = []
    # the kind of device, not which of a machine's GPUs (a local job takes whichever slot is free)
    trained, retrained = recorded_device(record.saved)["device"], describe(device)
    if trained != retrained:
        found.append(f"device: trained on {trained}, retrained on {retrained}")
    recorded = (record.metrics or {}).get("environment")
    if not recorded:
        return [*found, "metrics.json holds no environment record (evaluate has not run): not compared"]
    facts = {
        "python": lambda e: e["python"],
        "platform": lambda e: e["platform"],
        "torch": lambda e: e["torch"],
        "cpu": lambda e: e["cpu"]["model"],
        "cpu bf16": lambda e: e["cpu"]["native_bf16"],
    }
    for name, fact in facts.items():
        before, after = fact(recorded), fact(now)
        if before != after:
            found.append(f"{name}: {before} then, {after} now")
    changes = _distribution_changes(recorded.get("distributions", {}), now["distributions"])
    return found + ([changes] if changes else [])


# --- The command line ----------------------------------------------------------------------


def verify(label: str, *, root: Path, epochs: int | None, device: str, tolerance: float,
           scratch: Path, config: dict | None = None) -> tuple[bool, list[str]]:  # fmt: skip
    """Retrain `label` (its history.csv written in `scratch`) and compare: (reproduced, the report's
    lines). root: the project's folder, which the record's paths are relative to; config: the
    study's config to set the recorded settings against (None: not compared)."""
    record = read_record(label, root)
    torch_device = pick_device(device)
    retrained = retrain(record, root, epochs=epochs, device=torch_device)
    write_history(retrained.history, scratch / "history.csv")
    comparison = compare(record, retrained, len(retrained.history))
    reproduced, line = verdict(comparison, tolerance)
    lines = [
        f"{record.label}: retrained {len(retrained.history)} of {record.saved['run']['epochs']} epochs "
        f"in {retrained.seconds:.1f} s on {describe(torch_device)}",
        line,
    ]
    now = environment(diffs=None)  # this process's: the code version, the tree's diff, the packages
    differences = {
        "settings": setting_differences(record)
        + ([] if config is None else config_differences(record, config, root)),
        "code": code_differences(record, now),
        "environment": environment_differences(record, torch_device, now),
    }
    if any(differences.values()):
        lines.append("what differs from the record's making:")
        lines += [f"- {kind}: {item}" for kind, items in differences.items() for item in items]
    else:
        lines.append("settings, code and environment as recorded")
    return reproduced, lines


def main(argv: list[str] | None = None) -> int:
    """`python -m cifarlab verify <dataset>/<run>/seed<k> [--epochs N]`: exit 0 when reproduced."""
    parser = argparse.ArgumentParser(prog="python -m cifarlab verify", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the trained model, <dataset>/<run>/seed<k> (its folder works too)")
    parser.add_argument("--epochs", type=int, help="retrain only the first N epochs (the whole schedule's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE_POINTS,
                        help="the largest accuracy gap (points) still 'reproduced within'")  # fmt: skip
    parser.add_argument("--scratch", type=Path, help="keep the retraining here (default: a temporary folder)")
    parser.add_argument("--directory", "-d", type=Path, default=Path("."), help="the project (default: here)")
    parser.add_argument("--configfile", nargs="+", default=[],
                        help="config overlays as given to snakemake (settings compared)")  # fmt: skip
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="as given to snakemake")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be 1 or more")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="cifarlab-verify-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        config = None
        if args.configfile or args.config:
            config = load_config(args.configfile, args.config, args.directory)
        reproduced, lines = verify(args.model, root=args.directory, epochs=args.epochs, device=args.device,
                                   tolerance=args.tolerance, scratch=scratch, config=config)  # fmt: skip
    except (VerifyError, ConfigError) as error:
        parser.exit(2, f"verify: {error}\n")
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.scratch is not None:
        lines.append(f"the retraining's history: {scratch / 'history.csv'}")
    print("\n".join(lines))
    return 0 if reproduced else 1
