"""The study's configuration: validation against the JSON schema and expansion of sweeps into runs.

A *run* is one trained model. `config["runs"]` holds named entries; an entry with a `sweep`
becomes one run per value (or per combination of values), named `<entry>-<value>` for words
and `<entry>-<setting><value>` for numbers (`simple_cnn-adam`, `dropout_cnn-dropout0.1`).
Every run carries all settings: `defaults`, then the entry, then the sweep value.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import unicodedata
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cifarlab.models.specs import BUILTIN as BUILTIN_MODELS
from cifarlab.models.specs import UnknownModel, check_model, model_spec

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key, the value and what is allowed."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _key_path(path: Any) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (("." if parts else "") + str(p)))
    return "".join(parts) or "(top level)"


def _explain(error: jsonschema.ValidationError, where: str) -> str:
    """Turn a jsonschema error into one sentence that names the key and what is allowed."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return (
            f"config error at {where}: unknown key(s) {unknown}. "
            f"Allowed keys here: {allowed}. Check the spelling."
        )
    if error.validator == "oneOf":
        # e.g. lr: a positive number or "auto"; report the alternatives together.
        options = []
        for sub in schema.get("oneOf", []):
            if "enum" in sub:
                options.append(" or ".join(repr(v) for v in sub["enum"]))
            elif "exclusiveMinimum" in sub:
                options.append(f"a number > {sub['exclusiveMinimum']}")
            elif "items" in sub:
                options.append("a list")
        return (
            f"config error at {where}: got {error.instance!r}; allowed: {', or '.join(options)}."
            + _number_as_string_hint(error.instance)
        )
    if error.validator == "enum":
        return f"config error at {where}: got {error.instance!r}; allowed values: {error.validator_value}."
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        lo_b = "[" if "minimum" in schema else "("
        hi_b = "]" if "maximum" in schema else ")"
        rng = f"{lo_b}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{hi_b}"
        return f"config error at {where}: got {error.instance!r}; allowed range: {rng}."
    if error.validator == "required":
        return f"config error at {where}: {error.message}."
    return f"config error at {where}: {error.message}."


def _number_as_string_hint(value: Any) -> str:
    """YAML 1.1 (PyYAML, Snakemake) reads `1e-3` without a dot as a string: say how to write it."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    mantissa, _, exponent = value.lower().partition("e")
    written = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}" if exponent else repr(number)
    return f" YAML reads {value} as text, not a number: write {written} (with a dot)."


def _raise_first_error(instance: Any, schema: dict, prefix: list) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        # best_match descends into one branch of a oneOf (lr: number or "auto"); name all branches.
        while error.parent is not None and error.parent.validator == "oneOf":
            error = error.parent
        raise ConfigError(_explain(error, _key_path(prefix + list(error.absolute_path))))


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


def _checked_model(settings: dict, where: list, root: str | Path):
    """The spec of a run's model (cifarlab.models.specs), once its name is known to exist."""
    key = _key_path(where + ["model"])
    try:
        spec = check_model(settings["model"], root)
    except UnknownModel as error:
        raise ConfigError(f"config error at {key}: {error}.") from None
    if settings.get("model_args") and settings["model"] in BUILTIN_MODELS:
        raise ConfigError(
            f"config error at {_key_path(where + ['model_args'])}: the built-in model {settings['model']!r} "
            "takes no model_args (its settings are run keys: dropout, vit, airbench); model_args are for "
            "torchvision.<name> and your own models."
        )
    return spec


def expand_runs(config: dict, root: str | Path = ".") -> dict[str, dict]:
    """All runs of the study, in config order: name -> complete settings (defaults merged in).

    Global switches are applied here so that each run's settings say exactly what it depends
    on: `pretrained` is set per run (True only for pretrainable models when the study allows).
    root: the project root, which a user's model file is relative to (cifarlab.models.user).
    """
    defaults = config.get("defaults", {})
    schema = load_schema()
    run_schema = {**schema["properties"]["runs"]["additionalProperties"], "$defs": schema["$defs"]}
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
            _raise_first_error({k: v for k, v in settings.items()}, run_schema, where)
            if name in runs:
                raise ConfigError(f"config error at runs.{entry}: run name {name!r} is produced twice.")
            settings["name"] = name
            settings["entry"] = entry
            settings["sweep"] = dict(assignment)
            model = _checked_model(settings, where, root)
            settings["pretrained"] = bool(config.get("pretrained", True)) and model.pretrainable
            settings.setdefault("dropout", 0.0)
            settings.setdefault("freeze", model.default_freeze)
            settings.setdefault("image_size", config["dataset"]["image_size"])
            runs[name] = settings
    return runs


def lr_finder_runs(config: dict, runs: dict[str, dict]) -> list[str]:
    """Runs that get an LR-finder sweep: those listed in `lr_finder.runs` plus every `lr: auto` run."""
    listed = list(config.get("lr_finder", {}).get("runs", []))
    for name in listed:
        if name not in runs:
            raise ConfigError(
                f"config error at lr_finder.runs: unknown run {name!r}; known runs: {sorted(runs)}."
            )
    auto = [name for name, r in runs.items() if r["lr"] == "auto" and name not in listed]
    return listed + auto


def saliency_runs(config: dict, runs: dict[str, dict]) -> list[str]:
    chosen = config.get("saliency", {}).get("runs", "all")
    if chosen == "all":
        return list(runs)
    for name in chosen:
        if name not in runs:
            raise ConfigError(
                f"config error at saliency.runs: unknown run {name!r}; known runs: {sorted(runs)}."
            )
    return list(chosen)


def normalise_overrides(config: dict) -> None:
    """Turn `--config pretrained=false` (which Snakemake passes as the string 'false') into a bool."""
    value = config.get("pretrained")
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        config["pretrained"] = value.lower() in ("true", "yes", "1")


def validate_config(config: dict, root: str | Path = ".") -> dict[str, dict]:
    """Check the whole config and return its expanded runs; raise ConfigError naming the key.

    Normalises command-line overrides in place first (see `normalise_overrides`). root: the
    project root (the workflow's working directory), which user model files are relative to.
    """
    normalise_overrides(config)
    _raise_first_error(config, load_schema(), [])
    runs = expand_runs(config, root)
    lr_finder_runs(config, runs)
    saliency_runs(config, runs)
    for run in runs.values():
        spec = model_spec(run["model"])
        if run["image_size"] < spec.min_image_size:
            raise ConfigError(
                f"config error at runs.{run['entry']}.image_size: {run['model']} needs image_size >= "
                f"{spec.min_image_size}, got {run['image_size']} "
                "(from the run, its defaults or dataset.image_size)."
            )
        if not spec.pretrainable and run.get("freeze") == "head":
            pretrainable = [name for name, s in BUILTIN_MODELS.items() if s.pretrainable]
            pretrainable.append("torchvision.<name>")
            raise ConfigError(
                f"config error at runs.{run['entry']}.freeze: 'head' needs a pretrained backbone "
                f"({pretrainable}), not {run['model']!r}; use freeze: none."
            )
    return runs


def settings_hash(settings: Any) -> str:
    """A short stable hash of JSON-able settings (for the report's provenance)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_source(config: dict) -> tuple[str, str | None]:
    """(source, md5) of the study's data: `data_source` overrides `dataset.source` (md5 then unknown)."""
    if config.get("data_source"):
        return str(config["data_source"]), None
    return config["dataset"]["source"], config["dataset"].get("md5")


def dataset_name(config: dict) -> str:
    """Folder name of the data under resources/ and results/data/.

    An overriding `data_source` gets its own name (from its file or folder name) so that the
    prepared tensors of two sources never overwrite each other.
    """
    if not config.get("data_source"):
        return config["dataset"]["name"]
    base = str(config["data_source"]).rstrip("/").split("/")[-1] or "data"
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    # ASCII only (the Snakefile's {dataset} wildcard, and file systems of clusters): accents are
    # dropped (`données` -> `donnees`), letters without an ASCII form too, other characters become `_`.
    ascii_base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in ascii_base)
    return cleaned or "data"


def uses_cached_features(run: dict) -> bool:
    """A frozen pretrained-style backbone with no augmentation: the head trains on cached features.

    (Translation in training and test-time augmentation need the images, as crops and flips do.)
    """
    return (
        run["freeze"] == "head"
        and run["augment"] == "none"
        and run.get("translate", 0) == 0
        and run.get("tta", "none") == "none"
    )
