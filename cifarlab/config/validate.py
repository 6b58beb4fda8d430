"""The study's configuration: validation against the JSON schema and expansion of sweeps into runs.

A *run* is one trained model. `config["runs"]` holds named entries; an entry with a `sweep`
becomes one run per value (or per combination of values), named `<entry>-<value>` for words
and `<entry>-<setting><value>` for numbers (`simple_cnn-adam`, `dropout_cnn-dropout0.1`).
Every run carries all settings: `defaults`, then the entry, then the sweep value.

A study trains every run on each of its datasets (cifarlab.data.catalog; a run's `datasets` may name
fewer) with each of its seeds: one *job* per (dataset, run, seed), whose settings are the run's
with that `seed` and `dataset` (`job_settings`); `study_jobs` lists them.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

import yaml

from cifarlab.config.budgets import apply_budget, apply_study_budget, apply_time_caps, parse_time_budget
from cifarlab.config.schema import (
    ConfigError,
    FillingValidator,
    check_schema,
    key_path,
    load_schema,
    raise_first_error,
)
from cifarlab.core import paths
from cifarlab.core.messages import cut, shown, shown_names
from cifarlab.core.yamlfiles import YamlTooLarge, check_expanded_size, load_yaml
from cifarlab.data.catalog import DatasetError, check_names, name_too_long, study_datasets
from cifarlab.models.specs import BUILTIN as BUILTIN_MODELS
from cifarlab.models.specs import UnknownModel, check_model, model_spec


def sweep_run_name(entry: str, assignment: list[tuple[str, Any]]) -> str:
    """`dropout_cnn` + [("dropout", 0.1)] -> `dropout_cnn-dropout0.1`; words stand alone."""
    parts = [entry]
    for key, value in assignment:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, bool):
            parts.append(f"{key}{str(value).lower()}")
        else:
            parts.append(f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}")
    return "-".join(parts)


def _check_run_name(name: str, where: list) -> None:
    """A run's name becomes a folder and the {run} wildcard: it must match paths.RUN_NAME."""
    if not re.fullmatch(paths.RUN_NAME, name):
        raise ConfigError(
            f"config error at {key_path(where)}: the run name {shown(name)} is not a valid file name "
            "for a run: "
            "use letters, digits and _ . + - (a sweep's text values included: no '/' or spaces), starting "
            f"with a letter, digit or _, and not {list(paths.RESERVED_RUN_NAMES)} (files beside a run's)."
        )


def _checked_model(settings: dict, where: list, root: str | Path):
    """The spec of a run's model (cifarlab.models.specs), once its name is known to exist."""
    key = key_path(where + ["model"])
    try:
        spec = check_model(settings["model"], root)
    except UnknownModel as error:
        raise ConfigError(f"config error at {key}: {cut(str(error))}.") from None
    if settings.get("model_args") and settings["model"] in BUILTIN_MODELS:
        raise ConfigError(
            f"config error at {key_path(where + ['model_args'])}: the built-in model "
            f"{shown(settings['model'])} "
            "takes no model_args (its settings are run keys: dropout, vit, airbench); model_args are for "
            "torchvision.<name> and your own models."
        )
    return spec


def expand_runs(config: dict, root: str | Path = ".", time_caps: dict | None = None) -> dict[str, dict]:
    """All runs of a study checked by `check_schema` (validate_config does it), in config order:
    name -> complete settings.

    Each run is `defaults`, then its entry, then its sweep value, then the study's `budget`
    (`apply_budget`). Global switches are applied here so that each run's settings say exactly
    what it depends on: `pretrained` is set per run (True only for pretrainable models when the
    study allows); `image_size: null` is the dataset's image_size. root: the project root, which
    a user's model file is relative to (cifarlab.models.user). time_caps: a time plan's caps
    (cifarlab.study.time_plan), applied after the budget; a run they cut records it under
    `time_budget`, an evaluation key (cifarlab.config.budgets.apply_time_caps).
    """
    defaults = config["defaults"]
    budget = config["budget"]
    datasets = checked_datasets(config)
    schema = load_schema()
    run_schema = {**schema["properties"]["runs"]["additionalProperties"], "$defs": schema["$defs"]}
    unknown = sorted(set(budget["runs"]) - set(config["runs"]))
    if unknown:
        raise ConfigError(
            f"config error at budget.runs: unknown run entr(ies) {shown_names(unknown)}; entries of "
            f"`runs`: {shown_names(sorted(config['runs']))}."
        )
    for entry, settings in budget["runs"].items():
        dimensions = sorted(set(settings) & {"seed", "seeds", "datasets"})
        if dimensions:
            raise ConfigError(
                f"config error at budget.runs.{entry}: {dimensions} say which models a run trains, not "
                f"how big each is; set them under runs.{entry} (or cap seeds with budget.max_seeds)."
            )
    vit_defaults: dict = {}
    FillingValidator({**schema["$defs"]["vit"], "$defs": schema["$defs"]}).validate(vit_defaults)
    runs: dict[str, dict] = {}
    for entry, spec in config["runs"].items():
        spec = copy.deepcopy(spec)
        sweep = spec.pop("sweep", {}) or {}
        keys = list(sweep)
        for values in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
            assignment = list(zip(keys, values, strict=True))
            settings = {**copy.deepcopy(defaults), **spec, **dict(assignment)}
            name = sweep_run_name(entry, assignment)
            where = ["runs", entry] + (["sweep"] if assignment else [])
            _check_run_name(name, where)
            raise_first_error({k: v for k, v in settings.items()}, run_schema, where)
            if name in runs:
                raise ConfigError(f"config error at runs.{entry}: run name {shown(name)} is produced twice.")
            too_long = name_too_long(name, "run", key_path(where))
            if too_long:
                raise ConfigError(too_long)
            # keys a sweep cannot vary: named at the entry
            settings["datasets"] = _run_datasets(settings, datasets, ["runs", entry])
            if settings["image_size"] is None:
                settings["image_size"] = _dataset_image_size(settings, datasets, ["runs", entry])
            if settings["model"] == "vit":  # the keys a run's `vit:` leaves out: the schema's
                settings["vit"] = {**vit_defaults, **(settings.get("vit") or {})}
            apply_budget(settings, budget, budget["runs"].get(entry))
            budgeted = {k: v for k, v in settings.items() if k != "budget"}
            raise_first_error(budgeted, run_schema, ["budget", "runs", entry])
            if time_caps is not None:
                apply_time_caps(settings, time_caps, str(config["time_budget"]), swept=keys)
            settings["name"] = name
            settings["entry"] = entry
            settings["sweep"] = dict(assignment)
            model = _checked_model(settings, where, root)
            settings["pretrained"] = bool(config["pretrained"]) and model.pretrainable
            # the one default that depends on the model: its spec's (a backbone trains its head only)
            settings.setdefault("freeze", model.default_freeze)
            runs[name] = settings
    return runs


def _run_datasets(settings: dict, datasets: dict[str, dict], where: list) -> list[str]:
    """The names of the datasets a run trains on: its `datasets`, or all of the study's."""
    chosen = settings.get("datasets")
    if chosen is None:
        return list(datasets)
    unknown = [name for name in chosen if name not in datasets]
    if unknown:
        raise ConfigError(
            f"config error at {key_path(where + ['datasets'])}: unknown dataset(s) {shown_names(unknown)}; "
            f"the study's datasets: {shown_names(datasets)}."
        )
    return [name for name in datasets if name in chosen]


def _dataset_image_size(settings: dict, datasets: dict[str, dict], where: list) -> int:
    """`image_size: null` is the size the run's datasets are prepared at: one size, for all of them."""
    sizes = {name: datasets[name]["image_size"] for name in settings["datasets"]}
    if len(set(sizes.values())) > 1:
        raise ConfigError(
            f"config error at {key_path(where + ['image_size'])}: null means the datasets' image_size, "
            f"and this run's datasets differ ({sizes}); give the run an image_size."
        )
    return next(iter(sizes.values()))


def study_jobs(runs: dict[str, dict], datasets: list[str]) -> list[dict]:
    """Every trained model of the study, as wildcards {"dataset", "run", "seed"}: dataset by dataset
    (in `datasets` order), each run in config order, each of its seeds."""
    return [
        {"dataset": dataset, "run": name, "seed": seed}
        for dataset in datasets
        for name, run in runs.items()
        if dataset in run["datasets"]
        for seed in run["seeds"]
    ]


def dataset_runs(runs: dict[str, dict], dataset: str, names: list[str] | None = None) -> list[str]:
    """The runs (of `names`, default all, in their order) that train on `dataset`."""
    return [name for name in (list(runs) if names is None else names) if dataset in runs[name]["datasets"]]


def job_settings(run: dict, dataset: str, seed: int | None = None) -> dict:
    """What one job of a run depends on: its settings with `dataset` and `seed` (default: the
    run's first, as the LR finder and saliency use), less the lists `seeds` and `datasets`, so
    that adding a seed or a dataset changes no other job's settings."""
    settings = {k: v for k, v in run.items() if k not in ("seeds", "datasets")}
    settings["dataset"] = dataset
    settings["seed"] = run["seeds"][0] if seed is None else seed
    return settings


def lr_finder_runs(config: dict, runs: dict[str, dict]) -> list[str]:
    """Runs that get an LR-finder sweep: those listed in `lr_finder.runs` plus every `lr: auto` run."""
    listed = list(config["lr_finder"]["runs"])
    for name in listed:
        if name not in runs:
            raise ConfigError(
                f"config error at lr_finder.runs: unknown run {shown(name)}; known runs: "
                f"{shown_names(sorted(runs))}."
            )
    auto = [name for name, r in runs.items() if r["lr"] == "auto" and name not in listed]
    return listed + auto


def saliency_runs(config: dict, runs: dict[str, dict]) -> list[str]:
    chosen = config["saliency"]["runs"]
    if chosen == "all":
        return list(runs)
    for name in chosen:
        if name not in runs:
            raise ConfigError(
                f"config error at saliency.runs: unknown run {shown(name)}; known runs: "
                f"{shown_names(sorted(runs))}."
            )
    return list(chosen)


def typed_overrides(overrides: Any) -> Any:
    """`--config` values as YAML types them: Snakemake reads a value that is a mapping or a list
    (`runs={simple_cnn: {epochs: 1}}`) with YAML's BaseLoader, which leaves every scalar inside it
    text ('1', 'true', 'null'); each such text becomes what yaml.safe_load makes of it (1, True,
    None), as in a config file. Text that YAML reads as text (`1e-3`, paths, names) stays text;
    quoted text loses its quotes (`"'1'"` is the text 1: how to write text that looks like a number).
    """
    if isinstance(overrides, dict):
        return {key: typed_overrides(value) for key, value in overrides.items()}
    if isinstance(overrides, list):
        return [typed_overrides(value) for value in overrides]
    if isinstance(overrides, str):
        try:
            value = load_yaml("--config", text=overrides)
        except (yaml.YAMLError, YamlTooLarge):  # stays text: the schema check says what is wrong
            return overrides
        if value is None or isinstance(value, bool | int | float):
            return value
        quoted = len(overrides) >= 2 and overrides[0] == overrides[-1] and overrides[0] in "'\""
        return value if quoted and isinstance(value, str) else overrides
    return overrides


def command_line_value(text: str) -> Any:
    """One `--config KEY=VALUE`'s value as the Snakefile sees it: Snakemake's reading (an int, a
    float, True/False, else YAML's BaseLoader: mappings, lists and text), then `typed_overrides`.
    For `python -m cifarlab status`, which takes the same --config without importing Snakemake."""
    if text == "":
        return None
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    try:
        value = load_yaml("--config", text=text, loader=yaml.BaseLoader)
    except yaml.YAMLError:
        value = text
    except YamlTooLarge as error:
        raise ConfigError(str(error)) from None
    return typed_overrides(value)


def apply_command_line_overrides(config: dict, overrides: Any) -> None:
    """Write `typed_overrides(overrides)` over `config` (in place): Snakemake has merged them in
    already, as text; the typed values replace them, key by key, so other keys stay."""

    def overwrite(target: dict, typed: dict) -> None:
        for key, value in typed.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                overwrite(target[key], value)
            else:
                target[key] = value

    overwrite(config, typed_overrides(dict(overrides or {})))


def normalise_overrides(config: dict) -> None:
    """Turn `--config pretrained=false` (which Snakemake passes as the string 'false') into a bool."""
    value = config.get("pretrained")
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        config["pretrained"] = value.lower() in ("true", "yes", "1")


def in_study_order(config: dict, study_file: str | Path) -> None:
    """Put `config["runs"]` in the order of `study_file`'s runs, then runs only overlays add.

    Snakemake merges the `--configfile` overlays first and the Snakefile's `configfile:` under
    them, so entries an overlay names (a budgeted study's few per-run lines) would come first and
    reorder the study, its report and its figures. The order is the study file's.
    """
    runs = config.get("runs")
    if not isinstance(runs, dict) or not Path(study_file).is_file():
        return  # the schema check names a bad `runs`; without the file, Snakemake's order stays
    try:
        order = list((load_yaml(study_file) or {}).get("runs") or {})
    except YamlTooLarge as error:
        raise ConfigError(str(error)) from None
    config["runs"] = {
        **{entry: runs[entry] for entry in order if entry in runs},
        **{entry: spec for entry, spec in runs.items() if entry not in order},
    }


def checked_datasets(config: dict) -> dict[str, dict]:
    """cifarlab.data.catalog.study_datasets of a schema-checked config, its errors as ConfigError."""
    try:
        return study_datasets(config)
    except DatasetError as error:
        raise ConfigError(str(error)) from None


def check_config(config: dict) -> None:
    """The study-wide part of validate_config, in place: normalises command-line overrides
    (`normalise_overrides`), checks the datasets, the schema (writing its defaults into `config`)
    and `time_budget`, and caps the LR finder and saliency by the budget (`apply_study_budget`);
    raise ConfigError naming the key. Applying it twice changes nothing. After it, `config` is
    as validate_config leaves it without time caps (the time planner keys its plans by it)."""
    try:  # first: everything below walks the config, and Snakemake loaded its aliases shared
        check_expanded_size(config, "the config (config/config.yaml, its --configfile overlays, --config)")
    except YamlTooLarge as error:
        raise ConfigError(str(error)) from None
    normalise_overrides(config)
    if not config.get("datasets") and not config.get("dataset"):
        raise ConfigError(
            "config error at datasets: the study has no data; give datasets: (a list, e.g. [cifar10]) "
            "or one dataset: mapping (docs/data.md)."
        )
    try:
        check_names(config)
    except DatasetError as error:
        raise ConfigError(str(error)) from None
    check_schema(config)
    checked_datasets(config)
    try:
        parse_time_budget(config["time_budget"])
    except ValueError as error:
        raise ConfigError(f"config error at time_budget: {error}.") from None
    apply_study_budget(config)


def validate_config(
    config: dict, root: str | Path = ".", time_caps: dict | None = None, *, checked: bool = False
) -> dict[str, dict]:
    """Check the whole config and return its expanded runs; raise ConfigError naming the key.

    The one validation of a study: `check_config` first (normalised overrides, the schema's
    default of every missing setting written into `config`, so code reads
    `config["lr_finder"]["suggestion"]`, no fallbacks; the LR finder and saliency capped by the
    budget), then the runs. Applying it twice changes nothing.
    time_caps: a time plan's caps (cifarlab.study.time_plan), applied after the budget.
    checked: `config` already passed check_config (the time planner checks it to find its plan):
    not checked again.
    """
    if not checked:
        check_config(config)
    if time_caps is not None:
        apply_study_budget(config, time_caps)
    runs = expand_runs(config, root, time_caps)
    lr_finder_runs(config, runs)
    saliency_runs(config, runs)
    for run in runs.values():
        spec = model_spec(run["model"])
        if run["image_size"] < spec.min_image_size:
            raise ConfigError(
                f"config error at runs.{run['entry']}.image_size: {run['model']} needs image_size >= "
                f"{spec.min_image_size}, got {run['image_size']} "
                "(from the run, its defaults, dataset.image_size or budget.max_image_size)."
            )
        if not spec.pretrainable and run["freeze"] == "head":
            pretrainable = [name for name, s in BUILTIN_MODELS.items() if s.pretrainable]
            pretrainable.append("torchvision.<name>")
            raise ConfigError(
                f"config error at runs.{run['entry']}.freeze: 'head' needs a pretrained backbone "
                f"({pretrainable}), not {shown(run['model'])}; use freeze: none."
            )
    return runs


def uses_cached_features(run: dict) -> bool:
    """A frozen pretrained-style backbone with no augmentation: the head trains on cached features.

    (Translation in training and test-time augmentation need the images, as crops and flips do.)
    """
    return (
        run["freeze"] == "head"
        and run["augment"] == "none"
        and run["translate"] == 0
        and run["tta"] == "none"
    )
