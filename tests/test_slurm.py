"""Cluster submission against a real SLURM: a small study through `--profile profiles/slurm`.

One SLURM run of tests/slurm_study.yaml (on config/demo.yaml) is shared by the tests: its heavy
jobs must really be SLURM jobs with the threads and GPU they asked for, its results must equal a
local run of the same study, and a training job killed mid-run (`scancel`, as a time limit or a
preemption would) must resume from its checkpoint on Snakemake's retry and end with the metrics
of an uninterrupted run.

Needs sbatch and a running cluster (CI starts one with .ci/slurm/start.sh). Without sbatch the
tests skip, unless CIFARLAB_REQUIRE_SLURM=1 (CI), where that is a failure.
"""

from __future__ import annotations

import csv
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

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# What a copy of the workflow needs: the tests run it in their own folders.
WORKFLOW_FILES = ("Snakefile", "workflow", "scripts", "config", "profiles", "environment.yaml")
CONFIG = ["--configfile", "config/demo.yaml", "tests/slurm_study.yaml"]
RUN = "simple_cnn-sgd"
KILLED = "slurm_resume"  # the run whose training job the test cancels mid-run
LOCAL_TARGETS = [f"results/runs/{RUN}/metrics.json", f"results/runs/{KILLED}/history.csv"]
TARGETS = [*LOCAL_TARGETS, f"results/figures/curves/{RUN}.png"]  # plotting: a local job
# Every train job asks for a GPU here: the CI node's fake GPU makes it `--gpus=1`.
SLURM_ARGS = ["--profile", "profiles/slurm", "--profile", "profiles/slurm-ci"]
SLURM_ARGS += ["--set-resources", "train:gpu=1"]
LOCAL_RULES = {"download", "plot_curves"}
SLURM_RULES = {"prepare", "train", "evaluate"}
TIMEOUT = 600  # seconds for the whole SLURM run; it takes 2-4 minutes on a 2-core CI machine
# Numbers that differ between two runs of the same study: wall times.
TIMINGS = {"train_seconds", "images_per_second", "seconds"}


def slurm_or_skip() -> None:
    """Skip without SLURM; fail instead when CI says SLURM must be there."""
    required = os.environ.get("CIFARLAB_REQUIRE_SLURM") == "1"
    if shutil.which("sbatch") is None:
        if required:
            pytest.fail("CIFARLAB_REQUIRE_SLURM=1 but sbatch is not on PATH: run .ci/slurm/start.sh first")
        pytest.skip("SLURM not available (no sbatch on PATH); CI runs these tests against a real SLURM")
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
    fields = ["JobID", "State", "NumCPUs", "tres-per-job", "Comment"]
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-O", ",".join(f"{f}:|" for f in fields)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, state, cpus, tres, comment = (part.strip() for part in line.split("|")[:5])
        jobs[job_id] = {"state": state, "cpus": int(cpus), "tres": tres, "comment": comment}
    return jobs


def submitted_jobs(output: str) -> list[tuple[str, str, str]]:
    """(SLURM job id, rule, wildcards) of every submission, from the plugin's lines
    'Job 3 has been submitted with SLURM jobid 8 (log: .../slurm_logs/rule_train/<wildcards>/8.log)'."""
    return re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/([^/\s]+)/", output)


def training_job(output: str, run: str) -> str | None:
    jobs = [
        job_id for job_id, rule, wildcards in submitted_jobs(output) if (rule, wildcards) == ("train", run)
    ]
    return jobs[0] if jobs else None


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """The study on SLURM, and the same study run locally at the same time (the reference).

    On SLURM, the KILLED run's training job is cancelled once its first checkpoint exists.
    Returns both folders, Snakemake's output on SLURM, the cancelled SLURM job id and what
    squeue showed about every job during the run.
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
    checkpoint = folder / "results" / "checkpoints" / f"{KILLED}.pt"
    seen: dict[str, dict] = {}
    cancelled = None
    with open(log, "w") as out:
        process = subprocess.Popen(
            snakemake(*TARGETS, *SLURM_ARGS, *CONFIG), cwd=folder, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + TIMEOUT
        try:
            while process.poll() is None:
                assert time.monotonic() < deadline, f"the SLURM run took over {TIMEOUT} s:\n{log.read_text()}"
                seen.update(squeue_snapshot())
                job = training_job(log.read_text(), KILLED)
                if cancelled is None and job and checkpoint.exists():
                    # Like a time limit or a preemption: SIGTERM, then SIGKILL after KillWait.
                    subprocess.run(["scancel", job], check=True)
                    cancelled = job
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                process.terminate()  # Snakemake cancels its SLURM jobs on SIGTERM
                process.wait(timeout=60)
    seen.update(squeue_snapshot())
    local_output = reference.communicate(timeout=TIMEOUT)[0]
    output = log.read_text()
    assert process.returncode == 0, f"the SLURM run failed:\n{output[-5000:]}"
    assert reference.returncode == 0, f"the local run failed:\n{local_output[-5000:]}"
    return {"folder": folder, "local": local, "output": output, "cancelled": cancelled, "jobs": seen}


def read_metrics(folder: Path, run: str) -> dict:
    with open(folder / "results" / "runs" / run / "metrics.json") as f:
        metrics = json.load(f)
    return {k: v for k, v in metrics.items() if k not in TIMINGS}


def read_history(folder: Path, run: str) -> list[dict]:
    with open(folder / "results" / "runs" / run / "history.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(f)]


def read_model(folder: Path, run: str) -> dict:
    return torch.load(folder / "results" / "runs" / run / "model.pt", map_location="cpu")["model_state"]


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
        expected = "CANCELLED" if job_id == study["cancelled"] else "COMPLETED"
        assert job["state"] == expected, f"SLURM job {job_id} ({rule}): {job['state']}"
        # CPUs: the rule's threads (the study's `threads: 1`; prepare asks for 2).
        assert job["cpus"] == (2 if rule == "prepare" else 1), f"SLURM job {job_id} ({rule})"
        # GPUs: train asks for one here (--set-resources), nothing else does.
        assert (job["tres"] == "gres:gpu:1") == (rule == "train"), f"SLURM job {job_id} ({rule})"


def test_results_equal_a_local_run(study):
    assert read_metrics(study["folder"], RUN) == read_metrics(study["local"], RUN)
    for run in (RUN, KILLED):
        assert read_history(study["folder"], run) == read_history(study["local"], run)
    assert (study["folder"] / TARGETS[-1]).stat().st_size > 0  # the figure, drawn locally


def test_killed_training_job_resumes_from_its_checkpoint(study):
    assert study["cancelled"], "the training job finished before the test could cancel it"
    folder = study["folder"]
    attempts = [j for j, rule, run in submitted_jobs(study["output"]) if (rule, run) == ("train", KILLED)]
    assert attempts[0] == study["cancelled"] and len(attempts) == 2, f"SLURM jobs {attempts}"
    log = (folder / "logs" / "train" / f"{KILLED}.log").read_text()
    resumed = re.findall(r"resuming \S+ from \S+: epoch (\d+)", log)
    assert len(resumed) == 1, f"the retry did not resume from the checkpoint:\n{log}"
    assert int(resumed[0]) >= 2, "resumed at the first epoch: nothing was kept"
    # The checkpoint is removed once the outputs are written; the run equals an uninterrupted one.
    assert not (folder / "results" / "checkpoints" / f"{KILLED}.pt").exists()
    assert read_history(folder, KILLED) == read_history(study["local"], KILLED)
    resumed_model, reference = read_model(folder, KILLED), read_model(study["local"], KILLED)
    assert resumed_model.keys() == reference.keys()
    assert all(torch.equal(resumed_model[k], reference[k]) for k in reference)
