"""RunSettings: a run's settings built once, failing on a key it does not know or lacks."""

import dataclasses

import pytest
from conftest import lab_run

from cifarlab.config.schema import load_schema
from cifarlab.training.settings import RunSettings


def test_a_complete_run_becomes_its_settings():
    settings = RunSettings.from_dict(lab_run(epochs=3, batch_size=64, seed=7))
    assert (settings.epochs, settings.batch_size, settings.seed, settings.name) == (3, 64, 7, "test_run")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 4  # built once: nothing changes a run's settings on the way


def test_the_run_the_train_rule_gives_without_evaluations_keys_is_complete():
    run = {k: v for k, v in lab_run().items() if k != "tta"}  # common.smk: EVALUATION_KEYS
    assert RunSettings.from_dict(run).tta is None


def test_unknown_and_missing_keys_are_named():
    run = lab_run(epochz=3)
    del run["batch_size"]
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['epochz'\]") as raised:
        RunSettings.from_dict(run)
    assert "missing setting(s) ['batch_size']" in str(raised.value)


def test_every_setting_of_the_schema_is_a_field():
    """A run setting added to config.schema.yaml must be added here too (else from_dict refuses it)."""
    schema_keys = set(load_schema()["$defs"]["run_settings"])
    assert schema_keys <= {f.name for f in dataclasses.fields(RunSettings)}
