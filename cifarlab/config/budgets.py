"""A study's `budget`: caps on each run's epochs, images and model size, applied while the config
is validated; each value it changes is kept, as it was before, under the run's `budget`
(docs/budgets.md).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

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


def seed_list(settings: dict) -> list[int]:
    """A run's seeds: `seeds: N` is seed, seed+1, ..., seed+N-1; a list is itself."""
    seeds = settings["seeds"]
    return list(seeds) if isinstance(seeds, list) else list(range(settings["seed"], settings["seed"] + seeds))


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
    # What it changes it replaces, never edits (a ViT's sizes are a new dict): the values before
    # stay as they were, and a shallow copy of a run (the time planner's, per trial) is safe.
    before = dict(settings)
    if budget["max_seeds"] is not None:
        # not recorded under `budget`: how many times a run trains is no setting of one model
        settings["seeds"] = settings["seeds"][: budget["max_seeds"]]
        before["seeds"] = settings["seeds"]
    for key, setting in RUN_CAPS.items():
        settings[setting] = _capped(settings[setting], budget[key])
    if settings["model"] == "vit" and settings.get("vit"):
        vit = settings["vit"] = dict(settings["vit"])
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


def apply_study_budget(config: dict, budget: dict | None = None) -> None:
    """Cap the LR finder's steps and repeats and the saliency images per class by the budget
    (`budget`: another one, a time plan's caps), in place (caps, so applying them twice changes
    nothing)."""
    budget = config["budget"] if budget is None else budget
    finder, saliency = config["lr_finder"], config["saliency"]
    finder["num_iter"] = _capped(finder["num_iter"], budget["lr_finder"]["max_num_iter"])
    finder["repeats"] = _capped(finder["repeats"], budget["lr_finder"]["max_repeats"])
    saliency["images_per_class"] = _capped(
        saliency["images_per_class"], budget["saliency"]["max_images_per_class"]
    )


# `time_budget` units: suffix -> seconds (a plain number is seconds).
TIME_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
TIME_FORMS = "seconds (90 or 90s), minutes (20m), hours (1h, 1.5h)"


def parse_time_budget(value: object) -> float | None:
    """The seconds of a `time_budget` setting: 90, "90s", "20m", "1h", "1.5h" (None: no budget).

    Raises ValueError naming the accepted forms for anything else (zero and negatives too).
    """
    if value is None:
        return None
    seconds = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        number, unit = text.rstrip("abcdefghijklmnopqrstuvwxyz"), text.lstrip("0123456789.")
        try:
            seconds = float(number) * TIME_UNITS[unit.strip() or "s"]
        except (KeyError, ValueError):
            seconds = None
    if seconds is None or not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"time_budget must be a positive time: {TIME_FORMS}; got {value!r}")
    return seconds


def apply_time_caps(settings: dict, caps: dict, limit: str, swept: Iterable[str] = ()) -> dict:
    """Shrink one run's budgeted settings (after `apply_budget`) by a time plan's `caps` (a
    `budget` mapping: cifarlab.study.time_plan) for the `time_budget` `limit` (as written), in
    place; return what they cut: setting -> its value before (seeds: how many there were).

    The caps apply after the study's own `budget` and its `budget.runs` lines, so a time plan
    never raises a value: the run's own settings, capped by `budget:`, are its upper bounds.
    The values before the study's budget stay in `settings["budget"]`; what the time plan cut is
    added there too (first value wins: `budget` keeps the lab's value): the same caps make the
    same settings, whatever budget chose them. The plan's record, {"limit", "cut", "seeds": how
    many are left} (the report's "cut by time_budget" note), goes to `settings["time_budget"]`,
    an evaluation key (cifarlab.study.plan.EVALUATION_KEYS): in the evaluate step's params and
    metrics.json, never in training's, so that another limit with the same caps, or fewer
    seeds, retrains nothing. swept: the settings the run's sweep varies (its entry's `sweep`
    keys): not capped in it, so that a sweep's runs stay different runs (the others are).
    """
    # a new top level only where a swept setting lifts its cap (apply_budget only reads caps)
    lifted = {key: None for key, setting in RUN_CAPS.items() if setting in swept}
    caps = {**caps, **lifted} if lifted else caps
    recorded = settings.pop("budget", None) or {}
    settings.pop("time_budget", None)
    seeds_before = list(settings["seeds"])
    apply_budget(settings, caps)
    cut = settings.pop("budget", {})
    if settings["seeds"] != seeds_before:
        cut["seeds"] = len(seeds_before)
    merged = {**{k: v for k, v in cut.items() if k != "seeds"}, **recorded}
    if merged:
        settings["budget"] = merged
    if cut:
        settings["time_budget"] = {"limit": limit, "cut": cut, "seeds": len(settings["seeds"])}
    return cut
