"""benchmarks/gpu.sh --tiny in an environment that holds only what the GPU machine holds.

The device machine has Python with torch, torchvision, numpy, scipy, matplotlib, pyyaml, pillow,
jinja2, tensorboard and safetensors (and what they need), no Snakemake, no jsonschema, no
vit-pytorch, no torch-optimizer, no editable install of cifarlab, and no network. This test makes
such an environment here: a bare virtual environment that sees just those distributions of this
one (links, no download), puts it first on PATH and runs the GPU check's tiny mode, which has to
install the rest from a pack of wheels (made here from the installed distributions, offline), so
that a missing import is found here and not on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
MACHINE = ["torch", "torchvision", "numpy", "scipy", "matplotlib", "pyyaml", "pillow", "jinja2",
           "tensorboard", "safetensors"]  # fmt: skip
# (safetensors too on the machine: not installed here, and cifarlab does not use it)
PRESENT = ["torch", "torchvision", "yaml", "PIL", "scipy", "matplotlib", "tensorboard"]
ABSENT = ["snakemake", "jsonschema", "vit_pytorch", "torch_optimizer", "cifarlab"]
STAGES = ["install", "data", "fast", "precision", "lab-simple_cnn-sgd", "lab-dropout_cnn-dropout0.1",
          "lab-vgg16", "lab-resnet18", "lab-vit", "study"]  # fmt: skip


def gpu_steps():
    spec = importlib.util.spec_from_file_location("gpu_steps", ROOT / "benchmarks" / "gpu_steps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def closure(names: list[str]) -> set[str]:
    """The installed distributions `names` need, themselves included (no extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a marker-less optional need that is not installed: the machine's own matter
        seen.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def link_distributions(names: set[str], folder: Path) -> None:
    """Links in `folder` to each top-level file or folder of the distributions `names`."""
    folder.mkdir(parents=True)
    for name in names:
        dist = metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)


def wheel_of(requirement: str, folder: Path) -> None:
    """A wheel of an installed distribution, zipped from its installed files (no download)."""
    dist = metadata.distribution(requirement.partition("==")[0])
    files = [f for f in dist.files if f.parts[0] != ".." and "__pycache__" not in f.parts]
    info = next(f for f in files if f.parts[0].endswith(".dist-info"))
    tags = Path(dist.locate_file(info.parts[0])) / "WHEEL"
    tag = re.search(r"^Tag: (\S+)", tags.read_text(), re.M).group(1)
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    with zipfile.ZipFile(folder / f"{name}-{dist.version}-{tag}.whl", "w") as wheel:
        for f in files:
            wheel.write(dist.locate_file(f), f.as_posix())


@pytest.fixture(scope="module")
def machine_like(tmp_path_factory) -> Path:
    """A bare venv seeing only the GPU machine's distributions; its bin folder."""
    base = tmp_path_factory.mktemp("machine")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(base / "venv")
    python = base / "venv" / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # pip too: the machine has it, and the check installs the missing wheels with it
    link_distributions(closure(MACHINE) | {"pip"}, base / "machine-site")
    (Path(site) / "gpu-machine.pth").write_text(f"{base / 'machine-site'}\n")
    return base / "venv" / "bin"


def bare_env(bin_folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHON")}
    return {**env, "PATH": f"{bin_folder}:{env['PATH']}"}


def test_the_environment_is_the_machines(machine_like, tmp_path):
    env = bare_env(machine_like)
    found = subprocess.run(
        ["python3", "-c", "import importlib.util as u, sys; print(sys.executable); "
         f"print([m for m in {ABSENT + PRESENT!r} if u.find_spec(m)])"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=env,
    ).stdout.splitlines()  # fmt: skip
    assert found[0].startswith(str(machine_like.parent))
    assert found[1] == str(PRESENT)  # none of ABSENT


@pytest.mark.slow  # the whole check end to end: 10 Python processes, 1.5-5 min on 2 loaded cores
def test_tiny_gpu_check_runs_every_stage(machine_like, tmp_path):
    pack = tmp_path / "pack" / "wheels"
    pack.mkdir(parents=True)
    for requirements in gpu_steps().NEEDS.values():
        for requirement in requirements:
            wheel_of(requirement, pack)
    out, env = tmp_path / "out", bare_env(machine_like)
    env |= {"GPU_PACK": str(pack.parent), "GPU_WORK": str(tmp_path / "work")}
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu.sh"), "--tiny", str(out)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=1300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    files = list(out.iterdir())
    assert sorted(f.name for f in files) == ["logs.tar.gz", "summary.json", "summary.txt"]
    assert all(f.stat().st_size <= 16 * 2**20 for f in files)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == STAGES
    assert {s["stage"]: s["status"] for s in summary["stages"]} == dict.fromkeys(STAGES, "ok"), done.stdout
    assert summary["all_stages_ran"] and "all stages ran: True" in (out / "summary.txt").read_text()
    with tarfile.open(out / "logs.tar.gz") as logs:
        installed = logs.extractfile("logs/install.log").read().decode()
    assert "installing 10 wheels" in installed  # the bare environment lacked every group
    fast = summary["fast"]["rows"]
    assert [r["seed"] for r in fast] == [0, 1] and all(r["tta_test_accuracy"] is not None for r in fast)
    assert all(r["seconds_less_epoch_1"] is None for r in fast)  # one epoch: nothing after the warm-up
    assert {r["model"] for r in summary["precision"]["rows"]} >= {"vgg16", "resnet18", "vit", "airbench"}
    assert set(summary["lab"]) == {s.removeprefix("lab-") for s in STAGES if s.startswith("lab-")}
    study = {t["run"]: t for t in summary["study"]["table"]}
    assert set(study) == {"simple_cnn-sgd", "simple_cnn-adam", "simple_cnn-yogi"}
    assert all(t["seeds"] == 2 for t in study.values())  # tests/e2e_study.yaml: the simple CNN's 2 seeds


@pytest.mark.slow
def test_a_failing_stage_still_gives_the_summary(machine_like, tmp_path):
    """No wheels: install fails, the stages that need them fail, the summary still says so."""
    out, env = tmp_path / "out", bare_env(machine_like)
    env |= {"GPU_PACK": str(tmp_path / "empty"), "GPU_WORK": str(tmp_path / "work"), "GPU_BUDGET_S": "40"}
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu.sh"), "--tiny", str(out)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    assert status["install"] == "failed" and status["data"] == "failed"
    assert set(status.values()) <= {"failed", "skipped", "timeout"}  # a stage cut to seconds may time out
    assert not summary["all_stages_ran"]
    assert sorted(f.name for f in out.iterdir()) == ["logs.tar.gz", "summary.json", "summary.txt"]


def test_the_pins_meet_the_projects_requirements():
    """Each wheel the check carries is a version pyproject.toml allows (keep the two in step)."""
    import tomllib

    from packaging.utils import canonicalize_name

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    allowed = {canonicalize_name(r.name): r.specifier for r in map(Requirement, declared)}
    pins = [r for group in gpu_steps().NEEDS.values() for r in group]
    assert len({canonicalize_name(r.partition("==")[0]) for r in pins}) == len(pins)  # one version each
    checked = 0
    for pin in pins:
        name, _, version = pin.partition("==")
        if canonicalize_name(name) in allowed:
            assert allowed[canonicalize_name(name)].contains(version), f"{pin} against pyproject.toml"
            checked += 1
    assert checked == 4  # jsonschema, vit-pytorch, torch-optimizer, tqdm; the rest are their needs


def test_the_summary_records_a_diverged_seed_and_a_timed_out_stage(tmp_path):
    """A diverged seed (no accuracies) is a row of the table, not a crash; a stopped stage says so."""
    (tmp_path / "fast" / "airbench-seed0").mkdir(parents=True)
    (tmp_path / "fast" / "airbench-seed0" / "history.csv").write_text("epoch,seconds\n1,2.5\n2,1.0\n3,1.5\n")
    rows = [
        {"seed": 0, "status": "ok", "test_accuracy": 93.5, "tta_test_accuracy": 94.25, "train_seconds": 5.0},
        {
            "seed": 1,
            "status": "diverged",
            "test_accuracy": None,
            "tta_test_accuracy": None,
            "train_seconds": 1.0,
        },
    ]
    run = {
        "epochs": 3,
        "precision": "bf16",
        "rows": rows,
        "diverged": 1,
        "tta_mean": 94.25,
        "plain_mean": 93.5,
    }
    (tmp_path / "fast" / "run.json").write_text(json.dumps({**run, "train_seconds_mean": 3.0}))
    (tmp_path / "stages.tsv").write_text("fast\tok\t0\t9\t120\nstudy\ttimeout\t124\t60\t60\n")
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_steps.py"), "summary", "--out", str(tmp_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    text = (tmp_path / "summary.txt").read_text()
    assert "| 0 | ok | 93.50 | 94.25 | 0.75 | 5.00 | 2.50 |" in text  # less epoch 1: 1.0 + 1.5 s
    assert "| 1 | diverged | - | - | - | 1.00 | - |" in text
    assert "1 diverged" in text and "| study | timeout | 124 | 60 | 60 |" in text
    assert "all stages ran: False" in text
    assert (
        json.loads((tmp_path / "summary.json").read_text())["fast"]["rows"][0]["seconds_less_epoch_1"] == 2.5
    )


@pytest.mark.parametrize("out", ["--bogus", "", "nonempty"])
def test_a_wrong_out_is_refused_and_nothing_is_removed(tmp_path, out):
    """The check archives and removes what it writes in OUT. An OUT that is an option, empty, or a
    folder holding anything must stop it before it writes anything: once, `--bogus` made it archive
    and remove the checkout it ran from. So it runs from a copy here, never from the real one."""
    checkout = tmp_path / "checkout"
    (checkout / "benchmarks").mkdir(parents=True)
    for name in ("gpu.sh", "gpu_steps.py"):
        (checkout / "benchmarks" / name).write_bytes((ROOT / "benchmarks" / name).read_bytes())
    (checkout / "keep.txt").write_text("mine")
    if out == "nonempty":
        out = str(checkout)
    result = subprocess.run(
        ["bash", str(checkout / "benchmarks" / "gpu.sh"), out], cwd=checkout, capture_output=True, text=True
    )
    assert result.returncode != 0, result.stderr
    assert "OUT" in result.stderr or "usage" in result.stderr
    assert (checkout / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in checkout.iterdir()) == ["benchmarks", "keep.txt"]
