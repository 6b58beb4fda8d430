"""A run's settings as one typed, frozen object (nanoGPT's GPTConfig is the model).

`RunSettings.from_dict(run)` is built once from the run dict that config validation makes
(`cifarlab.config.validate.expand_runs`, then `job_settings`) and fails at once, naming the keys,
on a key it does not know or a required key that is missing: a misspelt setting never reaches
the loop as a silent default. The run dict itself is still what the step writes into its
records (`model.pt`'s `run`, `metrics.json`'s `settings`) and what the checkpoint fingerprint
hashes, so those files are the same as before the object existed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunSettings:
    """One job's settings; units as in config/config.schema.yaml (`run_settings`)."""

    # --- identity
    name: str
    model: str
    seed: int
    # --- optimisation
    epochs: int
    batch_size: int
    optimizer: str  # sgd, adam, adamw, ...
    lr: float | str  # a number, or "auto" (the LR finder's)
    momentum: float
    nesterov: bool
    eps: float
    weight_decay: float
    schedule: str
    warmup_epochs: float  # epochs of linear warm-up
    lr_start_factor: float
    lr_end_factor: float
    decoupled: bool
    param_groups: dict | None
    lookahead: dict | None
    label_smoothing: float
    # --- data
    augment: str
    translate: int  # pixels
    train_subset: int | None  # images; None: all
    validation: int | float | None  # held-out images (or fraction); None/0: no validation split
    test_subset: int | None
    image_size: int  # px
    # --- the model
    dropout: float
    freeze: Any
    pretrained: bool
    # --- optional: a run that leaves them out has these defaults
    # test-time augmentation: evaluation's alone; train and lr_find get the run without it
    # (workflow/rules/common.smk, EVALUATION_KEYS), so that changing it retrains nothing
    tta: Any = None
    model_args: dict | None = None
    vit: dict | None = None
    airbench: dict | None = None
    dataset: str | None = None
    entry: str | None = None  # the config entry the run was expanded from
    sweep: dict | None = None  # the sweep values that made this run
    seeds: Any = None  # the run's seeds (a job's settings hold its one `seed`)
    datasets: Any = None
    budget: dict | None = None  # what a study's budget changed (cifarlab.config.budgets)

    @classmethod
    def from_dict(cls, run: dict[str, Any]) -> RunSettings:
        """The settings of `run`; ValueError naming every unknown and every missing key."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
        unknown = sorted(set(run) - set(fields))
        missing = sorted(required - set(run))
        if unknown or missing:
            name = run.get("name", "?")
            raise ValueError(
                f"run {name!r}: "
                + "; ".join(
                    part
                    for part in (
                        f"unknown setting(s) {unknown}" if unknown else "",
                        f"missing setting(s) {missing}" if missing else "",
                    )
                    if part
                )
                + f" (known: {sorted(fields)})"
            )
        return cls(**run)
