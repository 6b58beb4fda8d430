"""The config schema, its error messages, sweep expansion and the planned DAG."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, lab_run, planned_counts

from cifarlab.config.schema import ConfigError
from cifarlab.config.validate import lr_finder_runs, validate_config


@pytest.fixture()
def config() -> dict:
    with open(ROOT / "config" / "config.yaml") as f:
        return yaml.safe_load(f)


def test_lab_study_expands_into_the_lab_runs(config):
    runs = validate_config(config)
    assert [n for n in runs if n.startswith("dropout_cnn")] == [
        "dropout_cnn-dropout0",
        "dropout_cnn-dropout0.1",
        "dropout_cnn-dropout0.2",
        "dropout_cnn-dropout0.3",
        "dropout_cnn-dropout0.5",
        "dropout_cnn-dropout0.9",
    ]
    assert [runs[n]["optimizer"] for n in ("simple_cnn-sgd", "simple_cnn-adam", "simple_cnn-yogi")] == [
        "sgd",
        "adam",
        "yogi",
    ]
    # defaults fill what a run leaves out; the run's own values win over defaults
    assert runs["dropout_cnn-dropout0.5"]["dropout"] == 0.5
    assert runs["simple_cnn-sgd"]["lr"] == 0.001
    assert runs["vit"]["vit"]["depth"] == 6
    assert runs["vgg16"]["pretrained"] is True and runs["simple_cnn-sgd"]["pretrained"] is False
    # `lr: auto` runs get a finder sweep even when not listed
    assert "simple_cnn_recipe" in lr_finder_runs(config, runs)


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as excinfo:
        validate_config(config)
    return str(excinfo.value)


def test_unknown_model_names_key_and_allowed_values(config):
    config["runs"]["vit"]["model"] = "vit_huge"
    message = _error(config)
    assert "runs.vit.model" in message and "'vit_huge'" in message
    for allowed in ("simple_cnn", "dropout_cnn", "vgg16", "resnet18", "vit"):
        assert allowed in message


def test_misspelt_key_names_it_and_lists_allowed_keys(config):
    config["runs"]["vgg16"]["learning_rate"] = 0.1
    message = _error(config)
    assert "runs.vgg16" in message and "learning_rate" in message and "'lr'" in message


def test_unknown_precision_names_the_key_and_the_choices(config):
    config["precision"] = "fp16"
    message = _error(config)
    assert "precision" in message and "'fp16'" in message and "'bf16'" in message and "'auto'" in message


def test_the_fast_recipe_settings_are_checked(config):
    config["runs"]["airbench"]["tta"] = "ten_crop"
    assert "runs.airbench.tta" in _error(config) and "flip_translate" in _error(config)
    config["runs"]["airbench"]["tta"] = "flip"
    config["runs"]["airbench"]["param_groups"] = {"norms": {"lr_scale": 64}}
    assert "norms" in _error(config) and "'norm'" in _error(config)
    config["runs"]["airbench"]["param_groups"] = {"norm": {"lr_scale": 64}}
    config["runs"]["airbench"]["lookahead"] = {"every": 5, "decay": 1.5, "power": 3}
    assert "runs.airbench.lookahead" in _error(config)


def test_misspelt_top_level_key(config):
    config["lr_findr"] = {}
    message = _error(config)
    assert "lr_findr" in message and "'lr_finder'" in message


def test_negative_lr(config):
    config["runs"]["vgg16"]["lr"] = -0.1
    message = _error(config)
    assert "runs.vgg16.lr" in message and "-0.1" in message and "auto" in message


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_outside_unit_interval(config, p):
    config["runs"]["dropout_cnn"]["dropout"] = p
    config["runs"]["dropout_cnn"].pop("sweep")
    message = _error(config)
    assert "runs.dropout_cnn.dropout" in message and "[0, 1)" in message


def test_bad_value_inside_a_sweep_is_named(config):
    config["runs"]["dropout_cnn"]["sweep"]["dropout"] = [0.1, 1.0]
    message = _error(config)
    assert "runs.dropout_cnn.sweep.dropout" in message and "[0, 1)" in message


def test_unknown_optimizer_in_a_sweep(config):
    config["runs"]["simple_cnn"]["sweep"]["optimizer"] = ["sgd", "lion"]
    message = _error(config)
    assert "optimizer" in message and "'lion'" in message and "yogi" in message


def test_unknown_run_in_lr_finder_list(config):
    config["lr_finder"]["runs"] = ["simple_cnn-rmsprop"]
    message = _error(config)
    assert "lr_finder.runs" in message and "simple_cnn-sgd" in message


def test_freeze_head_needs_a_pretrainable_backbone(config):
    config["runs"]["vit"]["freeze"] = "head"
    assert "freeze" in _error(config)


def test_pretrained_override_from_command_line_string(config):
    config["pretrained"] = "false"  # what `--config pretrained=false` passes
    runs = validate_config(config)
    assert runs["vgg16"]["pretrained"] is False and runs["resnet18"]["pretrained"] is False


def test_run_settings_are_independent_copies(config):
    runs = validate_config(copy.deepcopy(config))
    runs["vit"]["vit"]["depth"] = 99
    assert validate_config(config)["vit_recipe"]["vit"]["depth"] == 6


def _snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_run_plans_the_whole_study():
    result = _snakemake("-n", "--cores", "4", "report", "--quiet", "rules")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = planned_counts(result.stdout)
    runs = validate_config(yaml.safe_load(open(ROOT / "config" / "config.yaml")))
    assert counts["download"] == 1 and counts["prepare"] == 1
    # each of the 15 runs with each of its 3 seeds (config.yaml's defaults.seeds)
    assert counts["train"] == counts["evaluate"] == 3 * len(runs) == 45
    assert counts["lr_find"] == 4  # three optimizers + the `lr: auto` recipe (first seed)
    assert counts["saliency"] == len(runs)  # the first seed's model of each run
    # frozen ImageNet VGG16 and ResNet18 backbones: their features are one for all seeds
    assert counts["features"] == 2
    assert counts["report"] == 1


def test_schema_error_stops_snakemake_before_any_job():
    result = _snakemake("-n", "report", "--config", "device=tpu")
    assert result.returncode != 0
    assert "config error at device" in result.stderr + result.stdout
    assert "'cuda'" in result.stderr + result.stdout


def test_lr_written_as_1e_minus_3_gets_the_yaml_fix(config):
    """YAML 1.1 reads `1e-3` (no dot) as a string; the message must say how to write the number."""
    config["runs"]["simple_cnn"]["lr"] = yaml.safe_load("lr: 1e-3")["lr"]
    assert config["runs"]["simple_cnn"]["lr"] == "1e-3"
    message = _error(config)
    assert "lr" in message and "'1e-3'" in message and "1.0e-3" in message
    # PyYAML's float needs the dot and a signed exponent: 1.0e5 would be text again
    config["runs"]["simple_cnn"]["lr"] = yaml.safe_load("lr: 1e5")["lr"]
    message = _error(config)
    assert "1.0e+5" in message and yaml.safe_load("lr: 1.0e+5")["lr"] == 1e5


@pytest.mark.parametrize(("model", "size"), [("simple_cnn", 15), ("dropout_cnn", 3), ("vgg16", 16)])
def test_image_size_below_a_models_minimum_is_refused_before_any_job(config, model, size):
    entry = next(name for name, spec in config["runs"].items() if spec.get("model") == model)
    config["runs"][entry]["image_size"] = size
    message = _error(config)
    assert f"runs.{entry}.image_size" in message and model in message and str(size) in message


def test_image_size_minimums_agree_with_the_models():
    """The table checked before any job is the models' own limit: one below fails, at it builds."""
    from cifarlab.models import BUILTIN, build_model

    for model, size in {
        name: spec.min_image_size for name, spec in BUILTIN.items() if spec.min_image_size > 1
    }.items():
        run = lab_run(model=model, image_size=size, freeze="none")
        torch_model = build_model(run, 10)
        import torch

        assert torch_model.eval()(torch.zeros(1, 3, size, size)).shape == (1, 10)
        with pytest.raises((ValueError, RuntimeError)):
            build_model({**run, "image_size": size - 1}, 10).eval()(torch.zeros(1, 3, size - 1, size - 1))


# --- Overrides from the command line ----------------------------------------------------------
# Each form README.md and docs/ show, read as Snakemake reads `--config` (its own parse_config),
# then typed as the Snakefile types it (common.smk: apply_command_line_overrides).

COMMAND_LINE_FORMS = [
    # (the --config argument, what the config holds after it)
    ("runs={simple_cnn: {epochs: 1}}", {"runs": {"simple_cnn": {"epochs": 1}}}),
    ("runs={vit: {epochs: 5}}", {"runs": {"vit": {"epochs": 5}}}),  # docs/progress.md, status
    (
        "report={compare_to: ../other/results/report/metrics.csv}",
        {"report": {"compare_to": "../other/results/report/metrics.csv"}},
    ),
    ("pretrained=false", {"pretrained": False}),
    ("data_source=../data/cifar10.zip", {"data_source": "../data/cifar10.zip"}),
    ("device=cuda", {"device": "cuda"}),
    # numbers, booleans and null inside a mapping; 1e-3 stays text (YAML 1.1), as in a file
    (
        "runs={x: {lr: 0.5, dropout: 0, pretrained: true, test_subset: null, wd: 1e-3}}",
        {"runs": {"x": {"lr": 0.5, "dropout": 0, "pretrained": True, "test_subset": None, "wd": "1e-3"}}},
    ),
    ("runs={x: {name: \"'1'\"}}", {"runs": {"x": {"name": "1"}}}),  # text that looks like a number
]


@pytest.mark.parametrize(("argument", "expected"), COMMAND_LINE_FORMS)
def test_command_line_overrides_are_typed_as_yaml_types_them(argument, expected):
    from snakemake.cli import parse_config

    from cifarlab.config.validate import apply_command_line_overrides, command_line_value

    given = parse_config([argument])  # what the Snakefile's `workflow.config_settings.config` holds
    config = copy.deepcopy(given)
    apply_command_line_overrides(config, given)
    assert config == expected
    key, _, value = argument.partition("=")
    assert {key: command_line_value(value)} == expected  # `python -m cifarlab status --config`


def test_a_nested_override_reaches_the_runs_typed():
    """The issue's form: refused before with "'1' is not of type 'integer'"."""
    result = _snakemake(
        "-n", "--cores", "1", "report", "--quiet", "rules", "--config", "runs={simple_cnn: {epochs: 1}}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not of type" not in result.stdout + result.stderr


def test_text_that_reads_as_a_number_says_how_to_quote_it(config):
    config["report"] = {"compare_to": 2024}  # `--config 'report={compare_to: 2024}'`
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    message = str(error.value)
    assert "config error at report.compare_to" in message
    assert """--config "report={compare_to: \\"'2024'\\"}\"""" in message
    # and that way of writing it gives the text
    from snakemake.cli import parse_config

    from cifarlab.config.validate import apply_command_line_overrides

    given = parse_config(["report={compare_to: \"'2024'\"}"])
    apply_command_line_overrides(given, given)
    assert given == {"report": {"compare_to": "2024"}}
