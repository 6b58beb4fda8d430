"""The environment a result was made in, to replay it: every installed distribution and its version
(importlib.metadata), torch's build (CUDA, cuDNN), the CPU's model and the flags that decide
`precision: auto` (cifarlab.core.device.cpu_has_native_bf16: avx512_bf16, AMX), the GPUs, and for a
dirty git tree the uncommitted diff itself (tracked changes and untracked files), by its sha256.

`evaluate` writes `environment()` into each metrics.json and saves the diff under
results/diffs/<sha256>.diff (content-addressed: the runs of one tree share one file); the report
shows its own in "How it was made" and saves its diff as results/report/uncommitted.diff.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from cifarlab.core.code_version import PACKAGE_DIR, code_version
from cifarlab.core.files import write_text

# Where evaluate keeps each dirty tree's diff, by its sha256 (relative to the project).
DIFFS = "results/diffs"
# The CPU flags that choose bf16 under `precision: auto` (cifarlab.core.device), and AVX2/AVX-512 beside.
PRECISION_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def distributions() -> dict[str, str]:
    """Every installed distribution -> its version, sorted by name (lower case)."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = dist.version
    return dict(sorted(found.items()))


def cpu() -> dict:
    """The CPU's model name and which of PRECISION_FLAGS it has (Linux: /proc/cpuinfo), and what
    torch itself detects for bf16 (the test that decides `precision: auto`)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    import torch

    from cifarlab.core.device import cpu_has_native_bf16

    return {
        "model": model,
        "flags": {flag: flag in flags for flag in PRECISION_FLAGS},
        "native_bf16": cpu_has_native_bf16(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def torch_build() -> dict:
    """torch's version and build: CUDA and cuDNN versions (None where built without), and the GPUs."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn, "gpus": gpus}


def uncommitted_diff(root: str | Path | None = None) -> str:
    """The git tree's uncommitted changes as a patch: `git diff HEAD` and every untracked file git
    does not ignore as an added file. '' for a clean tree or outside a git checkout."""
    root = Path(root) if root is not None else PACKAGE_DIR

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        return done.stdout  # `diff --no-index` exits 1 when files differ: its output is the answer

    try:
        top = git("rev-parse", "--show-toplevel").strip()
        if not top:
            return ""
        root = Path(top)
        patch = git("diff", "--binary", "HEAD")
        for name in git("ls-files", "--others", "--exclude-standard").splitlines():
            patch += git("diff", "--binary", "--no-index", "--", "/dev/null", name)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return patch


def save_diff(patch: str, folder: str | Path = DIFFS) -> str | None:
    """Save a non-empty patch as <folder>/<sha256>.diff; its sha256 (None for no patch)."""
    if not patch:
        return None
    digest = hashlib.sha256(patch.encode()).hexdigest()
    path = Path(folder) / f"{digest}.diff"
    if not path.exists():
        write_text(patch, path)
    return digest


def environment(diffs: str | Path | None = DIFFS) -> dict:
    """The record of metrics.json's `environment` key: python, platform, cpu, torch (build, GPUs),
    the code version, `diff_sha256` (the saved uncommitted diff of a dirty tree, or None) and
    every distribution. diffs: where to save the diff (None: not saved, its hash still given)."""
    version = code_version()
    patch = uncommitted_diff() if version.get("dirty") else ""
    digest = save_diff(patch, diffs) if diffs is not None else None
    if diffs is None and patch:
        digest = hashlib.sha256(patch.encode()).hexdigest()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu(),
        "torch": torch_build(),
        "code_version": version,
        "diff_sha256": digest,
        "distributions": distributions(),
    }
