"""One job per GPU (cifarlab.core.gpu_slots, core.device.pick_device, workflow/rules/resources.smk),
on the CPU: CUDA_VISIBLE_DEVICES stands in for a machine's GPUs, torch.cuda is monkeypatched where
a job would start CUDA, and a fake `nvidia-smi` lists GPUs to the workflow.

Concurrent jobs are real processes (a flock is held per open file, and released by the kernel when
its process dies, which a thread cannot show).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifarlab.core import device as device_module
from cifarlab.core import gpu_slots
from cifarlab.study import results

ROOT = Path(__file__).resolve().parent.parent

# A job: claim a slot (waiting at most `timeout` s), say which, hold it until `release` exists.
JOB = """
import os, sys, time
from pathlib import Path
from cifarlab.core import gpu_slots
from cifarlab.study import results
slot = gpu_slots.claim_for_job(timeout=float(sys.argv[1]))
print(slot.index, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.05)
"""


@pytest.fixture
def machine(tmp_path, monkeypatch) -> dict[str, str]:
    """Three stand-in GPUs, ids 4, 7 and GPU-x (an index, another, a UUID), and a slot folder."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7,GPU-x")
    monkeypatch.setenv(gpu_slots.SLOTS_DIR_ENV, str(tmp_path / "slots"))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    yield {**os.environ, "PYTHONPATH": str(ROOT)}
    gpu_slots.release()


def start_job(env: dict[str, str], release: Path, timeout: float = 30) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(timeout), str(release)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def claimed(job: subprocess.Popen) -> tuple[int, str]:
    """(slot index, CUDA_VISIBLE_DEVICES) that a started job printed."""
    line = job.stdout.readline()
    assert line, job.stderr.read()
    index, gpu = line.split()
    return int(index), gpu


def test_visible_gpus_are_cuda_visible_devices_else_the_count():
    assert gpu_slots.visible_gpus({"CUDA_VISIBLE_DEVICES": "0, 2,,GPU-ab"}) == ["0", "2", "GPU-ab"]
    assert gpu_slots.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, count=lambda: 8) == []
    assert gpu_slots.visible_gpus({}, count=lambda: 3) == ["0", "1", "2"]
    assert gpu_slots.visible_gpus({}, count=lambda: 0) == []


def test_concurrent_jobs_take_distinct_gpus_the_next_waits_and_a_dead_jobs_slot_is_taken(machine, tmp_path):
    release = tmp_path / "release"
    jobs = [start_job(machine, release) for _ in range(3)]
    try:
        got = sorted(claimed(job) for job in jobs)
        # each job its own slot, and CUDA shows it that slot's GPU alone
        assert got == [(0, "4"), (1, "7"), (2, "GPU-x")]
        # a fourth finds every slot taken: past its timeout it fails, naming the holders and the fix
        late = subprocess.run(
            [sys.executable, "-c", JOB, "0.3", str(release)], env=machine, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert late.returncode != 0
        assert "all 3 GPU slots" in late.stderr and "pid" in late.stderr
        assert "--resources gpu=N" in late.stderr
        # one that waits gets the slot of a job that dies (SIGKILL: no clean-up ran; the lock
        # file is still there with the dead pid in it)
        waiting = start_job(machine, release)
        time.sleep(0.5)
        assert waiting.poll() is None
        lock_of = {int(Path(p).stem): Path(p).read_text() for p in (tmp_path / "slots").rglob("*.lock")}
        victim = next(job for job in jobs if f"{job.pid} " in lock_of[1])
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert claimed(waiting) == (1, "7")
        jobs.append(waiting)
    finally:
        release.touch()
        for job in jobs:
            job.wait(timeout=60)


def test_a_lock_file_without_a_live_holder_is_claimed_and_release_frees_it(machine, tmp_path):
    folder = gpu_slots.slots_dir()
    folder.mkdir(parents=True)
    (folder / "0.lock").write_text("999999999 elsewhere\n")  # left by a dead job
    slot = gpu_slots.claim_for_job(timeout=0)
    assert (slot.index, slot.gpu, os.environ["CUDA_VISIBLE_DEVICES"]) == (0, "4", "4")
    assert (folder / "0.lock").read_text().split()[0] == str(os.getpid())
    assert gpu_slots.claim_for_job() is slot  # one slot per process, however often asked
    gpu_slots.release()
    assert gpu_slots.held() is None
    with gpu_slots.gpu_slot(["a", "b"], folder, timeout=0) as again:
        assert again.index == 0
    assert gpu_slots.held() is None


def test_a_slurm_job_with_its_one_gpu_claims_nothing(machine, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what SLURM sets for --gpus=1
    assert gpu_slots.claim_for_job(timeout=0) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert not gpu_slots.slots_dir().exists()
    # an allocation with several GPUs, shared by a local Snakemake's jobs, is spread over them
    assert gpu_slots.should_claim(["0", "1"], {"SLURM_JOB_ID": "1234"})
    assert not gpu_slots.should_claim([], {})


@pytest.fixture
def fake_cuda(monkeypatch) -> list[int]:
    """torch.cuda as on a machine whose CUDA shows the GPUs CUDA_VISIBLE_DEVICES lists (read when
    asked, as NVML does before CUDA starts). Returns the indices set_device was called with."""
    current = []
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpu_slots.visible_gpus(count=lambda: 0)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[-1])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"Fake GPU {index}")
    return current


@pytest.mark.parametrize("name", ["cuda", "auto"])
def test_pick_device_claims_a_free_gpu_and_shows_the_job_it_alone(machine, fake_cuda, name):
    gpu_slots.slots_dir().mkdir(parents=True)
    other_job = gpu_slots._try_lock(gpu_slots.slots_dir() / "0.lock")  # its own open file: its own flock
    try:
        device = device_module.pick_device(name)
    finally:
        os.close(other_job)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"  # slot 1: slot 0 is another job's
    assert device == torch.device("cuda", 0) and fake_cuda == [0]
    assert device_module.describe(device) == "cuda (Fake GPU 0)"  # the kind, whichever GPU
    assert device_module.gpu_id(device) == "7"  # the machine's id, for metrics.json
    assert device_module.gpu_slot() == 1


def test_pick_device_selects_the_slot_among_all_when_cuda_started_before(machine, fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)  # CUDA read the variable before the claim
    device = device_module.pick_device("cuda")
    assert device == torch.device("cuda", 0) and fake_cuda == [0] and device_module.gpu_slot() == 0
    gpu_slots.release()
    other_job = gpu_slots._try_lock(gpu_slots.slots_dir() / "0.lock")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7,GPU-x")
    try:
        device = device_module.pick_device("cuda")
        assert device == torch.device("cuda", 1) and fake_cuda[-1] == 1
        assert device_module.describe(device) == "cuda (Fake GPU 1)"
        assert device_module.gpu_id(device) == "7"
    finally:
        os.close(other_job)


def test_cpu_and_mps_jobs_claim_no_gpu(machine, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)  # a CPU build of torch
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    assert device_module.pick_device("auto") == torch.device("cpu")
    assert device_module.pick_device("cpu") == torch.device("cpu")
    assert gpu_slots.held() is None and not gpu_slots.slots_dir().exists()
    assert device_module.gpu_slot() is None
    assert device_module.gpu_id(torch.device("cpu")) is None
    assert device_module.describe(torch.device("cpu")) == f"cpu ({torch.get_num_threads()} threads)"


def test_a_record_names_the_kind_of_device_and_the_gpu_apart():
    """Today's records keep the GPU's id out of `device`; those written before (`cuda:7 (...)`) are
    read as the same kind of device and that id, so seeds on two GPUs of one kind show one device."""
    today = {"device": "cuda (NVIDIA H200)", "gpu_id": "7"}
    assert results.recorded_device(today) == today
    assert results.recorded_device({"device": "cuda:7 (NVIDIA H200)"}) == today
    assert results.recorded_device({"device": "cuda:GPU-ab (NVIDIA H200)"})["gpu_id"] == "GPU-ab"
    for other in ("cpu (4 threads)", "mps", "cuda"):
        assert results.recorded_device({"device": other}) == {"device": other, "gpu_id": None}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "visible", "gpus", "provided", "smi_runs"),
    [
        (["--config", "device=cuda"], None, 3, "gpu=3", True),  # one job per GPU at once
        (["--config", "device=auto", "--resources", "gpu=1"], None, 3, "gpu=1", None),  # the user's cap wins
        (["--config", "device=auto"], None, 0, None, True),  # no GPU: no cap, CPU jobs
        # the GPUs CUDA_VISIBLE_DEVICES names, without asking nvidia-smi (which lists 3)
        (["--config", "device=cuda"], "1,GPU-ab", 3, "gpu=2", False),
        (["--config", "device=cpu"], None, 3, None, False),  # a CPU study asks nothing about GPUs
    ],
)
def test_a_local_run_runs_as_many_gpu_jobs_as_gpus(tmp_path, args, visible, gpus, provided, smi_runs):
    """The workflow's `gpu` resource, from a fake nvidia-smi (which notes each call) or
    CUDA_VISIBLE_DEVICES: a touch run prints Snakemake's cap. smi_runs: whether nvidia-smi is asked
    (None: not checked)."""
    for part in ("Snakefile", "workflow", "scripts", "config", "environment.yaml"):
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / part)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi, calls = bin_dir / "nvidia-smi", tmp_path / "nvidia-smi-calls"
    listing = "".join(f'echo "GPU {i}: Fake (UUID: GPU-{i})"\n' for i in range(gpus))
    smi.write_text(f"#!/bin/sh\necho called >> {calls}\n{listing}")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT))
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--touch", "--cores", "2", "--until", "download",
         "--configfile", "config/demo.yaml", *args, "--", "all"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    caps = [line for line in out.splitlines() if line.startswith("Provided resources")]
    if provided is None:
        assert not caps, caps
    else:
        assert caps and f'"gpu", {provided.split("=")[1]}' in caps[0], caps
    if smi_runs is not None:  # at most once per Snakemake start (cached)
        assert (calls.read_text().count("called") if calls.exists() else 0) == int(smi_runs), out[-3000:]
