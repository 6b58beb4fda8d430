"""The study's datasets: the built-in ones by name, and `datasets:` / `dataset:` read into one form.

A dataset is one source of images with its train and test splits (docs/data.md): a built-in name
(`cifar10`, `cifar100`: the official python archives, their published URLs and md5s), a path or
URL of an archive or image folder, or `synthetic`. Each is fetched, checked and prepared once, under
its `name` (resources/<name>/, results/data/<name>/), and every run of the study trains on each
dataset it names (all, by default).

`study_datasets(config)` gives every dataset of a validated config in one form, name -> settings:
    name       folder and label of the dataset (ASCII: a Snakemake wildcard, a cluster's file system)
    source     URL, path, file:// URL or "synthetic"
    md5        the archive's published md5, or None (not checked)
    labels     "fine" or "coarse": which of a CIFAR-100 archive's labels (other layouts: "fine")
    image_size pixels of the prepared tensors
    synthetic  the generated set's sizes (cifarlab.data.synthetic), when source is "synthetic", else None
    reference  whether the lab's reference numbers (report.reference) apply: it is CIFAR-10

No torch here: the .smk files import this module.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Any

from cifarlab.core.messages import shown
from cifarlab.core.paths import RESERVED_NAMES


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset known by name: where its official archive is and what it holds."""

    source: str
    md5: str
    train_images: int
    test_images: int
    # classes per kind of label (CIFAR-100 has 100 fine classes in 20 coarse superclasses)
    classes: dict[str, int]
    # whether the lab's reference numbers (measured on CIFAR-10) apply to it
    reference: bool


BUILTIN: dict[str, BuiltinDataset] = {
    "cifar10": BuiltinDataset(
        source="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_images=50_000,
        test_images=10_000,
        classes={"fine": 10},
        reference=True,
    ),
    "cifar100": BuiltinDataset(
        source="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_images=50_000,
        test_images=10_000,
        classes={"fine": 100, "coarse": 20},
        reference=False,
    ),
}


class DatasetError(ValueError):
    """A dataset entry of the config cannot be used; the message names the key and what exists."""


# The longest run or dataset name, in bytes of UTF-8. The longest file name built from one is
# `.<dataset>-content.json.<8 random>.part` (cifarlab.core.paths.CONTENT_CACHE, written through
# core.files.atomic_path: the name + 28); file systems allow 255 bytes per name, eCryptfs 143.
MAX_NAME_BYTES = 100


def name_too_long(name: str, what: str, where: str) -> str | None:
    """The config error for a `what` ("run", "dataset") name longer than MAX_NAME_BYTES (UTF-8), set
    at config key `where`, or None: its files' names would pass the file system's limit, and the
    study would die mid-way with "File name too long"."""
    size = len(name.encode())
    if size <= MAX_NAME_BYTES:
        return None
    return (
        f"config error at {where}: the {what} name {shown(name)} is {size} bytes long; names are at "
        f"most {MAX_NAME_BYTES} bytes (cifarlab.data.catalog.MAX_NAME_BYTES: the file names built "
        "from them must fit the file system's limit of 255). Choose a shorter name."
    )


def check_names(config: dict) -> None:
    """Turn each built-in name of `datasets:` into its mapping ({name: cifar10}), in place, so that
    the schema check fills in its defaults; an unknown name is an error naming the built-in ones."""
    items = config.get("datasets")
    if not isinstance(items, list):
        return  # the schema check names a bad `datasets`
    for i, item in enumerate(items):
        if not isinstance(item, str | dict):
            raise DatasetError(
                f"config error at datasets[{i}]: got {shown(item)}; a dataset is a built-in name "
                f"({sorted(BUILTIN)}) or a mapping {{name: mine, source: path/or/url}}."
            )
        if isinstance(item, str):
            if item not in BUILTIN:
                raise DatasetError(
                    f"config error at datasets[{i}]: unknown dataset {shown(item)}; built-in datasets: "
                    f"{sorted(BUILTIN)}. For other data give a mapping: {{name: mine, source: path/or/url}}."
                )
            items[i] = {"name": item}


def _resolved(entry: dict, where: str) -> dict:
    """An entry with its source, md5, labels, image_size, synthetic and reference filled in."""
    name = entry["name"]
    source = entry.get("source")
    builtin = BUILTIN.get(source if source is not None else name)
    if source is None and builtin is None:
        raise DatasetError(
            f"config error at {where}.source: dataset {shown(name)} is not built in ({sorted(BUILTIN)}), "
            "so it needs a source: a URL, a path (archive or image folder), a file:// URL or 'synthetic'."
        )
    labels = entry["labels"]
    if builtin is not None and labels not in builtin.classes:
        raise DatasetError(
            f"config error at {where}.labels: got {shown(labels)}; "
            f"this dataset has the labels {sorted(builtin.classes)}."
        )
    resolved_source = builtin.source if builtin is not None else source
    return {
        "name": name,
        "source": resolved_source,
        "md5": entry["md5"] if "md5" in entry else (builtin.md5 if builtin else None),
        "labels": labels,
        "image_size": entry["image_size"],
        "synthetic": entry.get("synthetic") if resolved_source == "synthetic" else None,
        "reference": entry.get("reference", builtin.reference if builtin else False),
    }


def study_datasets(config: dict) -> dict[str, dict]:
    """name -> settings (the module docstring's form) of every dataset of a config that
    `check_names` and the schema check (which fills in the defaults) have seen.

    `dataset:` (one dataset, the form before `datasets:`) replaces `datasets:` when given, so an
    overlay that names one dataset is that study's data. `data_source` (a command-line override)
    points a one-dataset study at other data: its source (md5 then unknown) and a name of its own
    (`source_name`), so that the prepared tensors of two sources never overwrite each other.
    """
    if config.get("dataset"):
        items, where = [config["dataset"]], "dataset"
    else:
        items, where = list(config.get("datasets") or []), "datasets"
    if not items:
        raise DatasetError("config error at datasets: the study has no dataset; e.g. datasets: [cifar10].")
    datasets: dict[str, dict] = {}
    for i, item in enumerate(items):
        here = where if where == "dataset" else f"{where}[{i}]"
        settings = _resolved(item, here)
        name = settings["name"]
        if name in RESERVED_NAMES:
            raise DatasetError(
                f"config error at {here}.name: {shown(name)} is a folder of results/ "
                f"({list(RESERVED_NAMES)}); "
                "choose another name."
            )
        if name in datasets:
            raise DatasetError(f"config error at {here}.name: the dataset {shown(name)} is listed twice.")
        too_long = name_too_long(name, "dataset", f"{here}.name")
        if too_long:
            raise DatasetError(too_long)
        datasets[name] = settings
    if config.get("data_source"):
        if len(datasets) != 1:
            raise DatasetError(
                f"config error at data_source: it points a one-dataset study at other data, and this study "
                f"has the datasets {list(datasets)}; give each its `source` under datasets: instead."
            )
        (settings,) = datasets.values()
        source = str(config["data_source"])
        settings = {**settings, "source": source, "md5": None, "name": source_name(source)}
        # the entry's generated-set sizes (the schema fills them in), whatever its own source
        settings["synthetic"] = items[0].get("synthetic") if source == "synthetic" else None
        datasets = {settings["name"]: settings}
    return datasets


def source_name(source: str) -> str:
    """A dataset name from a source's file or folder name (`.../cifar10-jpeg.zip` -> `cifar10-jpeg`).

    ASCII only (a Snakemake wildcard, and file systems of clusters): accents are dropped (`données`
    -> `donnees`), letters without an ASCII form too, other characters become `_`.
    """
    base = source.rstrip("/").split("/")[-1] or "data"
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    ascii_base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in ascii_base)
    if not any(c.isalnum() for c in cleaned):
        # no ASCII letter or digit (`猫猫/`): a name from the original's bytes, the same each time,
        # distinct per source name, never empty nor the reserved `data`
        return f"dataset-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
    if cleaned in RESERVED_NAMES:
        cleaned += "-data"
    return cleaned[:MAX_NAME_BYTES]


# What the cost model assumes of a source whose sizes cannot be known before it is fetched (an
# http(s) URL that is not built in): CIFAR-10's.
UNKNOWN_SIZES = {"train": 50_000, "test": 10_000, "classes": 10}
# The generated shapes (cifarlab.data.synthetic.CLASSES; that module imports torch).
SYNTHETIC_CLASSES = 10


def known_sizes(settings: dict, cache: str | None = None) -> dict[str, int] | None:
    """dataset_sizes, None where they are not known yet (the source is not fetched yet, or
    unreadable: dataset_sizes gives UNKNOWN_SIZES, placeholders)."""
    if settings["source"] == "synthetic":
        synthetic = settings["synthetic"]
        return {
            "train": SYNTHETIC_CLASSES * synthetic["train_per_class"],
            "test": SYNTHETIC_CLASSES * synthetic["test_per_class"],
            "classes": SYNTHETIC_CLASSES,
        }
    from cifarlab.data.sources import DataError, source_sizes  # here: cifarlab.data.sources imports BUILTIN

    try:
        return source_sizes(settings["source"], labels=settings["labels"], cache=cache) or None
    except DataError:
        return None


def dataset_sizes(settings: dict, cache: str | None = None) -> dict[str, int]:
    """{"train": images, "test": images, "classes": n} of a dataset, from what is known before it
    is prepared: the synthetic set's settings, or the source's listing or published sizes
    (cifarlab.data.sources.source_sizes; `cache`: its JSON cache file). Resources and the estimate read
    it. A source not yet fetched or unreadable gets UNKNOWN_SIZES: its own step says what is wrong.
    """
    return known_sizes(settings, cache) or dict(UNKNOWN_SIZES)


def reference_datasets(datasets: dict[str, dict]) -> list[str]:
    """The datasets that the lab's reference numbers (measured on CIFAR-10) apply to."""
    return [name for name, settings in datasets.items() if settings["reference"]]


def describe(settings: dict) -> dict[str, Any]:
    """What the report says of a dataset: its name, source, labels and whether the lab's numbers apply."""
    return {k: settings[k] for k in ("name", "source", "labels", "image_size", "reference")}
