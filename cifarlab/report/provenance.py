"""How a study was made and on what data: the date, the config's hash, devices, compute time from
Snakemake's benchmark files, package versions and the host, and the prepared data's images per
class. The page shows them in its "Data" and "How it was made" sections.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from cifarlab.core.code_version import describe
from cifarlab.core.files import load_torch
from cifarlab.study import results

PACKAGES = (
    "torch",
    "torchvision",
    "snakemake",
    "matplotlib",
    "captum",
    "vit-pytorch",
    "torch-optimizer",
    "numpy",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def benchmark_seconds(paths: Iterable[str | Path]) -> dict[str, float]:
    """Wall seconds per rule from Snakemake benchmark TSVs (`results/benchmarks/<rule>/...`)."""
    totals: dict[str, float] = {}
    for path in paths:
        parts = Path(path).parts
        rule = parts[parts.index("benchmarks") + 1] if "benchmarks" in parts else Path(path).parent.name
        for seconds in results.benchmark_seconds(path):
            totals[rule] = totals.get(rule, 0.0) + seconds
    return totals


def class_counts(prepared: str | Path) -> dict[str, int]:
    """Images per class of a prepared split (only its labels are read from disk)."""
    import torch  # here only: the prepared tensors are torch's; nothing else of the report needs it

    data = load_torch(prepared, mmap=True)
    counts = torch.bincount(data["labels"], minlength=len(data["classes"])).tolist()
    return dict(zip(data["classes"], counts, strict=True))


def provenance(
    metrics: Sequence[dict],
    config_hash: str,
    benchmarks: Iterable[str | Path],
    facts: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The facts of "How it was made": date (UTC), config hash, the devices of the runs, compute
    seconds per rule, package versions and the host. `facts` (name -> value) adds facts that the
    page lists after the versions, in order (e.g. the code version)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "config_hash": config_hash,
        "devices": sorted({str(m["device"]) for m in metrics}),
        "compute_seconds": benchmark_seconds(benchmarks),
        "versions": package_versions(),
        "facts": {
            # the code of each run's evaluation (metrics.json), then what the caller adds (the report's)
            "code of the runs": "; ".join(
                sorted({describe(m["code_version"]) for m in metrics if m.get("code_version")})
            )
            or "not recorded",
            **(facts or {}),
        },
        "host": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        # cifarlab.core.environment.environment() of the report step: build, CPU, GPUs, distributions
        "environment": dict(environment or {}),
    }
