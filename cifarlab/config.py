"""The study's configuration: validation against the JSON schema and expansion of sweeps into runs.

A *run* is one trained model. `config["runs"]` holds named entries; an entry with a `sweep`
becomes one run per value (or per combination of values), named `<entry>-<value>` for words
and `<entry>-<setting><value>` for numbers (`simple_cnn-adam`, `dropout_cnn-dropout0.1`).
Every run carries all settings: `defaults`, then the entry, then the sweep value.

A study trains every run on each of its datasets (cifarlab.datasets; a run's `datasets` may name
fewer) with each of its seeds: one *job* per (dataset, run, seed), whose settings are the run's
with that `seed` and `dataset` (`job_settings`); `study_jobs` lists them.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cifarlab.datasets import DatasetError, check_names, study_datasets
from cifarlab.models.specs import BUILTIN as BUILTIN_MODELS
from cifarlab.models.specs import UnknownModel, check_model, model_spec

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key, the value and what is allowed."""


# libyaml's parser where PyYAML has it (the schema is read on every Snakemake call: 10x faster)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=1)
def _parsed_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.load(f, Loader=YAML_LOADER)


def load_schema() -> dict:
    """The config schema (workflow/schemas/config.schema.yaml), parsed once per process; a copy."""
    return copy.deepcopy(_parsed_schema())


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
            elif "minimum" in sub:
                options.append(
                    f"{'an integer' if sub.get('type') == 'integer' else 'a number'} >= {sub['minimum']}"
                )
            elif "items" in sub:
                options.append(sub.get("description") or "a list")
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
    if not math.isfinite(number):
        return ""  # nan, inf: text in YAML with or without quotes
    mantissa, _, exponent = value.lower().partition("e")
    if not exponent:
        return f" {value!r} is text, not a number: write {value} without quotes."
    # PyYAML's float needs a dot and a signed exponent: 1.0e-3, 1.0e+5
    sign = "" if exponent[0] in "+-" else "+"
    written = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{sign}{exponent}"
    return f" YAML reads {value} as text, not a number: write {written} (with a dot)."


def _filling_defaults(validator_class: type) -> type:
    """A validator that also writes each schema `default` into the config where a key is missing.

    jsonschema's documented extension pattern: the `properties` keyword sets the defaults of the
    object it checks before checking it, so a section's default ({}) is filled first and then its
    own keys' defaults. Defaults are deep-copied: no two configs share a list or a dict.
    """
    check_properties = validator_class.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_then_check})


_FillingValidator = _filling_defaults(jsonschema.Draft202012Validator)


def _raise_first_error(instance: Any, schema: dict, prefix: list, fill_defaults: bool = False) -> None:
    """Raise ConfigError for the most relevant schema error; fill_defaults: write the schema's
    defaults into `instance` (in place) while checking it."""
    validator = (_FillingValidator if fill_defaults else jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        # best_match descends into one branch of a oneOf (lr: number or "auto"); name all branches.
        while error.parent is not None and error.parent.validator == "oneOf":
            error = error.parent
        path = prefix + list(error.absolute_path)
        raise ConfigError(_explain(error, _key_path(path)) + _text_on_the_command_line_hint(error, path))


def _text_on_the_command_line_hint(error: jsonschema.ValidationError, path: list) -> str:
    """How to give text that looks like a number, a boolean or null with --config (see
    `typed_overrides`): quoted twice, once for the shell and once for YAML."""
    expected = error.validator_value if error.validator == "type" else None
    wants_text = expected == "string" or (isinstance(expected, list) and "string" in expected)
    by_name = bool(path) and all(isinstance(p, str) for p in path)  # no list index to write
    if not wants_text or isinstance(error.instance, str) or not by_name:
        return ""
    text = yaml.safe_dump(error.instance).removesuffix("...\n").strip()
    inner = f"\\\"'{text}'\\\""  # \"'2024'\" in the shell's double quotes
    for key in reversed(path[1:]):
        inner = f"{{{key}: {inner}}}"
    return (
        f" On the command line --config reads {text} as YAML does (not text); to mean the text, "
        f'quote it inside the quotes: --config "{path[0]}={inner}", or set it in a --configfile.'
    )


def schema_defaults(section: str) -> dict:
    """A top-level section (`lr_finder`, `saliency`, `budget`, ...) as validation fills it when the
    config leaves it out: the schema's default of every key, nested sections included."""
    schema = load_schema()
    filled: dict = {}
    _FillingValidator({**schema["properties"][section], "$defs": schema["$defs"]}).validate(filled)
    return filled


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


# Budget caps on run settings: budget key -> the run setting it caps (from above).
RUN_CAPS = {
    "max_epochs": "epochs",
    "max_train_images": "train_subset",
    "max_test_images": "test_subset",
    "max_image_size": "image_size",
    "max_batch_size": "batch_size",
}
# Budget caps on a ViT's size: budget.vit key -> the `vit:` setting it caps from above.
VIT_CAPS = {"max_dim": "dim", "max_depth": "depth", "max_heads": "heads", "max_mlp_dim": "mlp_dim"}


def _capped(value: int | None, cap: int | None) -> int | None:
    """`value` lowered to `cap`; a null value (a subset: all images) becomes the cap itself."""
    if cap is None:
        return value
    return cap if value is None else min(value, cap)


def apply_budget(settings: dict, budget: dict, entry_settings: dict | None = None) -> dict:
    """One run's settings shrunk by the study's `budget` (the schema's `budget` key), in place.

    In order: the caps (`max_*`: epochs, subsets, image size in px, batch size, and `vit:` size
    caps and `min_patch_size` for ViT runs), then `entry_settings` (the entry's `budget.runs`
    settings, for what the caps cannot express), then warmup: when the budget cut the epochs to
    `warmup_epochs` or fewer (the schedule would never leave its warmup), `warmup_epochs` keeps
    its fraction of training (unless `entry_settings` sets it). Every changed setting's value
    before the budget goes to `settings["budget"]`, so a run says it is smaller than the lab's;
    nothing changed, no `budget` key (the run's settings, hence its params, are the lab's).
    """
    settings["seeds"] = seed_list(settings)
    before = copy.deepcopy(settings)
    if budget["max_seeds"] is not None:
        # not recorded under `budget`: how many times a run trains is no setting of one model
        settings["seeds"] = settings["seeds"][: budget["max_seeds"]]
        before["seeds"] = settings["seeds"]
    for key, setting in RUN_CAPS.items():
        settings[setting] = _capped(settings[setting], budget[key])
    if settings["model"] == "vit" and settings.get("vit"):
        vit = settings["vit"]
        for key, setting in VIT_CAPS.items():
            if setting in vit:
                vit[setting] = _capped(vit[setting], budget["vit"][key])
        smallest = budget["vit"]["min_patch_size"]
        if smallest is not None and "patch_size" in vit and vit["patch_size"] < smallest:
            vit["patch_size"] = smallest
    entry_settings = copy.deepcopy(entry_settings or {})
    settings.update(entry_settings)
    warmup = settings["warmup_epochs"]
    if (
        settings["epochs"] < before["epochs"]
        and warmup >= settings["epochs"]
        and "warmup_epochs" not in entry_settings
    ):
        settings["warmup_epochs"] = warmup * settings["epochs"] / before["epochs"]
    changed = {key: before[key] for key in settings if settings[key] != before.get(key)}
    if changed:
        settings["budget"] = changed
    return settings


def seed_list(settings: dict) -> list[int]:
    """A run's seeds: `seeds: N` is seed, seed+1, ..., seed+N-1; a list is itself."""
    seeds = settings["seeds"]
    return list(seeds) if isinstance(seeds, list) else list(range(settings["seed"], settings["seed"] + seeds))


def apply_study_budget(config: dict) -> None:
    """Cap the LR finder's steps and repeats and the saliency images per class by the budget,
    in place (caps, so applying them twice changes nothing)."""
    budget, finder, saliency = config["budget"], config["lr_finder"], config["saliency"]
    finder["num_iter"] = _capped(finder["num_iter"], budget["lr_finder"]["max_num_iter"])
    finder["repeats"] = _capped(finder["repeats"], budget["lr_finder"]["max_repeats"])
    saliency["images_per_class"] = _capped(
        saliency["images_per_class"], budget["saliency"]["max_images_per_class"]
    )


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
    """All runs of a study checked by `check_schema` (validate_config does it), in config order:
    name -> complete settings.

    Each run is `defaults`, then its entry, then its sweep value, then the study's `budget`
    (`apply_budget`). Global switches are applied here so that each run's settings say exactly
    what it depends on: `pretrained` is set per run (True only for pretrainable models when the
    study allows); `image_size: null` is the dataset's image_size. root: the project root, which
    a user's model file is relative to (cifarlab.models.user).
    """
    defaults = config["defaults"]
    budget = config["budget"]
    datasets = checked_datasets(config)
    schema = load_schema()
    run_schema = {**schema["properties"]["runs"]["additionalProperties"], "$defs": schema["$defs"]}
    unknown = sorted(set(budget["runs"]) - set(config["runs"]))
    if unknown:
        raise ConfigError(
            f"config error at budget.runs: unknown run entr(ies) {unknown}; entries of `runs`: "
            f"{sorted(config['runs'])}."
        )
    for entry, settings in budget["runs"].items():
        dimensions = sorted(set(settings) & {"seed", "seeds", "datasets"})
        if dimensions:
            raise ConfigError(
                f"config error at budget.runs.{entry}: {dimensions} say which models a run trains, not "
                f"how big each is; set them under runs.{entry} (or cap seeds with budget.max_seeds)."
            )
    vit_defaults: dict = {}
    _FillingValidator({**schema["$defs"]["vit"], "$defs": schema["$defs"]}).validate(vit_defaults)
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
            # keys a sweep cannot vary: named at the entry
            settings["datasets"] = _run_datasets(settings, datasets, ["runs", entry])
            if settings["image_size"] is None:
                settings["image_size"] = _dataset_image_size(settings, datasets, ["runs", entry])
            if settings["model"] == "vit":  # the keys a run's `vit:` leaves out: the schema's
                settings["vit"] = {**vit_defaults, **(settings.get("vit") or {})}
            apply_budget(settings, budget, budget["runs"].get(entry))
            budgeted = {k: v for k, v in settings.items() if k != "budget"}
            _raise_first_error(budgeted, run_schema, ["budget", "runs", entry])
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
            f"config error at {_key_path(where + ['datasets'])}: unknown dataset(s) {unknown}; "
            f"the study's datasets: {list(datasets)}."
        )
    return [name for name in datasets if name in chosen]


def _dataset_image_size(settings: dict, datasets: dict[str, dict], where: list) -> int:
    """`image_size: null` is the size the run's datasets are prepared at: one size, for all of them."""
    sizes = {name: datasets[name]["image_size"] for name in settings["datasets"]}
    if len(set(sizes.values())) > 1:
        raise ConfigError(
            f"config error at {_key_path(where + ['image_size'])}: null means the datasets' image_size, "
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
                f"config error at lr_finder.runs: unknown run {name!r}; known runs: {sorted(runs)}."
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
                f"config error at saliency.runs: unknown run {name!r}; known runs: {sorted(runs)}."
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
            value = yaml.load(overrides, Loader=YAML_LOADER)
        except yaml.YAMLError:
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
        value = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        value = text
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
    with open(study_file) as f:
        order = list((yaml.load(f, Loader=YAML_LOADER) or {}).get("runs") or {})
    config["runs"] = {
        **{entry: runs[entry] for entry in order if entry in runs},
        **{entry: spec for entry, spec in runs.items() if entry not in order},
    }


def checked_datasets(config: dict) -> dict[str, dict]:
    """cifarlab.datasets.study_datasets of a schema-checked config, its errors as ConfigError."""
    try:
        return study_datasets(config)
    except DatasetError as error:
        raise ConfigError(str(error)) from None


def check_schema(config: dict) -> None:
    """Check `config` against the schema and write the schema's defaults into it (in place)."""
    _raise_first_error(config, load_schema(), [], fill_defaults=True)


def validate_config(config: dict, root: str | Path = ".") -> dict[str, dict]:
    """Check the whole config and return its expanded runs; raise ConfigError naming the key.

    The one validation of a study: normalises command-line overrides in place first (see
    `normalise_overrides`), then writes the schema's default of every missing setting into
    `config` (so code reads `config["lr_finder"]["suggestion"]`, no fallbacks), then caps the LR
    finder and saliency by the budget (`apply_study_budget`). Applying it twice changes nothing.
    """
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
    apply_study_budget(config)
    runs = expand_runs(config, root)
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
                f"({pretrainable}), not {run['model']!r}; use freeze: none."
            )
    return runs


def settings_hash(settings: Any) -> str:
    """A short stable hash of JSON-able settings (for the report's provenance)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


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
