"""The `budget:` block (each cap, warmup, per-entry settings, the record) and defaults from one place.

The smaller studies (config/quick.yaml, config/demo.yaml, tests/e2e_study.yaml) are the lab's
study shrunk by a budget: a run added to config/config.yaml is in them, at their size.
"""

from __future__ import annotations

import copy
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, planned_jobs

from cifarlab.analysis import lr_finder, saliency
from cifarlab.config.budgets import apply_budget
from cifarlab.config.schema import ConfigError, schema_defaults
from cifarlab.config.validate import in_study_order, validate_config
from cifarlab.study.status import load_config

NO_BUDGET = schema_defaults("budget")


def budget(**caps) -> dict:
    """The schema's budget (no caps) with `caps`; `vit`, `lr_finder`, `saliency` as dicts."""
    out = copy.deepcopy(NO_BUDGET)
    for key, value in caps.items():
        out[key] = {**out[key], **value} if isinstance(out[key], dict) else value
    return out


def lab_run(name: str) -> dict:
    """One run of config/config.yaml as validation expands it (no budget)."""
    return validate_config(yaml.safe_load(open(ROOT / "config" / "config.yaml")))[name]


def study(*overlays: str, config: dict | None = None) -> tuple[dict, dict[str, dict]]:
    """(config, runs) of config/config.yaml (or `config`) with `overlays`, as Snakemake merges them."""
    merged = load_config(list(overlays), [], ROOT)
    if config is not None:
        merged["runs"] = config["runs"]
    return merged, validate_config(merged)


# --- Each cap ------------------------------------------------------------------------------------
def test_no_budget_leaves_the_lab_run_as_it_is():
    run = lab_run("vit_recipe")
    assert "budget" not in run
    assert apply_budget(copy.deepcopy(run), NO_BUDGET) == run
    # The lab's study itself has no budget: its runs (and so its rules' params) are unchanged.
    _, runs = study()
    assert not any("budget" in r for r in runs.values())


def test_epoch_cap_lowers_only_longer_runs_and_records_the_lab_value():
    run = apply_budget(lab_run("simple_cnn-sgd"), budget(max_epochs=4))
    assert run["epochs"] == 4 and run["budget"] == {"epochs": 20}
    short = apply_budget(lab_run("simple_cnn-sgd"), budget(max_epochs=50))
    assert short["epochs"] == 20 and "budget" not in short


@pytest.mark.parametrize(
    "key, setting", [("max_train_images", "train_subset"), ("max_test_images", "test_subset")]
)
def test_subset_caps_turn_all_images_into_the_cap_and_lower_larger_subsets(key, setting):
    run = apply_budget(lab_run("resnet18"), budget(**{key: 1000}))
    assert run[setting] == 1000 and run["budget"] == {setting: None}  # None: all images
    smaller = {**lab_run("resnet18"), setting: 300}
    assert apply_budget(smaller, budget(**{key: 1000}))[setting] == 300
    larger = {**lab_run("resnet18"), setting: 5000}
    assert apply_budget(larger, budget(**{key: 1000}))[setting] == 1000


def test_image_size_and_batch_size_caps():
    run = apply_budget(lab_run("vgg16"), budget(max_image_size=32, max_batch_size=16))
    assert (run["image_size"], run["batch_size"]) == (32, 16)
    assert run["budget"] == {"image_size": 224, "batch_size": 64}
    small = apply_budget(lab_run("simple_cnn-sgd"), budget(max_image_size=64, max_batch_size=64))
    assert (small["image_size"], small["batch_size"]) == (32, 32) and "budget" not in small


def test_vit_caps_and_the_smallest_patch():
    caps = {"min_patch_size": 8, "max_dim": 64, "max_depth": 3, "max_heads": 4, "max_mlp_dim": 128}
    run = apply_budget(lab_run("vit"), budget(vit=caps))
    assert run["vit"] == {
        "patch_size": 8, "dim": 64, "depth": 3, "heads": 4, "mlp_dim": 128, "dropout": 0.1, "emb_dropout": 0.1
    }  # fmt: skip
    assert run["budget"]["vit"]["dim"] == 256 and run["budget"]["vit"]["patch_size"] == 4
    # Only ViT runs have a `vit:` network to shrink; a larger patch stays.
    assert "budget" not in apply_budget(lab_run("simple_cnn-sgd"), budget(vit=caps))
    coarse = lab_run("vit")
    coarse["vit"]["patch_size"] = 16
    assert apply_budget(coarse, budget(vit=caps))["vit"]["patch_size"] == 16


def test_a_vit_run_without_a_vit_block_is_the_labs_vit_and_the_budget_shrinks_it():
    """The ViT's sizes have one default, the schema's (the lab's ViT): a new `model: vit` run
    without a `vit:` block gets it, a partial block keeps the rest, and a budget caps both."""
    config = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    config["runs"] = {"bare": {"model": "vit"}, "wide": {"model": "vit", "vit": {"dim": 128}}}
    config["lr_finder"]["runs"] = []
    runs = validate_config(copy.deepcopy(config))
    assert runs["bare"]["vit"] == lab_run("vit")["vit"]
    assert runs["wide"]["vit"] == {**lab_run("vit")["vit"], "dim": 128}
    config["budget"] = {"vit": {"max_dim": 64, "max_depth": 2, "min_patch_size": 8}}
    small = validate_config(config)["bare"]["vit"]
    assert (small["dim"], small["depth"], small["patch_size"]) == (64, 2, 8)


def test_warmup_keeps_its_fraction_only_when_the_cap_would_leave_no_time_after_it():
    # vit_recipe: 2 warmup epochs of 20. Capped to 1 epoch, warmup is its 10 %: 0.1 epochs.
    run = apply_budget(lab_run("vit_recipe"), budget(max_epochs=1))
    assert run["epochs"] == 1 and run["warmup_epochs"] == pytest.approx(0.1)
    assert run["budget"] == {"epochs": 20, "warmup_epochs": 2}
    # Capped to 3 epochs the 2 warmup epochs still end before the last: they stay.
    assert apply_budget(lab_run("vit_recipe"), budget(max_epochs=3))["warmup_epochs"] == 2


def test_entry_settings_come_after_the_caps_and_are_recorded():
    run = apply_budget(lab_run("airbench"), budget(max_epochs=4, max_batch_size=256), {"epochs": 8})
    assert (run["epochs"], run["batch_size"], run["warmup_epochs"]) == (8, 256, 2.3)
    assert run["budget"] == {"epochs": 10, "batch_size": 1024}
    set_warmup = apply_budget(lab_run("vit_recipe"), budget(max_epochs=1), {"warmup_epochs": 0})
    assert set_warmup["warmup_epochs"] == 0


def test_study_caps_on_the_lr_finder_and_saliency_apply_once():
    config = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    config["budget"] = {
        "lr_finder": {"max_num_iter": 50, "max_repeats": 2},
        "saliency": {"max_images_per_class": 1},
    }
    config["saliency"] = {"images_per_class": 3}
    validate_config(config)
    assert (config["lr_finder"]["num_iter"], config["lr_finder"]["repeats"]) == (50, 2)
    assert config["saliency"]["images_per_class"] == 1
    before = copy.deepcopy(config)
    validate_config(config)  # caps: a second validation changes nothing
    assert config == before


def test_bad_budget_entries_name_the_key():
    config = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    config["budget"] = {"runs": {"vitt": {"epochs": 2}}}
    with pytest.raises(ConfigError, match=r"budget\.runs.*'vitt'.*'vit'"):
        validate_config(config)
    config["budget"] = {"runs": {"vit": {"epochs": 0}}}
    with pytest.raises(ConfigError, match=r"budget\.runs\.vit\.epochs"):
        validate_config(config)
    config["budget"] = {"max_epoch": 2}
    with pytest.raises(ConfigError, match=r"budget.*max_epoch.*max_epochs"):
        validate_config(config)


# --- The smaller studies -------------------------------------------------------------------------
NEW_RUN = {"model": "dropout_cnn", "epochs": 30, "image_size": 224, "batch_size": 512, "dropout": 0.3}


def with_new_run() -> dict:
    config = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    config["runs"]["my_wide_cnn"] = copy.deepcopy(NEW_RUN)
    return config


@pytest.mark.parametrize(
    "overlays, size",
    [
        # the quick study's epochs and images are its time budget's (tests/test_time_budget.py)
        (("config/quick.yaml",), {"epochs": 30, "image_size": 32, "batch_size": 256, "train_subset": None}),
        (("config/demo.yaml",), {"epochs": 8, "image_size": 32, "batch_size": 128, "train_subset": None}),
        (("config/demo.yaml", "tests/e2e_study.yaml"), {"epochs": 1, "image_size": 32, "batch_size": 64}),
    ],
)
def test_a_run_added_to_the_lab_study_is_in_each_smaller_study_at_its_size(overlays, size):
    _, runs = study(*overlays, config=with_new_run())
    run = runs["my_wide_cnn"]
    assert {key: run[key] for key in size} == size
    assert run["budget"].get("epochs", 30) == 30 and run["budget"]["image_size"] == 224
    for name, r in runs.items():  # no schedule is left all warmup
        assert r["warmup_epochs"] == 0 or r["warmup_epochs"] < r["epochs"], name


@pytest.mark.parametrize("overlays", [("config/quick.yaml",), ("config/demo.yaml",)])
def test_the_smaller_studies_keep_their_sizes(overlays):
    # What the overlays set before the budget, run by run (their comments cite measurements);
    # the quick study's epochs and images are then its time budget's (tests/test_time_budget.py).
    config, runs = study(*overlays)
    quick = overlays == ("config/quick.yaml",)
    epochs = {
        "simple_cnn-sgd": 20 if quick else 8,
        "dropout_cnn-dropout0.5": 20 if quick else 5,
        "vit": 20 if quick else 8,
        "simple_cnn_recipe": 10 if quick else 8,
        "vit_recipe": 20 if quick else 8,
        "airbench": 10 if quick else 5,
    }
    assert {name: runs[name]["epochs"] for name in epochs} == epochs
    assert config["time_budget"] == ("15m" if quick else None)
    assert runs["airbench"]["batch_size"] == (256 if quick else 128)
    assert runs["airbench"]["warmup_epochs"] == 2.3 and runs["vit_recipe"]["warmup_epochs"] == 1
    assert runs["vit"]["vit"]["patch_size"] == 8 and runs["vit"]["vit"]["depth"] == (3 if quick else 2)
    assert all(r["image_size"] == 32 for r in runs.values())
    if quick:
        assert (runs["vgg16"]["train_subset"], runs["vgg16"]["test_subset"]) == (1000, 500)
    assert (config["lr_finder"]["num_iter"], config["lr_finder"]["repeats"]) == (
        (100, 3) if quick else (200, 2)
    )


DEMO = ("--configfile", "config/demo.yaml")


def test_a_budgeted_study_keeps_the_lab_studys_run_order():
    # Snakemake merges the --configfile overlays first and config/config.yaml under them: the
    # entries the demo names would come first without in_study_order.
    from snakemake.utils import update_config

    overlays = {}
    for path in ("config/demo.yaml", "tests/e2e_study.yaml"):
        update_config(overlays, yaml.safe_load(open(ROOT / path)))
    config = copy.deepcopy(overlays)
    update_config(config, yaml.safe_load(open(ROOT / "config" / "config.yaml")))
    update_config(config, overlays)
    assert list(config["runs"])[:3] == ["simple_cnn", "dropout_cnn", "vit"]  # as Snakemake has it
    in_study_order(config, ROOT / "config" / "config.yaml")
    _, expected = study("config/demo.yaml", "tests/e2e_study.yaml")
    assert list(validate_config(config)) == list(expected)
    assert list(expected)[5:7] == ["vgg16", "resnet18"]


def test_the_demo_dry_run_plans_a_run_added_to_the_lab_study(tmp_path):
    for part in ("Snakefile", "workflow", "scripts", "config", "environment.yaml"):
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / part)
    config = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    config["runs"]["my_wide_cnn"] = copy.deepcopy(NEW_RUN)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "report", *DEMO],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    planned = {(job["rule"], tuple(job["wildcards"].items())) for job in planned_jobs(out)}
    for rule in ("train", "evaluate"):
        assert (rule, (("dataset", "synthetic"), ("run", "my_wide_cnn"), ("seed", "0"))) in planned, rule
    # The plan's estimate prices the run at the demo's size: 8 epochs of 3,000 images at 32 px.
    _, runs = study("config/demo.yaml", config=config)
    assert (runs["my_wide_cnn"]["epochs"], runs["my_wide_cnn"]["image_size"]) == (8, 32)
    assert "results/synthetic/runs/my_wide_cnn/seed0/metrics.json" in out


# --- Defaults in one place -----------------------------------------------------------------------
def test_a_config_without_step_sections_gets_the_schemas_defaults():
    config = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    for section in ("lr_finder", "saliency", "report", "budget"):
        config.pop(section, None)
    validate_config(config)
    for section in ("lr_finder", "saliency", "report", "budget"):
        assert config[section] == schema_defaults(section), section
    assert config["lr_finder"]["suggestion"] == "minimum_div_10" and config["lr_finder"]["start_lr"] == 1e-5
    assert config["datasets"][0]["labels"] == "fine" and config["datasets"][0]["image_size"] == 32
    # Defaults are copies: filling one config does not share its lists with another.
    other = yaml.safe_load(open(ROOT / "config" / "config.yaml"))
    del other["lr_finder"]
    validate_config(other)
    other["lr_finder"]["runs"].append("vit")
    assert config["lr_finder"]["runs"] == []


def test_the_steps_take_their_defaults_from_the_schema():
    finder = {k: v for k, v in schema_defaults("lr_finder").items() if k != "runs"}
    assert lr_finder.finder_settings({}) == finder
    signature = inspect.signature(lr_finder.lr_range_test).parameters
    for key in ("start_lr", "end_lr", "num_iter", "smoothing", "diverge_factor"):
        assert signature[key].default == finder[key], key
    shown = {k: v for k, v in schema_defaults("saliency").items() if k != "runs"}
    assert saliency.resolve_settings({}) == shown


def test_the_rules_read_the_validated_config_without_fallbacks():
    fallbacks = []
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")) + [ROOT / "Snakefile"]:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            for match in re.finditer(r"(?:config|REPORT)(?:\[[^\]]+\])*\.get\([^)]*\)", line):
                fallbacks.append(f"{path.name}:{number}: {match.group(0)}")
    assert not fallbacks, "defaults live in the schema or config/config.yaml: " + "; ".join(fallbacks)
