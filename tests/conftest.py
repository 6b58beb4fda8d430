"""Shared fixtures: small learnable synthetic data in the prepared-tensor format."""

from __future__ import annotations

import os
import re

# Before torch is imported (as cifarlab/__init__.py does for the workflow): spinning OpenMP
# threads make a loaded 2-core machine 10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# A cluster user's checkpoint interval (docs/cluster.md) in the shell that runs the tests would
# override the intervals the tests set: the tests that need one set it themselves.
os.environ.pop("CIFARLAB_CHECKPOINT_INTERVAL_S", None)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from cifarlab.config.schema import load_schema  # noqa: E402
from cifarlab.data import synthetic  # noqa: E402
from cifarlab.models import model_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Keep the suite polite on a 2-core machine shared with other jobs.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def lab_run(**overrides) -> dict:
    """A complete run, as `validate_config` expands one: config/config.yaml's `defaults:`, the keys
    expansion adds (name, entry, sweep, pretrained, the model's `freeze`, image_size 32 px, a ViT's
    `vit:` from the schema's defaults), then `overrides`. Tests state only what they mean to set."""
    with open(ROOT / "config" / "config.yaml") as f:
        defaults = yaml.safe_load(f)["defaults"]
    model = overrides.get("model", "simple_cnn")
    run = {
        **defaults,
        "model": model,
        "name": "test_run",
        "entry": "test_run",
        "sweep": {},
        "pretrained": False,
        "freeze": model_spec(model).default_freeze,
        "image_size": 32,
    }
    if model == "vit":
        run["vit"] = schema_vit_defaults()
    return {**run, **overrides}


def schema_vit_defaults() -> dict:
    """The schema's `$defs.vit` defaults (the lab's ViT), as validation fills a run's `vit:`."""
    vit = load_schema()["$defs"]["vit"]["properties"]
    return {key: spec["default"] for key, spec in vit.items()}


def prepared_split(images: torch.Tensor, labels: torch.Tensor, mean=None, std=None) -> dict:
    """The dict that `prepare` saves, built in memory (see docs/architecture.md)."""
    pixels = images.float() / 255
    return {
        "images": images,
        "labels": labels,
        "classes": list(synthetic.CLASSES),
        "mean": pixels.mean(dim=(0, 2, 3)) if mean is None else mean,
        "std": pixels.std(dim=(0, 2, 3)) if std is None else std,
        "source": "synthetic",
    }


@pytest.fixture(scope="session")
def synthetic_data() -> dict[str, dict]:
    """{"train": prepared dict (2,000 images), "test": prepared dict (500 images)}, 32 px."""
    splits = synthetic.make_dataset(train_per_class=200, test_per_class=50, size=32, seed=0)
    train = prepared_split(*splits["train"])
    test = prepared_split(*splits["test"], mean=train["mean"], std=train["std"])
    return {"train": train, "test": test}


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory, synthetic_data) -> dict[str, Path]:
    """The same data saved as `results/data/<dataset>/{train,test}.pt` files."""
    folder = tmp_path_factory.mktemp("prepared")
    paths = {}
    for split, data in synthetic_data.items():
        paths[split] = folder / f"{split}.pt"
        torch.save(data, paths[split])
    return paths


def planned_jobs(output: str) -> list[dict]:
    """The jobs a Snakemake dry run lists (its terminal output): per job its "rule", its
    "wildcards" and its "resources" (dicts of strings), in the order printed."""
    jobs: list[dict] = []
    for line in output.splitlines():
        text = line.strip()
        rule = re.fullmatch(r"(?:local)?rule (\w+):", text)
        if rule:
            jobs.append({"rule": rule.group(1), "wildcards": {}, "resources": {}})
            continue
        for key in ("wildcards", "resources"):
            if jobs and text.startswith(f"{key}: "):
                pairs = (item.split("=", 1) for item in text[len(key) + 2 :].split(", "))
                jobs[-1][key] = {k: v for k, v in pairs}
    return jobs


def planned_counts(output: str) -> dict[str, int]:
    """Rule -> number of jobs, from the table a dry run prints (`--quiet rules`: "train  45")."""
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts
