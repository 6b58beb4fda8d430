"""Cluster submission against a real SLURM: a small study through `--profile profiles/slurm`.

One SLURM run of tests/slurm_study.yaml (on config/demo.yaml) is shared by the tests: its heavy
jobs must really be SLURM jobs with the threads and GPU they asked for, and its results must equal
a local run of the same study although two training jobs are stopped mid-run: one is cancelled
(`scancel`, as at a time limit: Snakemake submits a retry) and one is requeued (`scontrol
requeue`, as on preemption: SLURM starts it again). Both must resume from their checkpoints and
end with the weights and metrics of an uninterrupted run.

Needs sbatch and a running cluster (CI starts one with .ci/slurm/start.sh). Without sbatch the
tests skip, unless CIFARLAB_REQUIRE_SLURM=1 (CI), where that is a failure; so does a missing executor
plugin (the project's `[slurm]` extra).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from cifarlab.core import paths
from cifarlab.plots.figures import figure_named
from cifarlab.training.loop import CHECKPOINT_INTERVAL_ENV

# What a copy of the workflow needs: the tests run it in their own folders.
WORKFLOW_FILES = ("Snakefile", "workflow", "scripts", "config", "profiles", "environment.yaml")
CONFIG = ["--configfile", "config/demo.yaml", "tests/slurm_study.yaml"]
# Two runs, each interrupted after its first checkpoint in one of the two ways SLURM stops a job:
PREEMPTED = "simple_cnn-sgd"  # requeued by SLURM (as on preemption): the same job starts again
KILLED = "slurm_resume"  # cancelled (as at a time limit): the job fails, Snakemake submits a retry
# config/demo.yaml's one dataset; each run's first seed (slurm_resume's is its seed 1)
DATASET, SEEDS = "synthetic", {PREEMPTED: 0, KILLED: 1}


def plugin_wildcards(run: str) -> str:
    """How the SLURM executor plugin names a run's training job in its log paths: the wildcards'
    values joined with "_"."""
    return f"{DATASET}_{run}_{SEEDS[run]}"


def result(folder: Path, pattern: str, run: str) -> Path:
    """A file of a run's trained model (a cifarlab.core.paths pattern) in `folder`."""
    return folder / paths.fill(pattern, dataset=DATASET, run=run, seed=SEEDS[run])


LOCAL_TARGETS = [
    paths.fill(paths.METRICS, dataset=DATASET, run=PREEMPTED, seed=0),
    paths.fill(paths.HISTORY, dataset=DATASET, run=KILLED, seed=1),
]
TARGETS = [  # plotting: a local job
    *LOCAL_TARGETS,
    figure_named("curves").path(dataset=DATASET, run=PREEMPTED, seed=0),
]
# Every train job asks for a GPU here: the CI node's fake GPU makes it `--gpus=1`.
SLURM_ARGS = ["--profile", "profiles/slurm", "--profile", "profiles/slurm-ci"]
SLURM_ARGS += ["--set-resources", "train:gpu=1"]
LOCAL_RULES = {"download", "plot_curves"}
SLURM_RULES = {"prepare", "train", "evaluate"}
TIMEOUT = 600  # seconds for the whole SLURM run; it takes 2-4 minutes on a 2-core CI machine
# Numbers that differ between two runs of the same study: wall times.
TIMINGS = {"train_seconds", "images_per_second", "seconds", "timing"}


def slurm_or_skip() -> None:
    """Skip without SLURM; fail instead when CI says SLURM must be there."""
    required = os.environ.get("CIFARLAB_REQUIRE_SLURM") == "1"
    if shutil.which("sbatch") is None:
        if required:
            pytest.fail("CIFARLAB_REQUIRE_SLURM=1 but sbatch is not on PATH: run .ci/slurm/start.sh first")
        pytest.skip("SLURM not available (no sbatch on PATH); CI runs these tests against a real SLURM")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        message = "the SLURM executor plugin is not installed: pip install -e '.[slurm]'"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    info = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0 or not info.stdout.strip():
        message = f"sbatch is installed but no SLURM controller answers: {info.stderr.strip()}"
        if required:
            pytest.fail(message + " (start one with .ci/slurm/start.sh)")
        pytest.skip(message)


def copy_workflow(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name)
        else:
            shutil.copy2(source, folder / name)
    (folder / "tests").mkdir()
    shutil.copy2(ROOT / "tests" / "slurm_study.yaml", folder / "tests")
    return folder


def snakemake(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def squeue_snapshot() -> dict[str, dict]:
    """Every job slurmctld knows: id -> state, CPUs, requested TRES (GPUs), comment (rule)."""
    fields = ["JobID", "State", "NumCPUs", "tres-per-job", "restartcnt", "Comment"]
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-O", ",".join(f"{f}:|" for f in fields)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, state, cpus, tres, restarts, comment = (part.strip() for part in line.split("|")[:6])
        jobs[job_id] = {
            "state": state,
            "cpus": int(cpus),
            "tres": tres,
            "restarts": int(restarts),
            "comment": comment,
        }
    return jobs


def submitted_jobs(output: str) -> list[tuple[str, str, str]]:
    """(SLURM job id, rule, wildcards) of every submission, from the plugin's lines
    'Job 3 has been submitted with SLURM jobid 8 (log: .../slurm_logs/rule_train/<wildcards>/8.log)'."""
    return re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/([^/\s]+)/", output)


def training_job(output: str, run: str) -> str | None:
    jobs = [
        job_id
        for job_id, rule, wildcards in submitted_jobs(output)
        if (rule, wildcards) == ("train", plugin_wildcards(run))
    ]
    return jobs[0] if jobs else None


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """The study on SLURM, and the same study run locally at the same time (the reference).

    On SLURM, once their first checkpoint exists, the PREEMPTED run's training job is requeued
    and the KILLED run's is cancelled. Returns both folders, Snakemake's output on SLURM, the
    interrupted SLURM job ids and what squeue showed about every job during the run.
    """
    slurm_or_skip()
    local = copy_workflow(tmp_path_factory.mktemp("local") / "study")
    folder = copy_workflow(tmp_path_factory.mktemp("slurm") / "study")
    # The local run overlaps the SLURM one, which mostly waits on the scheduler's polling.
    reference = subprocess.Popen(
        snakemake(*LOCAL_TARGETS, "--cores", "2", *CONFIG),
        cwd=local,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = folder / "snakemake.out"
    # A checkpoint after every epoch (not every minute), so that the jobs are stopped mid-run;
    # sbatch passes the environment on (--export=ALL).
    environment = {**os.environ, CHECKPOINT_INTERVAL_ENV: "0"}
    seen: dict[str, dict] = {}
    interrupted: dict[str, str] = {}  # run -> SLURM job id
    with open(log, "w") as out:
        process = subprocess.Popen(
            snakemake(*TARGETS, *SLURM_ARGS, *CONFIG),
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        deadline = time.monotonic() + TIMEOUT
        try:
            while process.poll() is None:
                assert time.monotonic() < deadline, f"the SLURM run took over {TIMEOUT} s:\n{log.read_text()}"
                seen.update(squeue_snapshot())
                for run, command in ((PREEMPTED, ["scontrol", "requeue"]), (KILLED, ["scancel"])):
                    job = training_job(log.read_text(), run)
                    if run not in interrupted and job and result(folder, paths.CHECKPOINT, run).exists():
                        # Either way the job gets SIGTERM, then SIGKILL after KillWait.
                        subprocess.run([*command, job], check=True)
                        interrupted[run] = job
                requeued = interrupted.get(PREEMPTED)
                if requeued and seen.get(requeued, {}).get("state") == "PENDING":
                    # SLURM holds a requeued job for two minutes (BeginTime); start it now.
                    subprocess.run(["scontrol", "update", f"jobid={requeued}", "StartTime=now"])
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                # On SIGTERM Snakemake waits for its jobs: cancel them first, leave none behind.
                jobs = [job_id for job_id, _, _ in submitted_jobs(log.read_text())]
                subprocess.run(["scancel", *jobs])
                process.terminate()
                process.wait(timeout=120)
    seen.update(squeue_snapshot())
    local_output = reference.communicate(timeout=TIMEOUT)[0]
    output = log.read_text()
    assert process.returncode == 0, f"the SLURM run failed:\n{output[-5000:]}"
    assert reference.returncode == 0, f"the local run failed:\n{local_output[-5000:]}"
    return {"folder": folder, "local": local, "output": output, "interrupted": interrupted, "jobs": seen}


def read_metrics(folder: Path, run: str) -> dict:
    with open(result(folder, paths.METRICS, run)) as f:
        metrics = json.load(f)
    return {k: v for k, v in metrics.items() if k not in TIMINGS}


def read_history(folder: Path, run: str) -> list[dict]:
    with open(result(folder, paths.HISTORY, run)) as f:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(f)]


def read_model(folder: Path, run: str) -> dict:
    return torch.load(result(folder, paths.MODEL, run), map_location="cpu")["model_state"]


def rule_blocks() -> dict[str, str]:
    """Rule name -> its indented body, for every rule of the workflow."""
    blocks = {}
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", path.read_text(), re.M):
            blocks[name] = body
    return blocks


def test_every_rule_without_threads_stays_local():
    """A rule that does not say what it needs is cheap: it must not go to the cluster."""
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", (ROOT / "Snakefile").read_text(), re.M)
    local = set(re.findall(r"\w+", block.group(1)))
    cheap = {name for name, body in rule_blocks().items() if "threads:" not in body}
    assert cheap - local == set(), "add these rules to `localrules:` in the Snakefile, or give them threads"
    assert {"train", "prepare", "evaluate"}.isdisjoint(local)


def test_every_submitted_rule_asks_for_memory_and_time():
    """sbatch gets --mem and -t from these; without them a site's defaults may kill the job."""
    heavy = {name: body for name, body in rule_blocks().items() if "threads:" in body}
    assert {"prepare", "features", "train", "evaluate", "lr_find", "saliency"} <= set(heavy)
    for name, body in heavy.items():
        assert "mem_mb=" in body and "runtime=" in body, f"rule {name}: add mem_mb and runtime"


@pytest.mark.slow
@pytest.mark.slurm
def test_heavy_jobs_ran_as_slurm_jobs_with_their_threads_and_gpu(study):
    submitted = submitted_jobs(study["output"])
    rules = {rule for _, rule, _ in submitted}
    assert SLURM_RULES <= rules, f"not submitted to SLURM: {SLURM_RULES - rules}"
    assert not LOCAL_RULES & rules, f"local rules went to SLURM: {LOCAL_RULES & rules}"
    for rule in LOCAL_RULES:
        assert f"localrule {rule}:" in study["output"]
    jobs = study["jobs"]
    for job_id, rule, _ in submitted:
        assert job_id in jobs, f"squeue never showed SLURM job {job_id} ({rule})"
        job = jobs[job_id]
        assert job["comment"].startswith(f"rule_{rule}")
        expected = "CANCELLED" if job_id == study["interrupted"].get(KILLED) else "COMPLETED"
        assert job["state"] == expected, f"SLURM job {job_id} ({rule}): {job['state']}"
        # CPUs: the rule's threads (the study's `threads: 1`; prepare asks for 2).
        assert job["cpus"] == (2 if rule == "prepare" else 1), f"SLURM job {job_id} ({rule})"
        # GPUs: train asks for one here (--set-resources), nothing else does.
        assert (job["tres"] == "gres:gpu:1") == (rule == "train"), f"SLURM job {job_id} ({rule})"


@pytest.mark.slow
@pytest.mark.slurm
def test_results_equal_a_local_run(study):
    assert read_metrics(study["folder"], PREEMPTED) == read_metrics(study["local"], PREEMPTED)
    for run in (PREEMPTED, KILLED):
        assert read_history(study["folder"], run) == read_history(study["local"], run)
    assert (study["folder"] / TARGETS[-1]).stat().st_size > 0  # the figure, drawn locally


def resumed_epochs(folder: Path, run: str) -> list[int]:
    """The epochs that training logged resuming from (`resuming <run> from <checkpoint>: epoch k`)."""
    log = (folder / "logs" / "train" / DATASET / run / f"seed{SEEDS[run]}.log").read_text()
    return [int(epoch) for epoch in re.findall(r"resuming \S+ from \S+: epoch (\d+)", log)]


def assert_resumed_and_equal(study: dict, run: str) -> None:
    folder = study["folder"]
    epochs = resumed_epochs(folder, run)
    assert len(epochs) == 1, f"{run}: the job did not resume from its checkpoint"
    assert epochs[0] >= 2, f"{run}: resumed at the first epoch, nothing was kept"
    # The checkpoint is removed once the outputs are written; the run equals an uninterrupted one.
    assert not result(folder, paths.CHECKPOINT, run).exists()
    assert read_history(folder, run) == read_history(study["local"], run)
    resumed, reference = read_model(folder, run), read_model(study["local"], run)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


@pytest.mark.slow
@pytest.mark.slurm
def test_cancelled_training_job_is_retried_and_resumes_from_its_checkpoint(study):
    cancelled = study["interrupted"].get(KILLED)
    assert cancelled, "the training job finished before the test could cancel it"
    attempts = [
        j
        for j, rule, w in submitted_jobs(study["output"])
        if (rule, w) == ("train", plugin_wildcards(KILLED))
    ]
    assert attempts[0] == cancelled and len(attempts) == 2, f"SLURM jobs {attempts}: one retry expected"
    assert_resumed_and_equal(study, KILLED)


@pytest.mark.slow
@pytest.mark.slurm
def test_requeued_training_job_resumes_from_its_checkpoint(study):
    requeued = study["interrupted"].get(PREEMPTED)
    assert requeued, "the training job finished before the test could requeue it"
    attempts = [
        j
        for j, rule, w in submitted_jobs(study["output"])
        if (rule, w) == ("train", plugin_wildcards(PREEMPTED))
    ]
    assert attempts == [requeued], "SLURM reran the job; Snakemake submitted nothing more"
    assert study["jobs"][requeued]["restarts"] == 1
    assert_resumed_and_equal(study, PREEMPTED)
