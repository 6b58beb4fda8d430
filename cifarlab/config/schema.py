"""The config's JSON schema (config.schema.yaml beside this file, package data): reading it,
checking a config against it with defaults filled in, and errors that name the key, the value and
what is allowed (values cut to a readable length: cifarlab.core.messages). Imports only cifarlab.core:
steps read their sections' defaults here.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cifarlab.core.messages import cut, shown, shown_names
from cifarlab.core.yamlfiles import load_yaml

# package data (pyproject.toml): an installed copy validates a config as a checkout does
SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key, the value and what is allowed."""


@functools.lru_cache(maxsize=1)
def _parsed_schema() -> dict:
    return load_yaml(SCHEMA_PATH)


def load_schema() -> dict:
    """The config schema (cifarlab/config/config.schema.yaml), parsed once per process; a copy."""
    return copy.deepcopy(_parsed_schema())


def key_path(path: Any) -> str:
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
            f"config error at {where}: unknown key(s) {shown_names(unknown)}. "
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
            f"config error at {where}: got {shown(error.instance)}; allowed: {', or '.join(options)}."
            + _number_as_string_hint(error.instance)
        )
    if error.validator == "enum":
        return (
            f"config error at {where}: got {shown(error.instance)}; allowed values: {error.validator_value}."
        )
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        lo_b = "[" if "minimum" in schema else "("
        hi_b = "]" if "maximum" in schema else ")"
        rng = f"{lo_b}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{hi_b}"
        return f"config error at {where}: got {shown(error.instance)}; allowed range: {rng}."
    if error.validator == "required":
        return f"config error at {where}: {cut(error.message)}."
    return f"config error at {where}: {cut(error.message)}."


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


FillingValidator = _filling_defaults(jsonschema.Draft202012Validator)


def raise_first_error(instance: Any, schema: dict, prefix: list, fill_defaults: bool = False) -> None:
    """Raise ConfigError for the most relevant schema error; fill_defaults: write the schema's
    defaults into `instance` (in place) while checking it."""
    validator = (FillingValidator if fill_defaults else jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        # best_match descends into one branch of a oneOf (lr: number or "auto"); name all branches.
        while error.parent is not None and error.parent.validator == "oneOf":
            error = error.parent
        path = prefix + list(error.absolute_path)
        raise ConfigError(_explain(error, key_path(path)) + _text_on_the_command_line_hint(error, path))


def _text_on_the_command_line_hint(error: jsonschema.ValidationError, path: list) -> str:
    """How to give text that looks like a number, a boolean or null with --config (see
    `typed_overrides`): quoted twice, once for the shell and once for YAML."""
    expected = error.validator_value if error.validator == "type" else None
    wants_text = expected == "string" or (isinstance(expected, list) and "string" in expected)
    by_name = bool(path) and all(isinstance(p, str) for p in path)  # no list index to write
    scalar = isinstance(error.instance, bool | int | float | type(None))  # a list or mapping: no hint
    if not wants_text or not scalar or not by_name:
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
    FillingValidator({**schema["properties"][section], "$defs": schema["$defs"]}).validate(filled)
    return filled


def check_schema(config: dict) -> None:
    """Check `config` against the schema and write the schema's defaults into it (in place)."""
    raise_first_error(config, load_schema(), [], fill_defaults=True)
